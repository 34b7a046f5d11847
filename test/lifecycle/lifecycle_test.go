package lifecycle

import (
	"context"
	"fmt"
	"maps"
	"os/exec"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/internal/rig/cluster"
	"github.com/tagger-project/tagger/pkg/pins"
)

// TestInstalledLifecycle installs the chart once on three nodes and takes
// the installed system through the scenarios in order; each step
// leaves the state the next one builds on.
func TestInstalledLifecycle(t *testing.T) {
	rig.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	s := newSuite(t)
	s.buildTaggerImage("v1")
	s.pushRegistryImage()
	s.phase("cluster and images ready")
	s.install(ctx, "v1")
	s.checkPolicyTypes(ctx)
	s.phase("helm install: every part Ready; the startup taint policy type-checks")

	app := s.up.Host() + "/team/app:v1"
	gens := s.pinnedOnEveryNode(ctx, app)
	s.phase("a: every node runs generation 1 while the upstream has moved on")
	took := s.rollbackEveryNode(ctx, gens)
	s.phase("b: rollback with restart: last pod Ready on the previous generation %v after the patch", took)
	s.cachedWithUpstreamDown(ctx)
	s.phase("c: a node that never had the image pulled it from the bundled registry, upstream down")
	s.newNodeGated(ctx, app, gens[0])
	s.phase("e: a new node took no pod before its agent removed the startup taint; its pod runs the pin")
	strict := s.pinStrict(ctx)
	counts := s.upgradeUnderPulls(ctx, []pinnedPull{{app, gens[0]}, strict}, "v2")
	s.phase("d: helm upgrade under CRI pulls on every node: %d pinned, %d unpinned, %d failed",
		counts.pinned.Load(), counts.unpinned.Load(), counts.failed.Load())
	s.agentKilledThenContainerdRestarted(ctx, app, gens[0])
	s.phase("f: agent SIGKILLed and containerd restarted on one node: pins hold, agent back")
	leader, registry := s.nodeLost(ctx, app, gens[0])
	s.phase("g: nodes lost: the bundled registry Ready elsewhere %v after its node was declared out of service; the leader's Lease taken over %v after its node stopped", registry, leader)
	s.uninstall(ctx)
	s.phase("h: helm uninstall: every node's certs.d restored byte for byte")
}

// pinnedOnEveryNode (scenario a) pins generation 1 of app while the
// upstream has moved to generation 2 and runs a pod of app on every node:
// each runs generation 1. It returns both digests.
func (s *suite) pinnedOnEveryNode(ctx context.Context, app string) [2]string {
	t := s.t
	// The upstream's move reaches the controller by a webhook, through the
	// chart's webhook Service.
	gens := s.pinFirstOfTwo(ctx, s.up, &v1alpha1.Tag{
		ObjectMeta: metav1.ObjectMeta{Name: "app"},
		Spec:       v1alpha1.TagSpec{Image: app, Rollout: &v1alpha1.RolloutSpec{Restart: true}},
	}, func() { s.postWebhook(ctx, app) })
	n := int32(len(s.cl.Nodes()))
	d := cluster.SpreadDeployment("app", n, corev1.Container{Name: "app", Image: app, ImagePullPolicy: corev1.PullIfNotPresent})
	// Every pod goes before its replacement starts: one per node, always.
	d.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType}
	if _, err := s.cl.Client().AppsV1().Deployments("default").Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	s.waitPodsOn(ctx, "app", gens[0], int(n))
	return gens
}

// pinStrict pins generation 1 of a Tag in the strict registry while its
// upstream has moved to generation 2.
func (s *suite) pinStrict(ctx context.Context) pinnedPull {
	image := s.strict.Host() + "/team/strict:v1"
	gens := s.pinFirstOfTwo(ctx, s.strict, &v1alpha1.Tag{ObjectMeta: metav1.ObjectMeta{Name: "strict"}, Spec: v1alpha1.TagSpec{Image: image}},
		func() { rig.AnnotateCheck(s.t, s.c, "strict", "moved") })
	return pinnedPull{image, gens[0]}
}

