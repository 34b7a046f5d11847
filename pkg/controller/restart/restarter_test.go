package restart

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/pkg/controller/reconcilertest"
)

// These tests cover the decisions and error paths with controller-runtime's
// fake client; test/rollout runs the same code against a real apiserver.

func testTag(gen int64) *v1alpha1.Tag {
	return &v1alpha1.Tag{
		ObjectMeta: metav1.ObjectMeta{Name: "nginx"},
		Spec:       v1alpha1.TagSpec{Image: "nginx:1.27", Rollout: &v1alpha1.RolloutSpec{Restart: true}},
		Status:     v1alpha1.TagStatus{ServedGeneration: gen},
	}
}

func podTemplate(image string, annotations map[string]string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "x"}, Annotations: annotations},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: image}}},
	}
}

func deployment(ns, name, image string, mut ...func(*appsv1.Deployment)) *appsv1.Deployment {
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       appsv1.DeploymentSpec{Template: podTemplate(image, nil)},
	}
	for _, f := range mut {
		f(d)
	}
	return d
}

func newScheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := v1alpha1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

func fixedNow() time.Time { return time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC) }

func TestRestartDecisions(t *testing.T) {
	objs := []client.Object{
		deployment("a", "web", "nginx:1.27"),
		deployment("a", "paused", "nginx:1.27", func(d *appsv1.Deployment) { d.Spec.Paused = true }),
		deployment("a", "other", "nginx:1.28"),
		deployment("a", "done", "nginx:1.27", func(d *appsv1.Deployment) {
			d.Spec.Template.Annotations = map[string]string{RestartedForAnnotation: "nginx/3", RestartedAtAnnotation: "earlier"}
		}),
		deployment("a", "older", "nginx:1.27", func(d *appsv1.Deployment) {
			d.Spec.Template.Annotations = map[string]string{RestartedForAnnotation: "nginx/2"}
		}),
		&appsv1.StatefulSet{
			ObjectMeta: metav1.ObjectMeta{Namespace: "b", Name: "ondelete"},
			Spec: appsv1.StatefulSetSpec{Template: podTemplate("nginx:1.27", nil),
				UpdateStrategy: appsv1.StatefulSetUpdateStrategy{Type: appsv1.OnDeleteStatefulSetStrategyType}},
		},
		&appsv1.DaemonSet{
			ObjectMeta: metav1.ObjectMeta{Namespace: "b", Name: "agent"},
			Spec:       appsv1.DaemonSetSpec{Template: podTemplate("docker.io/library/nginx:1.27", nil)},
		},
	}
	c := fake.NewClientBuilder().WithScheme(newScheme(t)).WithObjects(objs...).Build()
	rec := events.NewFakeRecorder(100)
	r := &Restarter{Client: c, Recorder: rec, QPS: rate.Inf, Now: fixedNow}

	res, err := r.Restart(context.Background(), testTag(3), "served generation 2 -> 3", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var restarted []string
	for _, w := range res.Restarted {
		restarted = append(restarted, w.String())
	}
	if got, want := strings.Join(restarted, ","), "Deployment a/older,Deployment a/web,DaemonSet b/agent"; got != want {
		t.Errorf("restarted %s, want %s", got, want)
	}
	skipped := map[string]string{}
	for _, s := range res.Skipped {
		skipped[s.WorkloadRef.String()] = s.Reason
	}
	wantSkipped := map[string]string{
		"Deployment a/done":      SkipAlreadyRestarted,
		"Deployment a/paused":    SkipPaused,
		"StatefulSet b/ondelete": SkipOnDelete,
	}
	if len(skipped) != len(wantSkipped) {
		t.Errorf("skipped %v, want %v", skipped, wantSkipped)
	}
	for k, v := range wantSkipped {
		if skipped[k] != v {
			t.Errorf("skipped[%s] = %q, want %q", k, skipped[k], v)
		}
	}

	var d appsv1.Deployment
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: "a", Name: "web"}, &d); err != nil {
		t.Fatal(err)
	}
	if got := d.Spec.Template.Annotations; got[RestartedAtAnnotation] != "2026-11-27T10:00:00Z" || got[RestartedForAnnotation] != "nginx/3" {
		t.Errorf("annotations %v", got)
	}
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: "a", Name: "done"}, &d); err != nil {
		t.Fatal(err)
	}
	if d.Spec.Template.Annotations[RestartedAtAnnotation] != "earlier" {
		t.Errorf("already restarted Deployment was patched: %v", d.Spec.Template.Annotations)
	}

	evs := reconcilertest.Events(rec)
	var onTag, onWorkloads int
	for _, e := range evs {
		switch {
		case strings.Contains(e, ReasonRolloutRestarted):
			onTag++
			if !strings.Contains(e, "restarted 3 workload(s)") || !strings.Contains(e, "Paused: Deployment a/paused") {
				t.Errorf("Tag event %q", e)
			}
		case strings.Contains(e, ReasonRestartedByTagger):
			onWorkloads++
			if !strings.Contains(e, "Tag nginx generation 3") {
				t.Errorf("workload event %q", e)
			}
		default:
			t.Errorf("unexpected event %q", e)
		}
	}
	if onTag != 1 || onWorkloads != 3 {
		t.Errorf("events %q: want 1 on the Tag and 3 on workloads", evs)
	}

	// A retry for the same generation restarts nothing and records nothing.
	res, err = r.Restart(context.Background(), testTag(3), "served generation 2 -> 3", nil, nil)
	if err != nil || len(res.Restarted) != 0 {
		t.Fatalf("retry: %+v, %v", res, err)
	}
	if evs := reconcilertest.Events(rec); len(evs) != 0 {
		t.Errorf("retry recorded %q", evs)
	}
}

