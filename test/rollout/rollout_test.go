// Package rollout_test runs pkg/controller/restart against a real kube-apiserver and etcd
// (rig.StartKube, binaries from hack/testbin.sh) with the CRDs from deploy/crds.
// There is no kubelet or controller-manager: workloads are objects only, which
// is all a restart touches.
package rollout_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/pkg/controller/restart"
)

const pinnedDigest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// cluster is one apiserver (the rig's, without the controller: the tests
// drive the restarter directly) shared by the package's tests; each test
// uses its own namespaces and Tag.
var cluster struct {
	once     sync.Once
	err      error
	kube     *rig.Kube
	cfg      *rest.Config
	scheme   *k8sruntime.Scheme
	c        client.Client
	recorder events.EventRecorder
	stop     context.CancelFunc
}

func TestMain(m *testing.M) {
	code := m.Run()
	if cluster.stop != nil {
		cluster.stop()
	}
	if cluster.kube != nil {
		if err := cluster.kube.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop apiserver:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func start(t *testing.T) {
	t.Helper()
	dir := rig.RequireBins(t, "kube-apiserver", "etcd")
	cluster.once.Do(func() { cluster.err = startCluster(dir) })
	if cluster.err != nil {
		t.Fatal(cluster.err)
	}
}

func startCluster(binDir string) error {
	k, err := rig.StartKube(binDir)
	if err != nil {
		return err
	}
	cluster.kube, cluster.cfg, cluster.c = k, k.Config, k.Client
	cluster.scheme = k.Client.Scheme()
	cs, err := kubernetes.NewForConfig(k.Config)
	if err != nil {
		return err
	}
	b := events.NewBroadcaster(&events.EventSinkImpl{Interface: cs.EventsV1()})
	ctx, cancel := context.WithCancel(context.Background())
	if err := b.StartRecordingToSinkWithContext(ctx); err != nil {
		cancel()
		return err
	}
	cluster.stop = func() { cancel(); b.Shutdown() }
	cluster.recorder = b.NewRecorder(cluster.scheme, "tagger-rollout-test")
	return nil
}

// --- fixtures ---

func mustCreate(t *testing.T, obj client.Object) {
	t.Helper()
	if err := cluster.c.Create(context.Background(), obj); err != nil {
		t.Fatalf("create %T %s/%s: %v", obj, obj.GetNamespace(), obj.GetName(), err)
	}
}

func namespace(t *testing.T, name string, labels map[string]string) {
	mustCreate(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}})
}

// servingTag creates a Tag for image and sets its served generation.
func servingTag(t *testing.T, name, image string, gen int64) *v1alpha1.Tag {
	t.Helper()
	tag := &v1alpha1.Tag{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       v1alpha1.TagSpec{Image: image, Rollout: &v1alpha1.RolloutSpec{Restart: true}},
	}
	mustCreate(t, tag)
	tag.Status.ServedGeneration = gen
	tag.Status.LatestGeneration = gen
	if err := cluster.c.Status().Update(context.Background(), tag); err != nil {
		t.Fatalf("set Tag %s status: %v", name, err)
	}
	return tag
}

type spec struct {
	labels     map[string]string
	init, main []string // images
}

func template(app string, s spec) corev1.PodTemplateSpec {
	pt := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}}}
	for i, img := range s.init {
		pt.Spec.InitContainers = append(pt.Spec.InitContainers, corev1.Container{Name: fmt.Sprintf("init%d", i), Image: img})
	}
	for i, img := range s.main {
		pt.Spec.Containers = append(pt.Spec.Containers, corev1.Container{Name: fmt.Sprintf("c%d", i), Image: img})
	}
	return pt
}

func deployment(t *testing.T, ns, name string, s spec) {
	t.Helper()
	mustCreate(t, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: s.labels},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: template(name, s),
		},
	})
}

func statefulSet(t *testing.T, ns, name string, s spec) {
	t.Helper()
	mustCreate(t, &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: s.labels},
		Spec: appsv1.StatefulSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: template(name, s),
		},
	})
}

func daemonSet(t *testing.T, ns, name string, s spec) {
	t.Helper()
	mustCreate(t, &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: s.labels},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: template(name, s),
		},
	})
}

// state is what a test checks of a workload: its resourceVersion (any write
// changes it) and its template annotations.
type state struct {
	rv          string
	annotations map[string]string
}

// snapshot reads every workload of the three kinds in the given namespaces,
// keyed "Kind ns/name".
func snapshot(t *testing.T, namespaces ...string) map[string]state {
	t.Helper()
	out := map[string]state{}
	ctx := context.Background()
	for _, ns := range namespaces {
		var dl appsv1.DeploymentList
		var sl appsv1.StatefulSetList
		var dsl appsv1.DaemonSetList
		for _, l := range []client.ObjectList{&dl, &sl, &dsl} {
			if err := cluster.c.List(ctx, l, client.InNamespace(ns)); err != nil {
				t.Fatal(err)
			}
		}
		for _, d := range dl.Items {
			out["Deployment "+ns+"/"+d.Name] = state{d.ResourceVersion, d.Spec.Template.Annotations}
		}
		for _, s := range sl.Items {
			out["StatefulSet "+ns+"/"+s.Name] = state{s.ResourceVersion, s.Spec.Template.Annotations}
		}
		for _, d := range dsl.Items {
			out["DaemonSet "+ns+"/"+d.Name] = state{d.ResourceVersion, d.Spec.Template.Annotations}
		}
	}
	return out
}