// pinFirstOfTwo creates tag, whose image is in reg, with a first image
// pushed; pushes a second under the same tag, tells the controller with
// moved, waits for the Tag to serve it, then pins generation 1 and waits
// until every node's agent has the Tag. It returns both digests.
func (s *suite) pinFirstOfTwo(ctx context.Context, reg *rig.Registry, tag *v1alpha1.Tag, moved func()) [2]string {
	t := s.t
	ref, err := pins.ParseReference(tag.Spec.Image)
	if err != nil {
		t.Fatal(err)
	}
	push := func(gen int) string {
		return cluster.PushRunnableImage(t, reg, ref.Repository, ref.Tag, fmt.Sprintf("%s-generation-%d", tag.Name, gen))
	}
	gen1 := push(1)
	if err := s.c.Create(ctx, tag); err != nil {
		t.Fatal(err)
	}
	rig.WaitTag(t, s.c, tag.Name, "generation 1 served", rig.ServedIs(1, gen1))
	gen2 := push(2)
	moved()
	rig.WaitTag(t, s.c, tag.Name, "generation 2 served", rig.ServedIs(2, gen2))
	rig.PatchTag(t, s.c, tag.Name, `{"spec":{"generation":1}}`)
	rig.WaitTag(t, s.c, tag.Name, "generation 1 served again", rig.ServedIs(1, gen1))
	s.waitAgentsServe(tag.Name)
	return [2]string{gen1, gen2}
}

// waitAgentsServe waits until every node's agent has written hosts.toml for
// the Tag's registry (it writes once its pin table has the Tag).
func (s *suite) waitAgentsServe(tag string) {
	host := strings.SplitN(rig.GetTag(s.t, s.c, tag).Spec.Image, "/", 2)[0]
	for _, n := range s.cl.Nodes() {
		before := s.before[n.Name()][host+"/hosts.toml"]
		rig.WaitFor(s.t, time.Minute, "the agent on "+n.Name()+" wrote hosts.toml for "+host, func() (bool, string) {
			now := rig.SnapshotDir(s.t, n.HostsDir())[host+"/hosts.toml"]
			return now != before && strings.Contains(now, "127.0.0.1"), now
		})
	}
}

// rollbackEveryNode (scenario b): the Tag follows the newest generation
// (2), its restart rolls every pod onto it; `kubectl tag rollback` pins the
// previous one and the restart rolls every pod back. It returns the wall
// time from the rollback to the last pod Ready on generation 1.
func (s *suite) rollbackEveryNode(ctx context.Context, gens [2]string) time.Duration {
	t := s.t
	n := len(s.cl.Nodes())
	s.kubectlTag(ctx, "unpin", "app")
	rig.WaitTag(t, s.c, "app", "generation 2 served", rig.ServedIs(2, gens[1]))
	s.waitPodsOn(ctx, "app", gens[1], n)
	began := time.Now()
	s.kubectlTag(ctx, "rollback", "app")
	last := s.waitPodsOn(ctx, "app", gens[0], n)
	// The kubelet's condition times have a resolution of a second.
	return last.Sub(began.Truncate(time.Second)).Round(time.Second)
}

