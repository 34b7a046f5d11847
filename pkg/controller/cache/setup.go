package cache

import (
	"reflect"

	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
)

// ControllerName names the caching controller in logs and metrics.
const ControllerName = "tag-cache"

// DefaultMaxConcurrent is the default of --max-concurrent-caches: copies
// are long and bandwidth-bound, so a few at once.
const DefaultMaxConcurrent = 2

// SetupWithManager registers the caching controller with maxConcurrent
// workers: at most that many Tags are copied at once, and never in the
// check-and-serve controller's workers.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager, maxConcurrent int) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named(ControllerName).
		For(&v1alpha1.Tag{}, builder.WithPredicates(predicate.Funcs{UpdateFunc: cacheRelevant})).
		// Tests and benchmarks start several managers in one process, which
		// the name check would refuse.
		WithOptions(controller.Options{MaxConcurrentReconciles: maxConcurrent, SkipNameValidation: ptr.To(true)}).
		Complete(r)
}

// cacheRelevant: an update this controller must act on. Its own progress
// writes (status.cache) are not; retries come from RequeueAfter.
func cacheRelevant(e event.UpdateEvent) bool {
	a, okA := e.ObjectOld.(*v1alpha1.Tag)
	b, okB := e.ObjectNew.(*v1alpha1.Tag)
	if !okA || !okB {
		return true
	}
	return a.Generation != b.Generation ||
		(a.DeletionTimestamp == nil) != (b.DeletionTimestamp == nil) ||
		!reflect.DeepEqual(a.Finalizers, b.Finalizers) ||
		a.Status.ServedGeneration != b.Status.ServedGeneration ||
		!reflect.DeepEqual(generationKeys(a), generationKeys(b))
}

// generationKeys is what of the history matters here: which digests, and
// which are cached.
func generationKeys(t *v1alpha1.Tag) []string {
	out := make([]string, 0, len(t.Status.Generations))
	for _, g := range t.Status.Generations {
		k := g.Digest
		if g.Cached {
			k += "+"
		}
		out = append(out, k)
	}
	return out
}
