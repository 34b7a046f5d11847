package cache

import (
	"context"
	"fmt"
	"strconv"
	"time"

	digest "github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/pkg/controller/imagecopy"
	"github.com/tagger-project/tagger/pkg/controller/pullsecret"
	"github.com/tagger-project/tagger/pkg/controller/tagstatus"
	"github.com/tagger-project/tagger/pkg/pins"
)

// copyAll copies the Tag's uncached generations, the served one first, one
// at a time, with a status write before and after each. A failed copy
// never changes the served pin (nodes then fetch the pinned digest from the
// upstream); it is retried at status.cache.nextRetry.
func (r *Reconciler) copyAll(ctx context.Context, tag *v1alpha1.Tag, log logrus.FieldLogger) (ctrl.Result, error) {
	if !tag.Spec.Cache || r.Copier == nil {
		r.setCached(tag.Name, tag.Status.Generations)
		reason, msg := "NotRequested", "spec.cache is false: nodes fetch content from the upstream by the pinned digest"
		if tag.Spec.Cache {
			reason, msg = "NoBundledRegistry", "the controller runs without --registry-url; nothing can be cached"
		}
		_, err := tagstatus.Patch(ctx, r.Client, r.APIReader, tag.Name, func(t *v1alpha1.Tag) {
			tagstatus.SetCondition(t, v1alpha1.ConditionCached, metav1.ConditionFalse, reason, msg)
		})
		return ctrl.Result{}, err
	}
	for tag != nil && tag.Spec.Cache {
		r.setCached(tag.Name, tag.Status.Generations)
		if wait := r.retryIn(tag); wait > 0 {
			return ctrl.Result{RequeueAfter: wait}, nil
		}
		g, ok := nextCopy(tag)
		if !ok {
			_, err := tagstatus.Patch(ctx, r.Client, r.APIReader, tag.Name, r.copiedAll)
			return ctrl.Result{}, err
		}
		var err error
		if tag, err = r.copyOne(ctx, tag, g, log); err != nil {
			return ctrl.Result{}, err
		}
	}
	return ctrl.Result{}, nil
}

// retryIn is how long the backoff of the last failed copy still runs.
func (r *Reconciler) retryIn(tag *v1alpha1.Tag) time.Duration {
	cs := tag.Status.Cache
	if cs == nil || cs.NextRetry == nil {
		return 0
	}
	return max(cs.NextRetry.Sub(r.now()), 0)
}

// nextCopy is the generation to copy next: the served one, else the newest
// not cached.
func nextCopy(tag *v1alpha1.Tag) (v1alpha1.Generation, bool) {
	if g, ok := pins.Find(tag.Status.Generations, tag.Status.ServedGeneration); ok && !g.Cached {
		return g, true
	}
	for _, g := range tag.Status.Generations {
		if !g.Cached {
			return g, true
		}
	}
	return v1alpha1.Generation{}, false
}

// copiedAll reports a Tag whose generations are all in the bundled registry.
func (r *Reconciler) copiedAll(t *v1alpha1.Tag) {
	if cs := t.Status.Cache; cs != nil {
		cs.NextRetry = nil
	}
	if g, ok := pins.Find(t.Status.Generations, t.Status.ServedGeneration); ok && g.Cached {
		tagstatus.SetCondition(t, v1alpha1.ConditionCached, metav1.ConditionTrue, "Cached",
			fmt.Sprintf("served generation %d is in the bundled registry", g.Generation))
	}
}

// copyOne runs one attempt to copy g and records its outcome. It returns
// the Tag as stored afterwards (nil: deleted meanwhile).
func (r *Reconciler) copyOne(ctx context.Context, tag *v1alpha1.Tag, g v1alpha1.Generation, log logrus.FieldLogger) (*v1alpha1.Tag, error) {
	log = log.WithField("generation", g.Generation)
	started := r.now()
	tag, err := tagstatus.Patch(ctx, r.Client, r.APIReader, tag.Name, func(t *v1alpha1.Tag) {
		cs := copyStatus(t)
		if cs.Generation != g.Generation || cs.CopyStarted == nil {
			// Kept across attempts and failovers: the copy's age is since its first attempt.
			*cs = v1alpha1.CacheStatus{Generation: g.Generation, CopyStarted: &metav1.Time{Time: started.Truncate(time.Second)},
				ConsecutiveFailures: cs.ConsecutiveFailures, CleanupStarted: cs.CleanupStarted}
		}
		if served, _ := pins.Find(t.Status.Generations, t.Status.ServedGeneration); !served.Cached {
			tagstatus.SetCondition(t, v1alpha1.ConditionCached, metav1.ConditionFalse, "Copying",
				fmt.Sprintf("copying generation %d (%s) into the bundled registry", g.Generation, g.Digest))
		}
	})
	if err != nil || tag == nil {
		return nil, err
	}
	p, err := r.attempt(ctx, tag, g)
	if err != nil {
		return r.copyFailed(ctx, tag, g, p, err, log)
	}
	return r.copied(ctx, tag, g, p, log)
}

