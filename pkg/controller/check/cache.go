package check

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	digest "github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/pkg/controller/imagecopy"
	"github.com/tagger-project/tagger/pkg/pins"
)

// copyTimeout bounds one generation's copy; an unfinished copy resumes on
// the next attempt without re-sending what is complete.
const copyTimeout = 30 * time.Minute

// cache copies the Tag's generations that are not cached yet into the
// bundled registry, the served one first. It returns when to retry after a
// failure (0: nothing to retry). A failed copy never changes the served pin:
// nodes then fetch the pinned digest from the upstream.
func (r *Reconciler) cache(ctx context.Context, tag *v1alpha1.Tag, ref pins.Reference, log logrus.FieldLogger) time.Duration {
	st := &tag.Status
	if !tag.Spec.Cache {
		meta := "spec.cache is false: nodes fetch content from the upstream by the pinned digest"
		r.setCondition(tag, v1alpha1.ConditionCached, metav1.ConditionFalse, "NotRequested", meta)
		return 0
	}
	if r.Cacher == nil {
		r.setCondition(tag, v1alpha1.ConditionCached, metav1.ConditionFalse, "NoBundledRegistry",
			"the controller runs without --registry-url; nothing can be cached")
		return 0
	}
	order := make([]int, 0, len(st.Generations))
	for i, g := range st.Generations {
		if g.Generation == st.ServedGeneration {
			order = append([]int{i}, order...)
		} else {
			order = append(order, i)
		}
	}
	for _, i := range order {
		g := &st.Generations[i]
		if g.Cached {
			continue
		}
		src, err := pins.ParseReference(g.Image)
		if err != nil {
			src = ref
		}
		creds, err := r.credentials(ctx, tag, src)
		if err == nil {
			cctx, cancel := context.WithTimeout(ctx, copyTimeout)
			var p imagecopy.Progress
			p, err = r.Cacher.Copy(cctx, src, digest.Digest(g.Digest), creds, cacheTag(tag.Name, g.Generation))
			cancel()
			if err == nil {
				g.Cached = true
				r.recordCopy(tag.Name, 0)
				msg := fmt.Sprintf("generation %d (%s) cached in the bundled registry: %d blobs, %d uploaded (%d bytes), %d already there, %d mounted",
					g.Generation, g.Digest, p.Blobs, p.Uploaded, p.BytesUploaded, p.Present, p.Mounted)
				r.event(tag, corev1.EventTypeNormal, "Cached", "Copy", msg)
				log.WithFields(logrus.Fields{"generation": g.Generation, "blobs": p.Blobs, "uploadedBytes": p.BytesUploaded}).Info("generation cached")
				continue
			}
			err = fmt.Errorf("%w (progress: blobs %d/%d, bytes %d/%d)", err, p.BlobsDone, p.Blobs, p.BytesDone, p.Bytes)
		}
		failures := r.recordCopy(tag.Name, 1)
		wait := backoff(failures)
		msg := fmt.Sprintf("copy of generation %d failed, retrying in %v: %v", g.Generation, wait, err)
		r.setCondition(tag, v1alpha1.ConditionCached, metav1.ConditionFalse, "CopyFailed", msg)
		r.event(tag, corev1.EventTypeWarning, "CopyFailed", "Copy", msg)
		log.WithError(err).WithField("generation", g.Generation).Warn("copy into the bundled registry failed")
		r.updateCachedGauge(tag.Name, st.Generations)
		return wait
	}
	r.updateCachedGauge(tag.Name, st.Generations)
	if g, ok := pins.Find(st.Generations, st.ServedGeneration); ok && g.Cached {
		r.setCondition(tag, v1alpha1.ConditionCached, metav1.ConditionTrue, "Cached",
			fmt.Sprintf("served generation %d is in the bundled registry", g.Generation))
	}
	return 0
}

