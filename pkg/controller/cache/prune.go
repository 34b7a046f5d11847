package cache

import (
	"context"
	"errors"
	"fmt"

	digest "github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/pkg/controller/imagecopy"
	"github.com/tagger-project/tagger/pkg/controller/tagstatus"
	"github.com/tagger-project/tagger/pkg/pins"
)

// prune drops from the history the generations beyond spec.historyLimit
// that have a copy in the bundled registry, deleting the copies first. The
// check-and-serve controller prunes the others and leaves these here, so a
// copy is never forgotten in status before it is deleted. It returns the
// Tag as stored afterwards (nil: deleted meanwhile).
func (r *Reconciler) prune(ctx context.Context, tag *v1alpha1.Tag, log logrus.FieldLogger) (*v1alpha1.Tag, error) {
	limit := int(tag.Spec.HistoryLimit)
	if limit == 0 {
		limit = v1alpha1.DefaultHistoryLimit
	}
	kept, pruned := pins.Prune(tag.Status.Generations, limit, tag.Status.ServedGeneration)
	if len(pruned) == 0 {
		return tag, nil
	}
	// A failed prune is reported (Event, log); the manifests it could not
	// delete only cost space in the bundled registry.
	_ = r.pruneCache(ctx, tag, pruned, kept, log)
	drop := map[int64]string{}
	for _, g := range pruned {
		drop[g.Generation] = g.Digest
	}
	return tagstatus.Patch(ctx, r.Client, r.APIReader, tag.Name, func(t *v1alpha1.Tag) {
		gens := t.Status.Generations[:0:0]
		for _, g := range t.Status.Generations {
			if d, ok := drop[g.Generation]; !ok || d != g.Digest || g.Generation == t.Status.ServedGeneration {
				gens = append(gens, g)
			}
		}
		t.Status.Generations = gens
	})
}

// pruneCache deletes from the bundled registry the manifests that only
// pruned generations reach; a generation still kept by any Tag of the same
// cache repository (for this Tag: kept) keeps its tree and the layers it
// shares. Blobs go when the registry's garbage collector runs. A failure
// leaves orphans, never a kept generation broken; it is reported in an
// Event and returned.
func (r *Reconciler) pruneCache(ctx context.Context, tag *v1alpha1.Tag, pruned, kept []v1alpha1.Generation, log logrus.FieldLogger) error {
	if r.Copier == nil {
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
	var errs []error
	for repo, roots := range drop {
		res, err := r.Copier.Prune(ctx, repo, roots, r.keep(tag.Name, repo, kept))
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

// keep lists the roots every Tag keeps in repo. The Copier calls it once it
// holds the repository (no copy into it runs); it reads uncached, and a
// generation is in its Tag's status before its copy starts, so a copy that
// just finished is in the list.
func (r *Reconciler) keep(self, repo string, kept []v1alpha1.Generation) imagecopy.KeepFunc {
	return func(ctx context.Context) ([]digest.Digest, error) {
		var all v1alpha1.TagList
		if err := r.APIReader.List(ctx, &all); err != nil {
			return nil, fmt.Errorf("list Tags: %w", err)
		}
		var roots []digest.Digest
		for _, t := range all.Items {
			gens := t.Status.Generations
			if t.Name == self {
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