// kubectlTag runs the kubectl plugin, built as released, against the cluster.
func (s *suite) kubectlTag(ctx context.Context, args ...string) string {
	bin := rig.Command(s.t, rig.Static, "kubectl-tag")
	cmd := exec.CommandContext(ctx, bin, append([]string{"--kubeconfig", s.cl.KubeconfigPath()}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		s.t.Fatalf("kubectl tag %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// cachedWithUpstreamDown (scenario c): a cached Tag; the upstream stops; a
// pod on a node that never had the image starts, its layers from the
// bundled registry Pod, which the agent reaches by its Service DNS name.
func (s *suite) cachedWithUpstreamDown(ctx context.Context) {
	t := s.t
	image := s.up.Host() + "/team/cached:v1"
	d := cluster.PushRunnableImage(t, s.up, "team/cached", "v1", "cached-generation-1")
	if err := s.c.Create(ctx, &v1alpha1.Tag{
		ObjectMeta: metav1.ObjectMeta{Name: "cached"},
		Spec:       v1alpha1.TagSpec{Image: image, Cache: true},
	}); err != nil {
		t.Fatal(err)
	}
	rig.WaitTag(t, s.c, "cached", "generation 1 served and cached", func(tag *v1alpha1.Tag) (bool, string) {
		return tag.Status.ServedDigest == d && tag.Status.CachedServed,
			fmt.Sprintf("serves %s, cached %v", tag.Status.ServedDigest, tag.Status.CachedServed)
	})
	s.up.Stop()
	defer func() {
		if err := s.up.Start(); err != nil {
			t.Fatalf("restart the upstream: %v", err)
		}
	}()
	node := s.cl.Nodes()[len(s.cl.Nodes())-1].Name()
	pods := s.cl.Client().CoreV1().Pods("default")
	if _, err := pods.Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "cached"},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			TerminationGracePeriodSeconds: new(int64),
			Containers:                    []corev1.Container{{Name: "app", Image: image}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rig.WaitFor(t, 2*time.Minute, "pod cached Running on "+node+" with the upstream down", func() (bool, string) {
		p, err := pods.Get(ctx, "cached", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		id := ""
		if len(p.Status.ContainerStatuses) > 0 {
			id = p.Status.ContainerStatuses[0].ImageID
		}
		return p.Status.Phase == corev1.PodRunning && strings.HasSuffix(id, d), fmt.Sprintf("%s %s", p.Status.Phase, id)
	})
	if err := pods.Delete(ctx, "cached", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

// agentKilledThenContainerdRestarted (scenario f): on one node the agent is
// SIGKILLed, then containerd restarts. The kubelet restarts the agent's
// container (not its pod); afterwards a fresh CRI pull of the pinned tag on
// that node gets the pinned digest while the upstream serves another.
func (s *suite) agentKilledThenContainerdRestarted(ctx context.Context, image, pinned string) {
	t := s.t
	rig.PatchTag(t, s.c, "app", `{"spec":{"generation":1}}`)
	rig.WaitTag(t, s.c, "app", "generation 1 served", rig.ServedIs(1, pinned))
	n := s.cl.Nodes()[0]
	pod := s.agentPod(ctx, n.Name())
	restarts := pod.Status.ContainerStatuses[0].RestartCount
	if pids := n.Kill("node-agent"); len(pids) == 0 {
		t.Fatalf("no node-agent process on %s", n.Name())
	}
	n.RestartContainerd()
	rig.WaitFor(t, 2*time.Minute, "the agent on "+n.Name()+" restarted in the same pod and Ready", func() (bool, string) {
		p := s.agentPod(ctx, n.Name())
		cs := p.Status.ContainerStatuses[0]
		return p.UID == pod.UID && cs.RestartCount > restarts && cs.Ready,
			fmt.Sprintf("pod %s restarts %d ready %v", p.UID, cs.RestartCount, cs.Ready)
	})
	got, err := pullAfresh(ctx, n, image)
	if err != nil {
		t.Fatalf("CRI pull %s on %s: %v", image, n.Name(), err)
	}
	if got != pinned {
		t.Errorf("CRI pull of %s on %s after the agent's restart: %s, want the pinned %s", image, n.Name(), got, pinned)
		s.dumpAgentLog(ctx, n.Name())
	}
}

// dumpAgentLog logs what the agent on node wrote, every restart of it.
func (s *suite) dumpAgentLog(ctx context.Context, node string) {
	p := s.agentPod(ctx, node)
	out, err := s.cl.ContainerLog(p, p.Spec.Containers[0].Name)
	s.t.Logf("agent on %s (err %v):\n%s", node, err, out)
}

// agentPod is the node agent's pod on node.
func (s *suite) agentPod(ctx context.Context, node string) *corev1.Pod {
	pods, err := s.cl.Client().CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/component=node-agent",
		FieldSelector: "spec.nodeName=" + node,
	})
	if err != nil || len(pods.Items) != 1 || len(pods.Items[0].Status.ContainerStatuses) == 0 {
		s.t.Fatalf("agent pod on %s: %v (%d pods)", node, err, len(pods.Items))
	}
	return &pods.Items[0]
}

// uninstall (scenario h): `helm uninstall` leaves every node's certs.d as
// it was before the install and nothing of tagger running.
func (s *suite) uninstall(ctx context.Context) {
	t := s.t
	if out, err := s.helm.Run(ctx, "uninstall", release, "--namespace", namespace, "--wait", "--timeout", "5m"); err != nil {
		t.Fatalf("helm uninstall: %v\n%s", err, out)
	}
	rig.WaitFor(t, 2*time.Minute, "no tagger pod left", func() (bool, string) {
		pods, err := s.cl.Client().CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		return len(pods.Items) == 0, s.podStates(ctx)
	})
	for _, n := range s.cl.Nodes() {
		if now := rig.SnapshotDir(t, n.HostsDir()); !maps.Equal(now, s.before[n.Name()]) {
			t.Errorf("node %s: certs.d after uninstall:\n%v\nwant as before the install:\n%v", n.Name(), now, s.before[n.Name()])
		}
	}
	// Kept on purpose (docs/install.md): the CRD with the Tags, the registry's volume.
	if _, err := s.cl.Client().AppsV1().DaemonSets(namespace).Get(ctx, release+"-node-agent", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("node agent DaemonSet after uninstall: %v", err)
	}
}
