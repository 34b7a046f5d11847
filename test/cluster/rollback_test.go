// Package cluster proves with a real kubelet what only a kubelet can show:
// after a rollback, a pod with imagePullPolicy IfNotPresent on a node that
// already has the tag runs the rolled-back digest (the node agent in-process,
// as a host process would run), and the chart's node agent DaemonSet runs as
// a pod and serves pulls (chart_test.go). It runs a single-node cluster from
// source (internal/rig/cluster), the controller in-process, and real
// distribution registries as the upstream.
package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/sirupsen/logrus"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/internal/rig/cluster"
	"github.com/tagger-project/tagger/pkg/controller"
	"github.com/tagger-project/tagger/pkg/logging"
	"github.com/tagger-project/tagger/pkg/node"
)

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// TestRollbackReachesIfNotPresentPods uses kubelet's default
// imagePullCredentialsVerificationPolicy (what users run).
func TestRollbackReachesIfNotPresentPods(t *testing.T) {
	ctx := context.Background()
	cl := cluster.New(t, cluster.Options{})
	cfg := cl.Config()
	if _, err := envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{
		Paths: []string{filepath.Join(repoRoot(), "deploy", "crds")}, ErrorIfPathMissing: true,
	}); err != nil {
		t.Fatalf("install CRDs: %v", err)
	}
	c, log := clients(t, cfg)

	up := rig.NewRegistry(t, rig.RegistryOptions{})
	image := up.Host() + "/team/app:v1"
	gen1 := cluster.PushRunnableImage(t, up, "team/app", "v1", "this-is-generation-1")

	runController(t, cfg, log, "")

	ao := node.DefaultOptions()
	ao.Listen = "127.0.0.1:0"
	ao.MetricsAddr, ao.HealthAddr = "0", "0"
	ao.HostsDir = cl.HostsDir()
	ao.ContainerdConfig = cl.ContainerdConfigPath()
	ao.CRIEndpoint = "unix://" + cl.ContainerdSocket()
	ao.PlainHTTPRegistries = []string{"127.0.0.1:*"}
	agent, err := node.New(cfg, ao, log)
	if err != nil {
		t.Fatalf("node agent: %v", err)
	}
	actx, acancel := context.WithCancel(ctx)
	adone := make(chan error, 1)
	go func() { adone <- agent.Run(actx) }()
	t.Cleanup(func() {
		acancel()
		if err := <-adone; err != nil {
			t.Errorf("node agent: %v", err)
		}
		if err := node.Cleanup(ao); err != nil {
			t.Errorf("node agent cleanup: %v", err)
		}
	})

	tag := &v1alpha1.Tag{ObjectMeta: metav1.ObjectMeta{Name: "app"}, Spec: v1alpha1.TagSpec{Image: image}}
	if err := c.Create(ctx, tag); err != nil {
		t.Fatal(err)
	}
	waitServed(t, c, agent, image, gen1)

	// The upstream moves; a check serves generation 2.
	gen2 := cluster.PushRunnableImage(t, up, "team/app", "v1", "this-is-generation-2")
	rig.PatchTag(t, c, "app", fmt.Sprintf(`{"metadata":{"annotations":{%q:"moved"}}}`, v1alpha1.CheckAnnotation))
	waitServed(t, c, agent, image, gen2)

	// A pod with IfNotPresent runs generation 2; the node now has app:v1 = gen2.
	runPod(t, cl, "before-rollback", image, corev1.PullIfNotPresent, gen2, "this-is-generation-2")

	// Roll back. The upstream still says generation 2, the node still has it
	// under app:v1, and kubelet will not pull an image it has (IfNotPresent):
	// only the node agent's convergence can make the next pod run generation 1.
	rig.PatchTag(t, c, "app", `{"spec":{"generation":1}}`)
	waitServed(t, c, agent, image, gen1)
	runPod(t, cl, "after-rollback", image, corev1.PullIfNotPresent, gen1, "this-is-generation-1")
}

