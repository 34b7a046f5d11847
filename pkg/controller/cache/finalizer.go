package cache

import (
	"context"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/pkg/controller/tagstatus"
)

// needsFinalizer: the Tag's generations are, or are about to be, copied
// into the bundled registry.
func (r *Reconciler) needsFinalizer(tag *v1alpha1.Tag) bool {
	if r.Copier == nil {
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
// backoff for cleanupGiveUp from status.cache.cleanupStarted (so a new
// leader keeps the same clock), then given up on loudly.
func (r *Reconciler) finalize(ctx context.Context, tag *v1alpha1.Tag, log logrus.FieldLogger) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(tag, v1alpha1.CacheFinalizer) {
		r.setCached(tag.Name, nil)
		return ctrl.Result{}, nil
	}
	if r.Copier == nil {
		log.Warn("Tag deleted but the controller runs without --registry-url: its copies in the bundled registry are left in place")
	} else if err := r.pruneCache(ctx, tag, tag.Status.Generations, nil, log); err != nil {
		if wait, retry := r.cleanupFailed(ctx, tag); retry {
			log.WithError(err).WithField("retryIn", wait.String()).Warn("cache cleanup of deleted Tag failed; the Tag stays until it succeeds or gives up")
			return ctrl.Result{RequeueAfter: wait}, nil
		}
		msg := fmt.Sprintf("gave up removing the Tag's copies from the bundled registry after %v; delete them by hand (registry API DELETE of the tagger.%s.g* tags) or leave them to cost space: %v",
			cleanupGiveUp, tag.Name, err)
		r.event(tag, corev1.EventTypeWarning, "CacheCleanupAbandoned", "Finalize", msg)
		log.WithError(err).Error("cache cleanup of deleted Tag abandoned; releasing the finalizer")
	} else {
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
	r.setCached(tag.Name, nil)
	return ctrl.Result{}, nil
}

// cleanupFailed records a failed cleanup in status and says whether to
// retry, and when. The give-up clock starts at the first failure.
func (r *Reconciler) cleanupFailed(ctx context.Context, tag *v1alpha1.Tag) (time.Duration, bool) {
	now := r.now()
	cs := tag.Status.Cache
	if cs != nil && cs.CleanupStarted != nil && now.Sub(cs.CleanupStarted.Time) >= cleanupGiveUp {
		return 0, false
	}
	var wait time.Duration
	_, err := tagstatus.Patch(ctx, r.Client, r.APIReader, tag.Name, func(t *v1alpha1.Tag) {
		cs := copyStatus(t)
		if cs.CleanupStarted == nil {
			cs.CleanupStarted = &metav1.Time{Time: now.Truncate(time.Second)}
			cs.ConsecutiveFailures = 0
		}
		cs.ConsecutiveFailures++
		wait = backoff(cs.ConsecutiveFailures)
	})
	if err != nil {
		// The clock could not be stored; retry soon rather than give up on
		// a clock that never started.
		return minBackoff, true
	}
	return wait, true
}
