package restart

import (
	"context"
	"fmt"

	"github.com/sirupsen/logrus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/pkg/controller/tagstatus"
)

// ControllerName names the restart controller in logs and metrics.
const ControllerName = "tag-restart"

// Waver runs one restart wave for a Tag's served generation (*Restarter).
type Waver interface {
	Restart(ctx context.Context, tag *v1alpha1.Tag, reason string, namespaceSelector, selector *metav1.LabelSelector) (Result, error)
}

// Reconciler is the restart controller: when a Tag with
// spec.rollout.restart serves a new generation, it restarts the workloads
// using its image once, then records the generation in
// status.rolledOutGeneration. It is level-based: the served and rolled-out
// generations in status say whether a wave is due, and a wave cut short
// (a crash, a failover) is run again, which patches only the workloads not
// yet marked for that generation (RestartedForAnnotation).
type Reconciler struct {
	// Client reads Tags from the cache and writes their status.
	Client client.Client
	// APIReader re-reads a Tag uncached before its status is patched.
	APIReader client.Reader
	Waver     Waver
	Log       logrus.FieldLogger
}

// Reconcile runs the restart wave a Tag's status says is due, if any.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var tag v1alpha1.Tag
	if err := r.Client.Get(ctx, req.NamespacedName, &tag); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("get Tag %s: %w", req.Name, err)
	}
	st := &tag.Status
	ro := tag.Spec.Rollout
	if !tag.DeletionTimestamp.IsZero() || ro == nil || !ro.Restart || st.ServedGeneration == 0 ||
		meta.IsStatusConditionTrue(st.Conditions, v1alpha1.ConditionConflict) || st.RolledOutGeneration == st.ServedGeneration {
		return ctrl.Result{}, nil
	}
	gen := st.ServedGeneration
	log := r.Log.WithFields(logrus.Fields{"tag": tag.Name, "image": tag.Spec.Image, "generation": gen})
	// The first generation served only sets the baseline: pinning what is
	// running restarts nothing.
	if st.RolledOutGeneration != 0 {
		reason := fmt.Sprintf("served generation %d -> %d", st.RolledOutGeneration, gen)
		res, err := r.Waver.Restart(ctx, &tag, reason, ro.NamespaceSelector, ro.Selector)
		if err != nil {
			// Retried with the controller's backoff; restarts already done
			// are not repeated.
			log.WithError(err).WithField("restarted", len(res.Restarted)).Warn("workload restart wave incomplete; retrying")
			return ctrl.Result{}, fmt.Errorf("restart workloads for Tag %s generation %d: %w", tag.Name, gen, err)
		}
		log.WithFields(logrus.Fields{"restarted": len(res.Restarted), "skipped": len(res.Skipped)}).Info("restarted workloads")
	}
	_, err := tagstatus.Patch(ctx, r.Client, r.APIReader, tag.Name, func(t *v1alpha1.Tag) {
		t.Status.RolledOutGeneration = gen
	})
	return ctrl.Result{}, err
}

// SetupWithManager registers the restart controller. Waves share the
// Restarter's rate limit, so a couple of workers suffice.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager, maxConcurrent int) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named(ControllerName).
		For(&v1alpha1.Tag{}, builder.WithPredicates(predicate.Funcs{UpdateFunc: restartRelevant})).
		// Tests and benchmarks start several managers in one process, which
		// the name check would refuse.
		WithOptions(controller.Options{MaxConcurrentReconciles: maxConcurrent, SkipNameValidation: ptr.To(true)}).
		Complete(r)
}

// restartRelevant: a served-generation change, a spec change (rollout
// turned on, selectors) or a conflict settled; status writes of the other
// controllers are not.
func restartRelevant(e event.UpdateEvent) bool {
	a, okA := e.ObjectOld.(*v1alpha1.Tag)
	b, okB := e.ObjectNew.(*v1alpha1.Tag)
	if !okA || !okB {
		return true
	}
	return a.Generation != b.Generation ||
		a.Status.ServedGeneration != b.Status.ServedGeneration ||
		a.Status.RolledOutGeneration != b.Status.RolledOutGeneration ||
		meta.IsStatusConditionTrue(a.Status.Conditions, v1alpha1.ConditionConflict) !=
			meta.IsStatusConditionTrue(b.Status.Conditions, v1alpha1.ConditionConflict)
}
