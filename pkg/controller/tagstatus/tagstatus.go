// Package tagstatus writes a Tag's status for the controllers that share it.
// Each controller owns some status fields and conditions (docs/design.md,
// "Controllers"); a write re-reads the Tag, applies only the writer's own
// fields to what is stored and patches with the resourceVersion it read, so
// no controller overwrites a field another one wrote meanwhile.
package tagstatus

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/pkg/pins"
)

// Patch applies mutate to a fresh copy of the Tag name (read through
// reader, uncached, so a retry sees the write it conflicted with) and
// patches its status when mutate changed it, retrying on conflict. It
// returns the Tag as written, or nil when the Tag is gone.
func Patch(ctx context.Context, c client.Client, reader client.Reader, name string, mutate func(*v1alpha1.Tag)) (*v1alpha1.Tag, error) {
	var out *v1alpha1.Tag
	err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		var tag v1alpha1.Tag
		if err := reader.Get(ctx, client.ObjectKey{Name: name}, &tag); err != nil {
			return err
		}
		base := tag.DeepCopy()
		mutate(&tag)
		Derive(&tag)
		out = &tag
		if equality.Semantic.DeepEqual(base.Status, tag.Status) {
			return nil
		}
		return c.Status().Patch(ctx, &tag, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
	})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("patch status of Tag %s: %w", name, err)
	}
	return out, nil
}

// Derive fills the status fields the printer columns show, which follow
// from fields several controllers own (the served generation, the history
// and its cached flags); every writer recomputes them from what it writes.
func Derive(tag *v1alpha1.Tag) {
	st := &tag.Status
	st.LatestGeneration = 0
	if g, ok := pins.Newest(st.Generations); ok {
		st.LatestGeneration = g.Generation
	}
	st.ServedShortDigest = ShortDigest(st.ServedDigest)
	st.CachedServed = false
	if g, ok := pins.Find(st.Generations, st.ServedGeneration); ok {
		st.CachedServed = g.Cached
	}
}

// ShortDigest shortens a digest for the printer column.
func ShortDigest(d string) string {
	const n = len("sha256:") + 12
	if len(d) > n {
		return d[:n]
	}
	return d
}

// SetCondition sets one condition, stamped with the Tag's generation.
func SetCondition(tag *v1alpha1.Tag, typ string, status metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(&tag.Status.Conditions, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: tag.Generation,
	})
}