// A patch refused for a stale resourceVersion is retried after a re-read,
// and the re-read's verdict wins: here someone else already restarted it.
func TestRestartConflict(t *testing.T) {
	for _, tc := range []struct {
		name        string
		meanwhile   func(*appsv1.Deployment)
		wantRestart bool
		wantSkip    string
	}{
		{"status update meanwhile", func(d *appsv1.Deployment) { d.Labels = map[string]string{"touched": "yes"} }, true, ""},
		{"restarted meanwhile", func(d *appsv1.Deployment) {
			d.Spec.Template.Annotations = map[string]string{RestartedForAnnotation: "nginx/3"}
		}, false, SkipAlreadyRestarted},
		{"image changed meanwhile", func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = "nginx:1.28" }, false, SkipImageChanged},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			patches := 0
			var inner client.Client
			inner = fake.NewClientBuilder().WithScheme(newScheme(t)).WithObjects(deployment("a", "web", "nginx:1.27")).Build()
			c := interceptor.NewClient(inner.(client.WithWatch), interceptor.Funcs{
				Patch: func(ctx context.Context, cl client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
					mu.Lock()
					patches++
					first := patches == 1
					mu.Unlock()
					if first {
						// Someone writes between our read and our patch.
						var d appsv1.Deployment
						if err := cl.Get(ctx, client.ObjectKeyFromObject(obj), &d); err != nil {
							return err
						}
						tc.meanwhile(&d)
						if err := cl.Update(ctx, &d); err != nil {
							return err
						}
					}
					return cl.Patch(ctx, obj, patch, opts...)
				},
			})
			r := &Restarter{Client: c, QPS: rate.Inf, Now: fixedNow}
			res, err := r.Restart(context.Background(), testTag(3), "test", nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := len(res.Restarted) == 1; got != tc.wantRestart {
				t.Fatalf("restarted %v, want restart %v (result %+v)", res.Restarted, tc.wantRestart, res)
			}
			if tc.wantSkip != "" && (len(res.Skipped) != 1 || res.Skipped[0].Reason != tc.wantSkip) {
				t.Fatalf("skipped %+v, want %s", res.Skipped, tc.wantSkip)
			}
			wantPatches := 1
			if tc.wantRestart {
				wantPatches = 2
			}
			if patches != wantPatches {
				t.Errorf("%d patch calls, want %d", patches, wantPatches)
			}
		})
	}
}

// Failures do not stop the wave and come back as one error; other errors
// than conflicts are not retried.
func TestRestartPatchFailure(t *testing.T) {
	inner := fake.NewClientBuilder().WithScheme(newScheme(t)).
		WithObjects(deployment("a", "bad", "nginx:1.27"), deployment("a", "good", "nginx:1.27")).Build()
	c := interceptor.NewClient(inner, interceptor.Funcs{
		Patch: func(ctx context.Context, cl client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			if obj.GetName() == "bad" {
				return apierrors.NewForbidden(schema.GroupResource{Group: "apps", Resource: "deployments"}, "bad", errors.New("no"))
			}
			return cl.Patch(ctx, obj, patch, opts...)
		},
	})
	rec := events.NewFakeRecorder(10)
	r := &Restarter{Client: c, Recorder: rec, QPS: rate.Inf}
	res, err := r.Restart(context.Background(), testTag(1), "test", nil, nil)
	if !apierrors.IsForbidden(err) {
		t.Fatalf("err = %v, want the forbidden patch", err)
	}
	if len(res.Restarted) != 1 || res.Restarted[0].Name != "good" || len(res.Failed) != 1 || res.Failed[0].Name != "bad" {
		t.Fatalf("result %+v", res)
	}
	var warned bool
	for _, e := range reconcilertest.Events(rec) {
		warned = warned || strings.HasPrefix(e, "Warning "+ReasonRolloutRestartFailed)
	}
	if !warned {
		t.Error("no RolloutRestartFailed Warning on the Tag")
	}
}

// A context whose deadline comes before the next rate-limit token stops the
// wave at once instead of failing every remaining workload.
func TestRestartStopsOnContext(t *testing.T) {
	var objs []client.Object
	for _, n := range []string{"a", "b", "c"} {
		objs = append(objs, deployment("ns", n, "nginx:1.27"))
	}
	c := fake.NewClientBuilder().WithScheme(newScheme(t)).WithObjects(objs...).Build()
	r := &Restarter{Client: c, QPS: 0.1, Burst: 1}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	res, err := r.Restart(ctx, testTag(1), "test", nil, nil)
	if err == nil || !strings.Contains(err.Error(), "2 workload(s) not looked at") {
		t.Fatalf("err = %v", err)
	}
	if len(res.Restarted) != 1 || len(res.Failed) != 0 {
		t.Fatalf("result %+v", res)
	}
	if !errors.Is(err, context.DeadlineExceeded) && !strings.Contains(err.Error(), "would exceed context deadline") {
		t.Errorf("err = %v, want the deadline", err)
	}
}

func TestRestartNeedsServedGeneration(t *testing.T) {
	r := &Restarter{Client: fake.NewClientBuilder().WithScheme(newScheme(t)).Build()}
	if _, err := r.Restart(context.Background(), testTag(0), "test", nil, nil); err == nil {
		t.Fatal("no error for a Tag that serves nothing")
	}
}

func TestRestartPatch(t *testing.T) {
	b, err := restartPatch("42", "2026-11-27T10:00:00Z", "nginx/3")
	if err != nil {
		t.Fatal(err)
	}
	want := `{"metadata":{"resourceVersion":"42"},"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":"2026-11-27T10:00:00Z","tagger.dev/restarted-for":"nginx/3"}}}}}`
	if string(b) != want {
		t.Errorf("patch\n%s\nwant\n%s", b, want)
	}
}