// clients is a client with tagger's types for cfg and the warn-level logger
// the in-process components use.
func clients(t *testing.T, cfg *rest.Config) (client.Client, *logrus.Logger) {
	t.Helper()
	scheme, err := v1alpha1.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	log, err := logging.New(os.Stderr, "text", "warn")
	if err != nil {
		t.Fatal(err)
	}
	return c, log
}

// runController runs the controller in-process until the test ends, caching
// into registryURL when it is set.
func runController(t *testing.T, cfg *rest.Config, log *logrus.Logger, registryURL string) {
	t.Helper()
	co := controller.DefaultOptions()
	co.MetricsAddr, co.HealthAddr, co.WebhookAddr = "0", "0", "0"
	co.PlainHTTPRegistries = []string{"127.0.0.1:*"}
	co.RegistryURL = registryURL
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- controller.Run(ctx, cfg, co, log) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("controller: %v", err)
		}
	})
}

// waitServed waits until the Tag serves d, the node agent serves it, its
// hosts.toml is written and the node's local record has converged.
func waitServed(t *testing.T, c client.Client, agent *node.Agent, image, d string) {
	t.Helper()
	rig.WaitFor(t, 90*time.Second, "generation "+d+" served and converged on the node", func() (bool, string) {
		var tag v1alpha1.Tag
		if err := c.Get(context.Background(), client.ObjectKey{Name: "app"}, &tag); err != nil {
			return false, err.Error()
		}
		snap := agent.Pins()
		var nodeDigest string
		for _, p := range snap.Pins() {
			if p.Ref.String() == image {
				nodeDigest = p.Digest
			}
		}
		pending := agent.ConvergencePending()
		notReady := agent.NotReady()
		ok := tag.Status.ServedDigest == d && nodeDigest == d && len(pending) == 0 && len(notReady) == 0
		return ok, fmt.Sprintf("Tag serves %s, node pin %s, convergence pending %v, agent not ready %v", tag.Status.ServedDigest, nodeDigest, pending, notReady)
	})
}

// runPod runs a pod with the given pull policy and checks the digest kubelet
// reports and the marker the image prints, then deletes it.
func runPod(t *testing.T, cl *cluster.Cluster, name, image string, policy corev1.PullPolicy, wantDigest, marker string) {
	t.Helper()
	ctx := context.Background()
	pods := cl.Client().CoreV1().Pods(metav1.NamespaceDefault)
	grace := int64(2)
	_, err := pods.Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			Containers:                    []corev1.Container{{Name: "main", Image: image, ImagePullPolicy: policy}},
			TerminationGracePeriodSeconds: &grace,
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s: %v", name, err)
	}
	var pod *corev1.Pod
	rig.WaitFor(t, 90*time.Second, "pod "+name+" Running", func() (bool, string) {
		p, err := pods.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		pod = p
		return p.Status.Phase == corev1.PodRunning && len(p.Status.ContainerStatuses) == 1, describe(p)
	})
	if got := pod.Status.ContainerStatuses[0].ImageID; !strings.HasSuffix(got, "@"+wantDigest) {
		t.Fatalf("pod %s: status imageID = %q, want digest %s", name, got, wantDigest)
	}
	rig.WaitFor(t, 30*time.Second, "pod "+name+" log marker", func() (bool, string) {
		l, err := cl.ContainerLog(pod, "main")
		return strings.Contains(l, marker), fmt.Sprintf("log %q err %v", l, err)
	})
	if err := pods.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete pod %s: %v", name, err)
	}
	rig.WaitFor(t, 60*time.Second, "pod "+name+" gone", func() (bool, string) {
		_, err := pods.Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
}

func describe(p *corev1.Pod) string {
	s := string(p.Status.Phase)
	for _, cs := range p.Status.ContainerStatuses {
		if cs.State.Waiting != nil {
			s += " waiting: " + cs.State.Waiting.Reason + " " + cs.State.Waiting.Message
		}
	}
	return s
}
