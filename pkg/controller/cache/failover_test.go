package cache

import (
	"context"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/pkg/controller/reconcilertest"
	"github.com/tagger-project/tagger/pkg/pins"
)

// A copy that failed under one leader keeps its backoff, failure count and
// start time under the next: each step builds a new reconciler from the
// stored Tag alone.
func TestCopyBackoffSurvivesFailover(t *testing.T) {
	cl := reconcilertest.FakeClient(t, nil, newTag("app", nil))
	cp := &fakeCopier{copyErr: errRegistryDown}
	steps := []struct {
		name      string
		at        time.Duration // since t0
		copyErr   error
		wantCopy  bool
		wantFails int32
		wantRetry time.Duration // RequeueAfter
		wantNext  time.Duration // status.cache.nextRetry since t0 (0: none)
	}{
		{"leader 1: first copy fails", 0, errRegistryDown, true, 1, minBackoff, minBackoff},
		{"leader 2: still backing off, copies nothing", 2 * time.Second, errRegistryDown, false, 1, 3 * time.Second, minBackoff},
		{"leader 2: backoff over, fails again, doubles", 6 * time.Second, errRegistryDown, true, 2, 2 * minBackoff, 6*time.Second + 2*minBackoff},
		{"leader 3: before the doubled retry, nothing", 10 * time.Second, nil, false, 2, 6*time.Second + 2*minBackoff - 10*time.Second, 6*time.Second + 2*minBackoff},
		{"leader 3: retry succeeds, counters reset", 16 * time.Second, nil, true, 0, 0, 0},
	}
	for _, s := range steps {
		clock := t0.Add(s.at)
		cp.copyErr = s.copyErr
		before := len(cp.copies)
		r, _ := newReconciler(cl, cp, &clock)
		res := reconcilertest.Reconcile(t, r, "app")
		got := reconcilertest.GetTag(t, cl, "app")
		cs := got.Status.Cache
		if copied := len(cp.copies) > before; copied != s.wantCopy {
			t.Fatalf("%s: copied %v, want %v", s.name, copied, s.wantCopy)
		}
		if res.RequeueAfter != s.wantRetry {
			t.Fatalf("%s: RequeueAfter %v, want %v", s.name, res.RequeueAfter, s.wantRetry)
		}
		if cs == nil || cs.ConsecutiveFailures != s.wantFails {
			t.Fatalf("%s: status.cache %+v, want %d failures", s.name, cs, s.wantFails)
		}
		if (s.wantNext == 0) != (cs.NextRetry == nil) || (cs.NextRetry != nil && !cs.NextRetry.Time.Equal(t0.Add(s.wantNext))) {
			t.Fatalf("%s: nextRetry %v, want t0+%v", s.name, cs.NextRetry, s.wantNext)
		}
		if cs.CopyStarted == nil || !cs.CopyStarted.Time.Equal(t0) || cs.Generation != 1 {
			t.Fatalf("%s: copy of generation %d started %v, want generation 1 started at t0 (the first attempt)", s.name, cs.Generation, cs.CopyStarted)
		}
	}
	if got := reconcilertest.GetTag(t, cl, "app"); !got.Status.Generations[0].Cached || !got.Status.CachedServed {
		t.Fatalf("after the successful retry: %+v, want generation 1 cached", got.Status)
	}
}

// The finalizer's give-up clock is the first failed cleanup's time in
// status: leaders that come and go do not restart it.
func TestCleanupGiveUpSurvivesFailover(t *testing.T) {
	deleted := metav1.NewTime(t0)
	cl := reconcilertest.FakeClient(t, nil, newTag("gone", func(t *v1alpha1.Tag) {
		t.Finalizers = []string{v1alpha1.CacheFinalizer}
		t.DeletionTimestamp = &deleted
		t.Status.Generations[0].Cached = true
	}))
	cp := &fakeCopier{pruneErr: errRegistryDown}
	for i, at := range []time.Duration{0, 5 * time.Minute, cleanupGiveUp - time.Second} {
		clock := t0.Add(at)
		r, _ := newReconciler(cl, cp, &clock)
		if res := reconcilertest.Reconcile(t, r, "gone"); res.RequeueAfter <= 0 {
			t.Fatalf("leader %d at t0+%v: no retry of the failed cleanup", i+1, at)
		}
		got := reconcilertest.GetTag(t, cl, "gone")
		if cs := got.Status.Cache; cs == nil || cs.CleanupStarted == nil || !cs.CleanupStarted.Time.Equal(t0) {
			t.Fatalf("leader %d: status.cache %+v, want cleanupStarted t0", i+1, cs)
		}
	}
	clock := t0.Add(cleanupGiveUp)
	r, rec := newReconciler(cl, cp, &clock)
	reconcilertest.Reconcile(t, r, "gone")
	var tag v1alpha1.Tag
	if err := cl.Get(context.Background(), client.ObjectKey{Name: "gone"}, &tag); !apierrors.IsNotFound(err) {
		t.Fatalf("after %v of failed cleanups the Tag is still there (%v), finalizers %v", cleanupGiveUp, err, tag.Finalizers)
	}
	if !hasEvent(reconcilertest.Events(rec), "Warning CacheCleanupAbandoned") {
		t.Error("no CacheCleanupAbandoned Event")
	}
	if len(cp.prunes) != 4 {
		t.Errorf("cleanups attempted: %d, want 4", len(cp.prunes))
	}
}

