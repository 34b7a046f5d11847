package check

import (
	"context"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
)

// cleanupGiveUp is how long a deleted Tag's cache cleanup is retried before
// the finalizer is released anyway: a bundled registry that stays down must
// not keep a Tag (and an uninstall) from going away. What could not be
// deleted is logged and reported in an Event.
const cleanupGiveUp = 10 * time.Minute

// needsFinalizer: the Tag's generations are, or are about to be, copied
// into the bundled registry.
func (r *Reconciler) needsFinalizer(tag *v1alpha1.Tag) bool {
	if r.Cacher == nil {
		return false
	}
	if tag.Spec.Cache {
		return true
	}
	for _, g := range tag.Status.Generations {
		if g.Cached {
			return true
		}
	}
	return false
}

// ensureFinalizer adds the cache finalizer before anything is copied, so no
// copy can outlive its Tag unnoticed. The patch refreshes tag in place.
func (r *Reconciler) ensureFinalizer(ctx context.Context, tag *v1alpha1.Tag) error {
	if !r.needsFinalizer(tag) || controllerutil.ContainsFinalizer(tag, v1alpha1.CacheFinalizer) {
		return nil
	}
	base := tag.DeepCopy()
	controllerutil.AddFinalizer(tag, v1alpha1.CacheFinalizer)
	if err := r.Client.Patch(ctx, tag, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("add finalizer %s to Tag %s: %w", v1alpha1.CacheFinalizer, tag.Name, err)
	}
	return nil
}

// finalize runs for a Tag being deleted: it removes every cached generation
// of the Tag from the bundled registry (manifests other Tags still keep
// stay), then releases the finalizer. A failing registry is retried with
// backoff for cleanupGiveUp, then given up on loudly.
func (r *Reconciler) finalize(ctx context.Context, tag *v1alpha1.Tag, log logrus.FieldLogger) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(tag, v1alpha1.CacheFinalizer) {
		return ctrl.Result{}, nil
	}
	var err error
	if r.Cacher == nil {
		log.Warn("Tag deleted but the controller runs without --registry-url: its copies in the bundled registry are left in place")
	} else {
		err = r.pruneCache(ctx, tag, tag.Status.Generations, nil, log)
	}
	if err != nil {
		first := r.cleanupFailed(tag.Name)
		if since := r.now().Sub(first); since < cleanupGiveUp {
			wait := backoff(r.recordCopy(tag.Name, 1))
			log.WithError(err).WithField("retryIn", wait.String()).Warn("cache cleanup of deleted Tag failed; the Tag stays until it succeeds or gives up")
			return ctrl.Result{RequeueAfter: wait}, nil
		}
		msg := fmt.Sprintf("gave up removing the Tag's copies from the bundled registry after %v; delete them by hand (registry API DELETE of the tagger.%s.g* tags) or leave them to cost space: %v",
			cleanupGiveUp, tag.Name, err)
		r.event(tag, corev1.EventTypeWarning, "CacheCleanupAbandoned", "Finalize", msg)
		log.WithError(err).Error("cache cleanup of deleted Tag abandoned; releasing the finalizer")
	} else if r.Cacher != nil {
		log.Info("removed the deleted Tag's copies from the bundled registry")
	}
	base := tag.DeepCopy()
	controllerutil.RemoveFinalizer(tag, v1alpha1.CacheFinalizer)
	if err := r.Client.Patch(ctx, tag, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
		if client.IgnoreNotFound(err) == nil {
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("remove finalizer %s from Tag %s: %w", v1alpha1.CacheFinalizer, tag.Name, err)
	}
	r.forgetCleanup(tag.Name)
	r.forgetCache(tag.Name)
	return ctrl.Result{}, nil
}

// cleanupFailed records a failed cleanup and returns when the first one was.
func (r *Reconciler) cleanupFailed(name string) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cleanupSince == nil {
		r.cleanupSince = map[string]time.Time{}
	}
	if t, ok := r.cleanupSince[name]; ok {
		return t
	}
	r.cleanupSince[name] = r.now()
	return r.cleanupSince[name]
}

func (r *Reconciler) forgetCleanup(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.cleanupSince, name)
}
