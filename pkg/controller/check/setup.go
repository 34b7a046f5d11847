package check

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/pkg/controller/tagindex"
	"github.com/tagger-project/tagger/pkg/pins"
)

// SetupWithManager registers the reconciler. maxConcurrent bounds the checks
// in flight at once.
func (r *Reconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager, maxConcurrent int) error {
	if err := tagindex.Register(ctx, mgr.GetFieldIndexer()); err != nil {
		return err
	}
	// Status writes (ours and the other controllers') start nothing: only
	// creates and spec (generation) and annotation changes do; timed
	// re-checks come from RequeueAfter. A deleted Tag is the caching
	// controller's to clean up.
	changed := predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{})
	// A Tag appearing or going away can change who wins its image.
	createDelete := predicate.Funcs{
		CreateFunc:  func(event.CreateEvent) bool { return true },
		DeleteFunc:  func(event.DeleteEvent) bool { return true },
		UpdateFunc:  func(e event.UpdateEvent) bool { return imageChanged(e.ObjectOld, e.ObjectNew) },
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("tag").
		For(&v1alpha1.Tag{}, builder.WithPredicates(changed)).
		Watches(&v1alpha1.Tag{}, handler.EnqueueRequestsFromMapFunc(r.sameImage), builder.WithPredicates(createDelete)).
		// The process runs one Tag controller; tests and benchmarks start
		// several managers in one process, which the name check would refuse.
		WithOptions(controller.Options{MaxConcurrentReconciles: maxConcurrent, SkipNameValidation: ptr.To(true)}).
		Complete(r)
}

func imageChanged(a, b client.Object) bool {
	na, nb := tagindex.ImageValue(a), tagindex.ImageValue(b)
	return len(na) != len(nb) || (len(na) == 1 && na[0] != nb[0])
}

// sameImage maps a Tag event to the other Tags claiming the same image.
func (r *Reconciler) sameImage(ctx context.Context, o client.Object) []reconcile.Request {
	imgs := tagindex.ImageValue(o)
	if len(imgs) == 0 {
		return nil
	}
	var list v1alpha1.TagList
	if err := r.Client.List(ctx, &list, client.MatchingFields{tagindex.Image: imgs[0]}); err != nil {
		r.Log.WithError(err).WithField("image", imgs[0]).Warn("list Tags for conflict check")
		return nil
	}
	var out []reconcile.Request
	for _, t := range list.Items {
		if t.Name != o.GetName() {
			out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Name: t.Name}})
		}
	}
	return out
}

// conflictWinner returns the name of an older Tag that wins ref over tag, or "".
func (r *Reconciler) conflictWinner(ctx context.Context, tag *v1alpha1.Tag, ref pins.Reference) (string, error) {
	var list v1alpha1.TagList
	if err := r.Client.List(ctx, &list, client.MatchingFields{tagindex.Image: ref.String()}); err != nil {
		return "", fmt.Errorf("list Tags for image %s: %w", ref, err)
	}
	claims := make([]pins.Claim, 0, len(list.Items)+1)
	self := pins.Claim{Name: tag.Name, Image: ref.String(), Created: tag.CreationTimestamp.Time}
	claims = append(claims, self)
	for _, t := range list.Items {
		if t.Name != tag.Name && t.DeletionTimestamp == nil {
			claims = append(claims, pins.Claim{Name: t.Name, Image: ref.String(), Created: t.CreationTimestamp.Time})
		}
	}
	if w := pins.Winners(claims)[ref.String()]; w != tag.Name {
		return w, nil
	}
	return "", nil
}