func names[T fmt.Stringer](ws []T) []string {
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = w.String()
	}
	sort.Strings(out)
	return out
}

// eventsFor lists the events.k8s.io/v1 Events in ns with this reason.
func eventsFor(t *testing.T, ns, reason string) []eventsv1.Event {
	t.Helper()
	var l eventsv1.EventList
	if err := cluster.c.List(context.Background(), &l, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var out []eventsv1.Event
	for _, e := range l.Items {
		if e.Reason == reason {
			out = append(out, e)
		}
	}
	return out
}

// --- tests ---

// TestRestart is a whole wave against a real apiserver: only workloads in
// selected namespaces, with selected labels, using the Tag's image by tag
// (after normalization, in any kind of container) are patched; everything
// else is not written at all (resourceVersions); Events land on the Tag and
// on each restarted workload through the events API. What a wave decides per
// workload (paused, already restarted, a retry, a new generation) is proven
// once, in pkg/controller/restart's TestRestartDecisions; a retry racing a
// cache in TestRestartCachedClient.
func TestRestart(t *testing.T) {
	start(t)
	ctx := context.Background()
	on := map[string]string{"tagger.dev/rollout": "on"}
	namespace(t, "team-a", on)
	namespace(t, "team-b", on)
	namespace(t, "team-c", map[string]string{"tagger.dev/rollout": "off"})

	// team-a: every kind, every way of writing the image.
	deployment(t, "team-a", "web", spec{main: []string{"nginx:1.27"}})
	statefulSet(t, "team-a", "db", spec{init: []string{"docker.io/library/nginx:1.27"}, main: []string{"postgres:17"}})
	daemonSet(t, "team-a", "agent", spec{main: []string{"busybox:1.36", "index.docker.io/library/nginx:1.27"}})
	deployment(t, "team-a", "pinned", spec{main: []string{"nginx:1.27@" + pinnedDigest}})
	deployment(t, "team-a", "other-tag", spec{main: []string{"nginx:1.28"}})
	// team-b: the workload selector decides.
	deployment(t, "team-b", "api", spec{main: []string{"nginx:1.27"}, labels: map[string]string{"team": "b"}})
	deployment(t, "team-b", "opted-out", spec{main: []string{"nginx:1.27"}, labels: map[string]string{"tagger.dev/restart": "false"}})
	daemonSet(t, "team-b", "opted-out", spec{main: []string{"nginx:1.27"}, labels: map[string]string{"tagger.dev/restart": "false"}})
	// team-c: the namespace selector excludes it.
	deployment(t, "team-c", "web", spec{main: []string{"nginx:1.27"}})
	statefulSet(t, "team-c", "db", spec{main: []string{"nginx:1.27"}})

	tag := servingTag(t, "nginx", "nginx:1.27", 3)
	nsSel := &metav1.LabelSelector{MatchLabels: on}
	sel := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: "tagger.dev/restart", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"false"}},
	}}
	now := time.Date(2026, 11, 27, 10, 30, 0, 0, time.UTC)
	r := &restart.Restarter{Client: cluster.c, Recorder: cluster.recorder, QPS: rate.Inf, Now: func() time.Time { return now }}

	before := snapshot(t, "team-a", "team-b", "team-c")
	res, err := r.Restart(ctx, tag, "served generation 2 -> 3", nsSel, sel)
	if err != nil {
		t.Fatalf("Restart: %v", err)
	}
	wantRestarted := []string{"DaemonSet team-a/agent", "Deployment team-a/web", "Deployment team-b/api", "StatefulSet team-a/db"}
	if got := names(res.Restarted); !slices.Equal(got, wantRestarted) {
		t.Errorf("restarted %q, want %q", got, wantRestarted)
	}
	if len(res.Skipped) != 0 {
		t.Errorf("skipped %+v, want none", res.Skipped)
	}
	if len(res.Failed) != 0 {
		t.Errorf("failed %+v", res.Failed)
	}

	after := snapshot(t, "team-a", "team-b", "team-c")
	for key, b := range before {
		a := after[key]
		if slices.Contains(wantRestarted, key) {
			if a.rv == b.rv {
				t.Errorf("%s: not written", key)
			}
			if a.annotations[restart.RestartedAtAnnotation] != "2026-11-27T10:30:00Z" ||
				a.annotations[restart.RestartedForAnnotation] != "nginx/3" {
				t.Errorf("%s: template annotations %v", key, a.annotations)
			}
			continue
		}
		if a.rv != b.rv {
			t.Errorf("%s: written (resourceVersion %s -> %s), annotations %v", key, b.rv, a.rv, a.annotations)
		}
	}

	// Events: one on the Tag (cluster-scoped, so in "default"), one on each
	// restarted workload naming the Tag and generation, none elsewhere.
	rig.WaitFor(t, 15*time.Second, "Events", func() (bool, string) {
		var onTag []eventsv1.Event
		for _, e := range eventsFor(t, "default", restart.ReasonRolloutRestarted) {
			if e.Regarding.Kind == "Tag" && e.Regarding.Name == "nginx" {
				onTag = append(onTag, e)
			}
		}
		if len(onTag) != 1 {
			return false, fmt.Sprintf("%d RolloutRestarted Events on the Tag", len(onTag))
		}
		if n := onTag[0].Note; !strings.Contains(n, "restarted 4 workload(s)") ||
			onTag[0].Regarding.UID != tag.UID {
			return false, fmt.Sprintf("Tag Event %+v", onTag[0])
		}
		var got []string
		for _, ns := range []string{"team-a", "team-b", "team-c"} {
			for _, e := range eventsFor(t, ns, restart.ReasonRestartedByTagger) {
				if !strings.Contains(e.Note, "Tag nginx generation 3") || e.Related == nil || e.Related.Name != "nginx" {
					return false, fmt.Sprintf("workload Event %+v", e)
				}
				got = append(got, e.Regarding.Kind+" "+e.Regarding.Namespace+"/"+e.Regarding.Name)
			}
		}
		sort.Strings(got)
		if !slices.Equal(got, wantRestarted) {
			return false, fmt.Sprintf("RestartedByTagger Events on %q, want %q", got, wantRestarted)
		}
		return true, ""
	})
}

