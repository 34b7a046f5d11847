package cache

import (
	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/pkg/controller/imagecopy"
	"github.com/tagger-project/tagger/pkg/controller/reconcilertest"
)

// One reconcile of a Tag, by case: what is copied, what status and
// condition say afterwards, and whether the finalizer is there.
func TestReconcileCopies(t *testing.T) {
	cases := []struct {
		name       string
		tag        func(*v1alpha1.Tag)
		noCopier   bool
		copyErr    error
		wantCopies []string
		wantReason string // Cached condition
		wantCached []int64
		wantFinal  bool
		wantRetry  bool
		wantEvent  string
	}{
		{
			name: "served generation first, then the rest",
			tag: func(t *v1alpha1.Tag) {
				t.Status.Generations = append([]v1alpha1.Generation{{Generation: 2, Image: "example.com/app:v1", Digest: d2}}, t.Status.Generations...)
			},
			wantCopies: []string{"tagger.app.g1", "tagger.app.g2"},
			wantReason: "Cached", wantCached: []int64{1, 2}, wantFinal: true, wantEvent: "Normal Cached",
		},
		{
			name:       "already cached: nothing to copy",
			tag:        func(t *v1alpha1.Tag) { t.Status.Generations[0].Cached = true },
			wantReason: "Cached", wantCached: []int64{1}, wantFinal: true,
		},
		{
			name:       "copy fails: backoff in status, pin untouched",
			copyErr:    errRegistryDown,
			wantCopies: []string{"tagger.app.g1"},
			wantReason: "CopyFailed", wantFinal: true, wantRetry: true, wantEvent: "Warning CopyFailed",
		},
		{
			name:       "spec.cache false: nothing copied, no finalizer",
			tag:        func(t *v1alpha1.Tag) { t.Spec.Cache = false },
			wantReason: "NotRequested",
		},
		{
			name:       "no bundled registry configured",
			noCopier:   true,
			wantReason: "NoBundledRegistry",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cl := reconcilertest.FakeClient(t, nil, newTag("app", c.tag))
			clock := t0
			cp := &fakeCopier{copyErr: c.copyErr, progress: imagecopy.Progress{Blobs: 3, BlobsDone: 2, Bytes: 300, BytesDone: 200}}
			var seam Copier = cp
			if c.noCopier {
				seam = nil
			}
			r, rec := newReconciler(cl, seam, &clock)
			res := reconcilertest.Reconcile(t, r, "app")
			got := reconcilertest.GetTag(t, cl, "app")

			if !slices.Equal(cp.copies, c.wantCopies) {
				t.Errorf("copies %v, want %v", cp.copies, c.wantCopies)
			}
			cond := meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionCached)
			if cond == nil || cond.Reason != c.wantReason {
				t.Errorf("Cached condition %+v, want reason %s", cond, c.wantReason)
			}
			var cached []int64
			for _, g := range got.Status.Generations {
				if g.Cached {
					cached = append(cached, g.Generation)
				}
			}
			if len(cached) != len(c.wantCached) {
				t.Errorf("cached generations %v, want %v", cached, c.wantCached)
			}
			if has := controllerutil.ContainsFinalizer(got, v1alpha1.CacheFinalizer); has != c.wantFinal {
				t.Errorf("finalizer present %v, want %v", has, c.wantFinal)
			}
			if c.wantRetry != (res.RequeueAfter > 0) {
				t.Errorf("RequeueAfter %v, want a retry: %v", res.RequeueAfter, c.wantRetry)
			}
			if c.wantRetry {
				cs := got.Status.Cache
				if cs == nil || cs.ConsecutiveFailures != 1 || cs.NextRetry == nil || !cs.NextRetry.Time.Equal(t0.Add(minBackoff)) ||
					cs.BlobsDone != 2 || cs.Blobs != 3 || cs.CopyStarted == nil {
					t.Errorf("status.cache after a failed copy: %+v, want 1 failure, retry at %v, progress 2/3, a start time", cs, t0.Add(minBackoff))
				}
				if got.Status.ServedGeneration != 1 || got.Status.Generations[0].Digest != d1 {
					t.Errorf("a failed copy changed the pin: %+v", got.Status)
				}
			}
			if c.wantEvent != "" && !hasEvent(reconcilertest.Events(rec), c.wantEvent) {
				t.Errorf("no %q Event", c.wantEvent)
			}
		})
	}
}
