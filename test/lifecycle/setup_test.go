// Package lifecycle proves tagger the way operators run it: one `helm
// install` of the chart on a real cluster of several nodes (each node its own
// network, mount and cgroup namespaces, kube-proxy, CoreDNS), every tagger
// part a pod under a kubelet, through pins, rollback, caching, new nodes,
// upgrades, restarts and uninstall.
package lifecycle

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/internal/rig/cluster"
	"github.com/tagger-project/tagger/internal/rig/imagebuild"
)

const (
	namespace = "tagger-system"
	release   = "tagger"
)

// suite is one installed system: the cluster, the registries it pulls
// from, and clients.
type suite struct {
	t       *testing.T
	cl      *cluster.Cluster
	c       client.Client
	images  *rig.Registry // tagger's and the bundled registry's images
	up      *rig.Registry // the upstream the Tags pin
	strict  *rig.Registry // an upstream the agents treat as strict (no fallback)
	helm    rig.HelmRunner
	values  string // the values file of the install
	started time.Time
	// webhookToken is the generic webhook receiver's token.
	webhookToken string
	// before is every node's certs.d before the install, by node name.
	before map[string]map[string]string
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// newSuite starts a 3-node cluster and the registries, and records every
// node's certs.d as it was before tagger.
func newSuite(t *testing.T) *suite {
	// The test's clients log nothing of their own.
	ctrllog.SetLogger(logr.Discard())
	cl := cluster.New(t, cluster.Options{Nodes: 3})
	s := &suite{t: t, cl: cl, started: time.Now(), before: map[string]map[string]string{}}
	s.images = rig.NewRegistry(t, rig.RegistryOptions{Host: cl.HostIP()})
	s.up = rig.NewRegistry(t, rig.RegistryOptions{Host: cl.HostIP()})
	s.strict = rig.NewRegistry(t, rig.RegistryOptions{Host: cl.HostIP()})
	for _, r := range []*rig.Registry{s.images, s.up, s.strict} {
		cl.UsePlainHTTP(r.Host())
	}
	for _, n := range cl.Nodes() {
		s.before[n.Name()] = rig.SnapshotDir(t, n.HostsDir())
	}
	scheme, err := v1alpha1.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cl.Config(), client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	s.c = c
	s.helm = rig.HelmRunner{Dir: repoRoot(), Home: t.TempDir(), Kubeconfig: cl.KubeconfigPath()}
	// Runs before the cluster stops (cleanups run last-in first-out).
	t.Cleanup(func() {
		if t.Failed() {
			s.dumpAgents()
		}
	})
	return s
}

// dumpAgents logs every tagger pod's state and every agent's log.
func (s *suite) dumpAgents() {
	ctx := context.Background()
	s.t.Logf("tagger pods:%s", strings.ReplaceAll(s.podStates(ctx), "; ", "\n  "))
	pods, err := s.cl.Client().CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=node-agent"})
	if err != nil {
		return
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		out, err := s.cl.ContainerLog(p, p.Spec.Containers[0].Name)
		if len(out) > 8<<10 {
			out = out[len(out)-8<<10:]
		}
		s.t.Logf("agent %s on %s (restarts %v, log err %v):\n%s", p.Name, p.Spec.NodeName, restarts(p), err, out)
	}
}

func restarts(p *corev1.Pod) int32 {
	if len(p.Status.ContainerStatuses) == 0 {
		return 0
	}
	return p.Status.ContainerStatuses[0].RestartCount
}

func (s *suite) phase(format string, args ...any) {
	s.t.Logf("%6.1fs %s", time.Since(s.started).Seconds(), fmt.Sprintf(format, args...))
}

// buildTaggerImage builds tagger's image from the Dockerfile with BuildKit,
// as a release does, and pushes it as tagger:tag to the images registry.
func (s *suite) buildTaggerImage(tag string) {
	res := imagebuild.Build(s.t, imagebuild.Options{Dest: s.images.Host() + "/tagger:" + tag, Version: tag})
	s.phase("tagger image built from the Dockerfile: %s (buildctl %v)", res.Digest, res.Duration.Round(time.Second))
}

// retagTaggerImage pushes tagger:from's manifest again as tagger:to: a new
// image tag for `helm upgrade`, as a release that changed nothing in the
// binaries would be.
func (s *suite) retagTaggerImage(from, to string) {
	resp, body := s.images.Get(s.t, "tagger", "/v2/tagger/manifests/"+from, ocispec.MediaTypeImageManifest+", "+ocispec.MediaTypeImageIndex)
	s.images.PushManifest(s.t, "tagger", to, resp.Header.Get("Content-Type"), body)
}

// pushRegistryImage pushes the distribution registry the rig runs as the
// bundled registry's image (the chart runs `registry serve <config>`).
func (s *suite) pushRegistryImage() {
	t := s.t
	b, err := os.ReadFile(filepath.Join(rig.RequireBins(t, "registry"), "registry"))
	if err != nil {
		t.Fatal(err)
	}
	cluster.PushImage(t, s.images, "registry", "3",
		[]cluster.File{{Path: "bin/registry", Mode: 0o755, Data: b}},
		ocispec.ImageConfig{User: "65532:65532", Env: []string{"PATH=/bin"}, Entrypoint: []string{"registry"}})
}

// install runs `helm install` with what an operator of this cluster sets:
// where the images are (an air-gapped mirror), which registries speak plain
// HTTP, and the startup taint its node pools register with.
func (s *suite) install(ctx context.Context, imageTag string) {
	t := s.t
	plain := []string{s.up.Host(), s.strict.Host()}
	s.webhookToken = s.createWebhookSecret(ctx)
	values, err := yaml.Marshal(map[string]any{
		"image":      map[string]any{"repository": s.images.Host() + "/tagger", "tag": imageTag},
		"webhooks":   map[string]any{"enabled": true, "secretName": webhookSecret},
		"controller": map[string]any{"plainHTTPRegistries": plain, "logFormat": "text"},
		"nodeAgent": map[string]any{"plainHTTPRegistries": plain, "logFormat": "text",
			"strictRegistries": []string{s.strict.Host()}},
		"registry": map[string]any{"image": map[string]any{"repository": s.images.Host() + "/registry", "tag": "3",
			// The chart pins Docker Hub's image by digest; this mirror's is another.
			"digest": ""}},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.values = filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(s.values, values, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := s.helm.Run(ctx, "install", release, "deploy/chart/tagger", "--namespace", namespace,
		"--create-namespace", "--values", s.values, "--wait", "--timeout", "5m"); err != nil {
		t.Fatalf("helm install: %v\n%s", err, out)
	}
	s.waitInstalled(ctx)
}

// waitInstalled waits until every tagger part runs: both controller
// replicas, the bundled registry, an agent on every node.
func (s *suite) waitInstalled(ctx context.Context) {
	cs := s.cl.Client()
	rig.WaitFor(s.t, 5*time.Minute, "every tagger part Ready", func() (bool, string) {
		var state []string
		ok := true
		for _, name := range []string{release + "-controller", release + "-registry"} {
			d, err := cs.AppsV1().Deployments(namespace).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			want := ptr.Deref(d.Spec.Replicas, 1)
			ok = ok && d.Status.ReadyReplicas == want && d.Status.UpdatedReplicas == want
			state = append(state, fmt.Sprintf("%s %d/%d", name, d.Status.ReadyReplicas, want))
		}
		ds, err := cs.AppsV1().DaemonSets(namespace).Get(ctx, release+"-node-agent", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		ok = ok && ds.Status.NumberReady == int32(len(s.cl.Nodes())) && ds.Status.UpdatedNumberScheduled == ds.Status.DesiredNumberScheduled
		state = append(state, fmt.Sprintf("agents %d/%d ready", ds.Status.NumberReady, len(s.cl.Nodes())))
		return ok, strings.Join(state, ", ") + s.podStates(ctx)
	})
}

// waitAgentsOn waits until every node runs exactly one agent pod, Ready, of
// tagger's image tag.
func (s *suite) waitAgentsOn(ctx context.Context, tag string) {
	want := s.images.Host() + "/tagger:" + tag
	rig.WaitFor(s.t, 5*time.Minute, "one Ready agent of "+want+" on every node", func() (bool, string) {
		pods, err := s.cl.Client().CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=node-agent"})
		if err != nil {
			return false, err.Error()
		}
		nodes := map[string]int{}
		ok := true
		for _, p := range pods.Items {
			nodes[p.Spec.NodeName]++
			ok = ok && p.Spec.Containers[0].Image == want && podReady(&p)
		}
		for _, n := range s.cl.Nodes() {
			ok = ok && nodes[n.Name()] == 1
		}
		return ok, fmt.Sprintf("%v%s", nodes, s.podStates(ctx))
	})
}

// podStates describes the pods of the release, for wait messages.
func (s *suite) podStates(ctx context.Context) string {
	pods, err := s.cl.Client().CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return "; " + err.Error()
	}
	var b strings.Builder
	for _, p := range pods.Items {
		fmt.Fprintf(&b, "; %s on %s: %s", p.Name, p.Spec.NodeName, p.Status.Phase)
		for _, cs := range p.Status.ContainerStatuses {
			if w := cs.State.Waiting; w != nil {
				fmt.Fprintf(&b, " (%s: %s)", w.Reason, w.Message)
			}
		}
	}
	return b.String()
}

// waitPodsOn waits until the Deployment's pods are all Ready on digest, one
// per node, and none other is left, and returns when the last of them
// became Ready (the kubelet's condition time).
func (s *suite) waitPodsOn(ctx context.Context, name, digest string, replicas int) time.Time {
	cs := s.cl.Client()
	var last time.Time
	rig.WaitFor(s.t, 3*time.Minute, fmt.Sprintf("%d pods of %s Ready on %s", replicas, name, digest), func() (bool, string) {
		pods, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
		if err != nil {
			return false, err.Error()
		}
		ready, nodes := 0, map[string]bool{}
		last = time.Time{}
		var state []string
		for _, p := range pods.Items {
			id := ""
			if len(p.Status.ContainerStatuses) > 0 {
				id = p.Status.ContainerStatuses[0].ImageID
			}
			isReady := p.DeletionTimestamp == nil && podReady(&p) && strings.HasSuffix(id, digest)
			if isReady {
				ready++
				nodes[p.Spec.NodeName] = true
				if at := readySince(&p); at.After(last) {
					last = at
				}
			}
			state = append(state, fmt.Sprintf("%s on %s ready=%v imageID=%s", p.Name, p.Spec.NodeName, podReady(&p), id))
		}
		return ready == replicas && len(pods.Items) == replicas && len(nodes) == replicas, strings.Join(state, "; ")
	})
	return last
}

func readySince(p *corev1.Pod) time.Time {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.LastTransitionTime.Time
		}
	}
	return time.Time{}
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// checkPolicyTypes waits until the controller-manager has type-checked the
// chart's ValidatingAdmissionPolicy and fails on any expression warning: a
// CEL expression that does not type-check against the Node schema would
// deny or allow the wrong requests.
func (s *suite) checkPolicyTypes(ctx context.Context) {
	name := release + "-node-agent-startup-taint"
	rig.WaitFor(s.t, 2*time.Minute, "policy "+name+" type-checked without warnings", func() (bool, string) {
		p, err := s.cl.Client().AdmissionregistrationV1().ValidatingAdmissionPolicies().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		if p.Status.ObservedGeneration != p.Generation || p.Status.TypeChecking == nil {
			return false, "not type-checked yet"
		}
		if w := p.Status.TypeChecking.ExpressionWarnings; len(w) > 0 {
			s.t.Fatalf("policy %s: expression warnings: %+v", name, w)
		}
		return true, ""
	})
}

// webhookSecret is the Secret with the webhook receivers' tokens.
const webhookSecret = "tagger-webhooks"

// createWebhookSecret creates the release namespace and the webhook Secret
// (an operator's step before the install) and returns the generic token.
func (s *suite) createWebhookSecret(ctx context.Context) string {
	cs := s.cl.Client()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		s.t.Fatal(err)
	}
	token := rand.Text()
	if _, err := cs.CoreV1().Secrets(namespace).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: webhookSecret},
		StringData: map[string]string{"generic": token},
	}, metav1.CreateOptions{}); err != nil {
		s.t.Fatal(err)
	}
	return token
}

// postWebhook tells the controller that image moved through the generic
// webhook receiver, from a pod, through the webhook Service's DNS name (as a
// CI job in the cluster would).
func (s *suite) postWebhook(ctx context.Context, image string) {
	t := s.t
	client := s.images.Host() + "/tools/client:v1"
	cluster.PushRunnableImage(t, s.images, "tools/client", "v1", "client")
	url := fmt.Sprintf("http://%s-controller-webhooks.%s.svc.cluster.local:8080/hooks/generic/%s", release, namespace, s.webhookToken)
	pod := cluster.ClientPod("webhook-"+rand.Text()[:8], s.cl.Nodes()[0].Name(), client, false, "-post", url, fmt.Sprintf(`{"image":%q}`, image))
	pod.Name = strings.ToLower(pod.Name)
	out := s.cl.RunToCompletion(ctx, t, pod)
	if !strings.HasPrefix(out, "20") {
		t.Fatalf("webhook through the Service: %q", out)
	}
}