// attempt copies g once, bounded by copyTimeout.
func (r *Reconciler) attempt(ctx context.Context, tag *v1alpha1.Tag, g v1alpha1.Generation) (imagecopy.Progress, error) {
	src, err := pins.ParseReference(g.Image)
	if err != nil {
		return imagecopy.Progress{}, fmt.Errorf("generation %d names image %q: %w", g.Generation, g.Image, err)
	}
	creds, err := pullsecret.Source{Reader: r.APIReader, Namespace: r.PullSecretNamespace}.Credentials(ctx, tag, src)
	if err != nil {
		return imagecopy.Progress{}, err
	}
	cctx, cancel := context.WithTimeout(ctx, copyTimeout)
	defer cancel()
	copiesInFlight.Inc()
	defer copiesInFlight.Dec()
	return r.Copier.Copy(cctx, src, digest.Digest(g.Digest), creds, cacheTag(tag.Name, g.Generation))
}

// copied marks g cached. A generation the history dropped while it was
// being copied has its copy pruned at once, so it leaves no orphan.
func (r *Reconciler) copied(ctx context.Context, tag *v1alpha1.Tag, g v1alpha1.Generation, p imagecopy.Progress, log logrus.FieldLogger) (*v1alpha1.Tag, error) {
	found := false
	var took time.Duration
	out, err := tagstatus.Patch(ctx, r.Client, r.APIReader, tag.Name, func(t *v1alpha1.Tag) {
		found = false
		for i := range t.Status.Generations {
			if x := &t.Status.Generations[i]; x.Generation == g.Generation && x.Digest == g.Digest {
				x.Cached, found = true, true
			}
		}
		cs := copyStatus(t)
		if cs.CopyStarted != nil {
			took = r.now().Sub(cs.CopyStarted.Time).Truncate(time.Second)
		}
		setProgress(cs, p)
		cs.ConsecutiveFailures, cs.NextRetry = 0, nil
	})
	if err != nil || out == nil {
		return nil, err
	}
	if !found {
		log.Info("generation left the history while it was copied; pruning its copy")
		g.Cached = true
		_ = r.pruneCache(ctx, out, []v1alpha1.Generation{g}, out.Status.Generations, log)
		return out, nil
	}
	msg := fmt.Sprintf("generation %d (%s) cached in the bundled registry in %v: %d blobs, %d uploaded (%d bytes), %d already there, %d mounted",
		g.Generation, g.Digest, took, p.Blobs, p.Uploaded, p.BytesUploaded, p.Present, p.Mounted)
	r.event(out, corev1.EventTypeNormal, "Cached", "Copy", msg)
	log.WithFields(logrus.Fields{"blobs": p.Blobs, "uploadedBytes": p.BytesUploaded}).Info("generation cached")
	return out, nil
}

// copyFailed counts the failure and schedules the retry in status.
func (r *Reconciler) copyFailed(ctx context.Context, tag *v1alpha1.Tag, g v1alpha1.Generation, p imagecopy.Progress, cerr error, log logrus.FieldLogger) (*v1alpha1.Tag, error) {
	var msg string
	out, err := tagstatus.Patch(ctx, r.Client, r.APIReader, tag.Name, func(t *v1alpha1.Tag) {
		cs := copyStatus(t)
		setProgress(cs, p)
		cs.ConsecutiveFailures++
		wait := backoff(cs.ConsecutiveFailures)
		cs.NextRetry = &metav1.Time{Time: r.now().Add(wait).Truncate(time.Second)}
		msg = fmt.Sprintf("copy of generation %d failed (attempt %d, blobs %d/%d, bytes %d/%d), retrying in %v: %v",
			g.Generation, cs.ConsecutiveFailures, p.BlobsDone, p.Blobs, p.BytesDone, p.Bytes, wait, cerr)
		tagstatus.SetCondition(t, v1alpha1.ConditionCached, metav1.ConditionFalse, "CopyFailed", msg)
	})
	if err != nil || out == nil {
		return nil, err
	}
	r.event(out, corev1.EventTypeWarning, "CopyFailed", "Copy", msg)
	log.WithError(cerr).Warn("copy into the bundled registry failed")
	return out, nil
}

func copyStatus(t *v1alpha1.Tag) *v1alpha1.CacheStatus {
	if t.Status.Cache == nil {
		t.Status.Cache = &v1alpha1.CacheStatus{}
	}
	return t.Status.Cache
}

func setProgress(cs *v1alpha1.CacheStatus, p imagecopy.Progress) {
	cs.Blobs, cs.BlobsDone = int32(p.Blobs), int32(p.BlobsDone)
	cs.Bytes, cs.BytesDone = p.Bytes, p.BytesDone
}

// cacheTag names a generation's copy in its cache repository, so the
// registry keeps it until retention deletes the tag.
func cacheTag(tagName string, generation int64) string {
	suffix := ".g" + strconv.FormatInt(generation, 10)
	name := "tagger." + tagName
	if max := 128 - len(suffix); len(name) > max {
		name = name[:max]
	}
	return name + suffix
}