// TestRestartCachedClient runs two waves back to back through a
// controller-runtime cache, as the reconciler's client does. The second wave
// may list the workload before the cache has seen the first wave's patch; the
// resourceVersion in the patch must keep it from restarting twice.
func TestRestartCachedClient(t *testing.T) {
	start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	namespace(t, "cached", nil)
	for i := range 3 {
		deployment(t, "cached", fmt.Sprintf("redis-%d", i), spec{main: []string{"redis:7"}})
	}
	tag := servingTag(t, "redis", "docker.io/library/redis:7", 1)

	informers, err := cache.New(cluster.cfg, cache.Options{Scheme: cluster.scheme})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = informers.Start(ctx) }()
	if !informers.WaitForCacheSync(ctx) {
		t.Fatal("cache did not sync")
	}
	c, err := client.New(cluster.cfg, client.Options{Scheme: cluster.scheme, Cache: &client.CacheOptions{Reader: informers}})
	if err != nil {
		t.Fatal(err)
	}
	// Each wave stamps a different restartedAt, so a second restart would show.
	var mu sync.Mutex
	clock := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); clock = clock.Add(time.Minute); return clock }
	r := &restart.Restarter{Client: c, QPS: rate.Inf, Now: now}
	res1, err1 := r.Restart(ctx, tag, "new generation", &metav1.LabelSelector{}, nil)
	// No pause: the second wave lists right behind the first one's patches.
	res2, err2 := r.Restart(ctx, tag, "new generation", nil, nil)
	if err1 != nil || len(res1.Restarted) != 3 {
		t.Fatalf("first wave: %+v, %v", res1, err1)
	}
	if err2 != nil || len(res2.Restarted) != 0 || len(res2.Skipped) != 3 {
		t.Errorf("second wave: %+v, %v", res2, err2)
	}
	for key, st := range snapshot(t, "cached") {
		if got := st.annotations[restart.RestartedAtAnnotation]; got != res1.RestartedAt {
			t.Errorf("%s: restartedAt %q, want the first wave's %q", key, got, res1.RestartedAt)
		}
	}
}

// TestRestartRateLimit checks the limiter is in the patch path: n patches
// at qps with burst b cannot finish before (n-b)/qps. A lower bound of
// correctness, not a performance assertion.
func TestRestartRateLimit(t *testing.T) {
	start(t)
	const (
		n     = 4
		qps   = 8
		burst = 1
	)
	namespace(t, "rate", nil)
	for i := range n {
		deployment(t, "rate", fmt.Sprintf("app-%d", i), spec{main: []string{"registry.example:5000/app:v1"}})
	}
	tag := servingTag(t, "app", "registry.example:5000/app:v1", 1)
	r := &restart.Restarter{Client: cluster.c, QPS: qps, Burst: burst}
	begin := time.Now()
	res, err := r.Restart(context.Background(), tag, "rate test", nil, nil)
	elapsed := time.Since(begin)
	if err != nil || len(res.Restarted) != n {
		t.Fatalf("Restart: %+v, %v", res, err)
	}
	if min := time.Duration(float64(n-burst) / qps * float64(time.Second)); elapsed < min {
		t.Errorf("%d patches at %d/s (burst %d) took %v, less than the minimum %v", n, qps, burst, elapsed, min)
	}
}