// A cleanup that succeeds releases the Tag at once.
func TestCleanupReleasesTag(t *testing.T) {
	deleted := metav1.NewTime(t0)
	cl := reconcilertest.FakeClient(t, nil, newTag("gone", func(t *v1alpha1.Tag) {
		t.Finalizers = []string{v1alpha1.CacheFinalizer}
		t.DeletionTimestamp = &deleted
		t.Status.Generations[0].Cached = true
	}))
	cp := &fakeCopier{}
	clock := t0
	r, _ := newReconciler(cl, cp, &clock)
	reconcilertest.Reconcile(t, r, "gone")
	if err := cl.Get(context.Background(), client.ObjectKey{Name: "gone"}, &v1alpha1.Tag{}); !apierrors.IsNotFound(err) {
		t.Fatalf("Tag still there after a clean cleanup: %v", err)
	}
	if len(cp.prunes) != 1 || len(cp.prunes[0]) != 1 || cp.prunes[0][0].String() != d1 {
		t.Fatalf("prunes %v, want one of %s", cp.prunes, d1)
	}
}

// Generations beyond the history limit that have copies are deleted from
// the bundled registry, then dropped from the history; the served one stays.
func TestPruneCachedBeyondLimit(t *testing.T) {
	cl := reconcilertest.FakeClient(t, nil, newTag("app", func(t *v1alpha1.Tag) {
		t.Spec.HistoryLimit = 1
		t.Finalizers = []string{v1alpha1.CacheFinalizer}
		t.Status.ServedGeneration = 3
		t.Status.Generations = []v1alpha1.Generation{
			{Generation: 3, Image: "example.com/app:v1", Digest: d3, Cached: true},
			{Generation: 2, Image: "example.com/app:v1", Digest: d2, Cached: true},
			{Generation: 1, Image: "example.com/app:v1", Digest: d1, Cached: true},
		}
	}))
	cp := &fakeCopier{}
	clock := t0
	r, _ := newReconciler(cl, cp, &clock)
	reconcilertest.Reconcile(t, r, "app")
	got := reconcilertest.GetTag(t, cl, "app")
	if len(got.Status.Generations) != 1 || got.Status.Generations[0].Generation != 3 {
		t.Fatalf("history %+v, want only generation 3", got.Status.Generations)
	}
	if len(cp.prunes) != 1 || len(cp.prunes[0]) != 2 {
		t.Fatalf("prunes %v, want one prune of generations 2 and 1", cp.prunes)
	}
	if len(cp.copies) != 0 {
		t.Errorf("copies %v, want none", cp.copies)
	}
}

// Another controller writing the status while a copy runs loses nothing:
// the copy's outcome is applied to the fresh object.
func TestCopyKeepsConcurrentWrites(t *testing.T) {
	cl := reconcilertest.FakeClient(t, nil, newTag("app", nil))
	cp := &fakeCopier{}
	cp.onCopy = func() {
		if len(cp.copies) > 1 {
			return
		}
		// The check-and-serve controller records generation 2 meanwhile.
		tag := reconcilertest.GetTag(t, cl, "app")
		tag.Status.Generations = append([]v1alpha1.Generation{{Generation: 2, Image: "example.com/app:v1", Digest: d2}}, tag.Status.Generations...)
		tag.Status.ServedGeneration = 2
		if err := cl.Status().Update(context.Background(), tag); err != nil {
			t.Errorf("concurrent status write: %v", err)
		}
	}
	clock := t0
	r, _ := newReconciler(cl, cp, &clock)
	reconcilertest.Reconcile(t, r, "app")
	got := reconcilertest.GetTag(t, cl, "app")
	if len(got.Status.Generations) != 2 || got.Status.ServedGeneration != 2 {
		t.Fatalf("the concurrent write was lost: %+v", got.Status)
	}
	for _, n := range []int64{1, 2} {
		if g, ok := pins.Find(got.Status.Generations, n); !ok || !g.Cached {
			t.Errorf("generation %d not cached: %+v", n, got.Status.Generations)
		}
	}
}

// A generation the history drops while it is being copied has its copy
// pruned right after, so it leaves no orphan in the bundled registry.
func TestCopyOfDroppedGenerationIsPruned(t *testing.T) {
	cl := reconcilertest.FakeClient(t, nil, newTag("app", func(t *v1alpha1.Tag) {
		t.Status.ServedGeneration = 2
		t.Status.Generations = []v1alpha1.Generation{
			{Generation: 2, Image: "example.com/app:v1", Digest: d2, Cached: true},
			{Generation: 1, Image: "example.com/app:v1", Digest: d1},
		}
	}))
	cp := &fakeCopier{}
	cp.onCopy = func() {
		tag := reconcilertest.GetTag(t, cl, "app")
		tag.Status.Generations = tag.Status.Generations[:1]
		if err := cl.Status().Update(context.Background(), tag); err != nil {
			t.Errorf("concurrent status write: %v", err)
		}
	}
	clock := t0
	r, _ := newReconciler(cl, cp, &clock)
	reconcilertest.Reconcile(t, r, "app")
	if len(cp.copies) != 1 || len(cp.prunes) != 1 || cp.prunes[0][0].String() != d1 {
		t.Fatalf("copies %v, prunes %v; want generation 1 copied, then pruned", cp.copies, cp.prunes)
	}
	if got := reconcilertest.GetTag(t, cl, "app"); len(got.Status.Generations) != 1 {
		t.Fatalf("history %+v, want generation 2 alone", got.Status.Generations)
	}
}