// copyPending reports whether cache has a generation to copy.
func (r *Reconciler) copyPending(tag *v1alpha1.Tag) bool {
	if !tag.Spec.Cache || r.Cacher == nil {
		return false
	}
	for _, g := range tag.Status.Generations {
		if !g.Cached {
			return true
		}
	}
	return false
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

// recordCopy resets (delta 0) or increments a Tag's consecutive copy failures.
func (r *Reconciler) recordCopy(name string, delta int32) int32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.copyFailures == nil {
		r.copyFailures = map[string]int32{}
	}
	if delta == 0 {
		delete(r.copyFailures, name)
		return 0
	}
	r.copyFailures[name] += delta
	return r.copyFailures[name]
}

func (r *Reconciler) updateCachedGauge(name string, gens []v1alpha1.Generation) {
	n := 0
	for _, g := range gens {
		if g.Cached {
			n++
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cachedPerTag == nil {
		r.cachedPerTag = map[string]int{}
	}
	r.cachedPerTag[name] = n
	r.setCachedGaugeLocked()
}

func (r *Reconciler) forgetCache(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.copyFailures, name)
	delete(r.cachedPerTag, name)
	r.setCachedGaugeLocked()
}

func (r *Reconciler) setCachedGaugeLocked() {
	total := 0
	for _, n := range r.cachedPerTag {
		total += n
	}
	cachedGenerations.Set(float64(total))
}

// tagLister lists Tags for a prune's keep list: uncached when it can.
func (r *Reconciler) tagLister() client.Reader {
	if r.TagLister != nil {
		return r.TagLister
	}
	return r.Client
}

// pruneCache deletes from the bundled registry the manifests that only
// pruned generations reach; a generation still kept by any Tag of the same
// cache repository (for this Tag: kept) keeps its tree and the layers it
// shares. Blobs go when the registry's garbage collector runs. A failure
// leaves orphans for a later prune, never a kept generation broken; it is
// reported in an Event and returned.
func (r *Reconciler) pruneCache(ctx context.Context, tag *v1alpha1.Tag, pruned, kept []v1alpha1.Generation, log logrus.FieldLogger) error {
	if r.Cacher == nil {
		return nil
	}
	drop := map[string][]digest.Digest{} // cache repository -> roots
	for _, g := range pruned {
		if !g.Cached {
			continue
		}
		ref, err := pins.ParseReference(g.Image)
		if err != nil {
			continue
		}
		drop[ref.CacheRepository()] = append(drop[ref.CacheRepository()], digest.Digest(g.Digest))
	}
	if len(drop) == 0 {
		return nil
	}
	// The keep list is read once the Copier holds the repository (no copy
	// into it runs), and uncached: a generation is in its Tag's status
	// before its copy starts, so a copy that just finished is in the list.
	keep := func(repo string) imagecopy.KeepFunc {
		return func(ctx context.Context) ([]digest.Digest, error) {
			var all v1alpha1.TagList
			if err := r.tagLister().List(ctx, &all); err != nil {
				return nil, fmt.Errorf("list Tags: %w", err)
			}
			var roots []digest.Digest
			for _, t := range all.Items {
				gens := t.Status.Generations
				if t.Name == tag.Name {
					gens = kept // the kept history, not the stored object's
				}
				for _, g := range gens {
					if ref, err := pins.ParseReference(g.Image); err == nil && ref.CacheRepository() == repo {
						roots = append(roots, digest.Digest(g.Digest))
					}
				}
			}
			return roots, nil
		}
	}
	var errs []error
	for repo, roots := range drop {
		res, err := r.Cacher.Prune(ctx, repo, roots, keep(repo))
		if err != nil {
			msg := fmt.Sprintf("prune of %s from the bundled registry failed: %v", repo, err)
			r.event(tag, corev1.EventTypeWarning, "CachePruneFailed", "Prune", msg)
			log.WithError(err).WithField("repository", repo).Warn("cache prune failed")
			errs = append(errs, err)
			continue
		}
		log.WithFields(logrus.Fields{"repository": repo, "deleted": len(res.Deleted)}).Info("pruned generations from the bundled registry")
	}
	return errors.Join(errs...)
}
