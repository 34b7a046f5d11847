package imagecopy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sirupsen/logrus"

	"github.com/tagger-project/tagger/pkg/registryclient"
)

// PruneResult reports a Prune.
type PruneResult struct {
	// Deleted lists the manifests this Prune deleted (roots and child
	// manifests), children before the index that listed them. Manifests
	// that were already gone are not listed.
	Deleted []digest.Digest
	// Kept counts the distinct manifests (roots and children) the keep
	// roots reach in the cache repository; none of them is deleted.
	Kept int
}

// Prune deletes from the bundled registry's repository cacheRepo the
// manifests of the generations it no longer keeps: every manifest reachable
// from a drop root (an index or a manifest) and from no keep root. keep
// must return every root still kept in cacheRepo, by any Tag; a root in
// both is kept.
//
// The trees are read from the bundled registry itself, each manifest
// verified against its digest. Nothing is deleted unless every keep tree
// was read: a keep root the repository does not have protects nothing
// (there is nothing of it to protect beyond what a copy would push again),
// but any other failure to read one aborts the Prune. A drop root that
// cannot be read is skipped and reported in the error; the others are
// pruned. Manifests are deleted children first (DELETE by digest, which
// also removes the tags on it), so an interrupted Prune leaves no manifest
// orphaned and a second run finishes the work; a manifest already gone
// (404) counts as deleted.
//
// Blobs are left to the registry's garbage collector (`registry
// garbage-collect`), which removes the blobs no remaining manifest
// references.
//
// keep is called for the keep roots once no Copy into cacheRepo runs, and
// Copies into cacheRepo wait until the Prune is done: a root a copy has
// just pushed is in the keep list as long as keep reads it from where the
// copier's user records a generation before copying it. An error from keep
// aborts the Prune before anything is deleted.
func (c *Copier) Prune(ctx context.Context, cacheRepo string, drop []digest.Digest, keep KeepFunc) (PruneResult, error) {
	start := time.Now()
	log := c.logger().WithFields(logrus.Fields{"repository": cacheRepo, "drop": len(drop)})
	var res PruneResult
	var err error
	c.locks.exclusive(cacheRepo, func() {
		var roots []digest.Digest
		if roots, err = keep(ctx); err != nil {
			err = fmt.Errorf("list the roots to keep: %w", err)
			return
		}
		log = log.WithField("keep", len(roots))
		res, err = c.prune(ctx, log, cacheRepo, drop, roots)
	})
	log = log.WithFields(logrus.Fields{"deleted": len(res.Deleted), "kept": res.Kept, "duration": time.Since(start).String()})
	if err != nil {
		log.WithError(err).Warn("prune of bundled registry failed")
		return res, fmt.Errorf("prune %s: %w", cacheRepo, err)
	}
	log.Info("pruned bundled registry")
	return res, nil
}

// KeepFunc returns the roots a Prune must keep in its cache repository:
// every generation still kept there, by any Tag.
type KeepFunc func(ctx context.Context) ([]digest.Digest, error)

// Keep is a KeepFunc of a fixed list.
func Keep(roots ...digest.Digest) KeepFunc {
	return func(context.Context) ([]digest.Digest, error) { return roots, nil }
}

func (c *Copier) prune(ctx context.Context, log logrus.FieldLogger, repo string, drop, keep []digest.Digest) (PruneResult, error) {
	var res PruneResult
	if repo == "" {
		return res, errors.New("empty cache repository")
	}
	for _, d := range append(append([]digest.Digest{}, drop...), keep...) {
		if err := d.Validate(); err != nil {
			return res, fmt.Errorf("root digest %q: %w", d, err)
		}
	}
	reg, err := registryclient.NewEndpoint(c.Registry, c.HTTPClient)
	if err != nil {
		return res, err
	}

	// Everything the keep roots reach is protected. One walk shares the
	// seen set, so a manifest under several keep roots is read once.
	kept := map[digest.Digest]bool{}
	kw := &pruneWalk{reg: reg, repo: repo, seen: kept}
	for _, root := range keep {
		if kept[root] {
			continue
		}
		missing, err := kw.walk(ctx, root)
		if err != nil {
			return res, fmt.Errorf("read kept root %s: %w", root, err)
		}
		if missing {
			log.WithField("root", root.String()).Warn("kept root is not in the bundled registry")
		}
	}
	res.Kept = len(kw.present)

	// Each drop root's tree, children first, minus what is kept.
	var errs []error
	deleted := map[digest.Digest]bool{}
	for _, root := range drop {
		if kept[root] {
			log.WithField("root", root.String()).Debug("dropped root is also kept; not deleting it")
			continue
		}
		if deleted[root] {
			continue
		}
		dw := &pruneWalk{reg: reg, repo: repo, seen: map[digest.Digest]bool{}, skip: kept}
		if _, err := dw.walk(ctx, root); err != nil {
			errs = append(errs, fmt.Errorf("read dropped root %s: %w", root, err))
			continue
		}
		// dw.present is in post-order: children before their index. Stop
		// at the first failure: deleting the index after failing on a child
		// would orphan the child for good, while stopping leaves the index
		// for the next run to find it by.
		for _, d := range dw.present {
			if kept[d] || deleted[d] {
				continue
			}
			gone, err := deleteManifest(ctx, reg, repo, d)
			if err != nil {
				errs = append(errs, fmt.Errorf("delete manifest %s of dropped root %s: %w", d, root, err))
				return res, errors.Join(errs...)
			}
			deleted[d] = true
			if !gone {
				res.Deleted = append(res.Deleted, d)
				log.WithFields(logrus.Fields{"root": root.String(), "manifest": d.String()}).Debug("manifest deleted")
			}
		}
	}
	return res, errors.Join(errs...)
}

// pruneWalk collects the manifests a root reaches in the bundled registry.
type pruneWalk struct {
	reg  *registryclient.Endpoint
	repo string
	// seen holds every manifest digest met, present or not.
	seen map[digest.Digest]bool
	// skip holds manifests not to visit (nor list) at all: the kept ones.
	skip map[digest.Digest]bool
	// present lists those the registry has, children before parents.
	present []digest.Digest
}

// walk visits root's tree. missing reports that root itself is not in the
// repository; a missing child manifest is skipped the same way (it is
// already gone, or was never copied).
func (w *pruneWalk) walk(ctx context.Context, root digest.Digest) (missing bool, err error) {
	return w.visit(ctx, root, 0)
}

func (w *pruneWalk) visit(ctx context.Context, d digest.Digest, depth int) (bool, error) {
	if w.seen[d] || w.skip[d] {
		return false, nil
	}
	w.seen[d] = true
	if depth > maxDepth {
		return false, fmt.Errorf("manifest %s: indexes nested deeper than %d", d, maxDepth)
	}
	children, err := manifestChildren(ctx, w.reg, w.repo, d)
	if registryclient.IsNotFound(err) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	for _, c := range children {
		if _, err := w.visit(ctx, c, depth+1); err != nil {
			return false, err
		}
	}
	w.present = append(w.present, d)
	return false, nil
}

// manifestChildren GETs manifest d of repo, verified against d, and returns
// the manifests it lists (none for an image manifest). A 404 is an error
// that registryclient.IsNotFound.
func manifestChildren(ctx context.Context, reg *registryclient.Endpoint, repo string, d digest.Digest) ([]digest.Digest, error) {
	body, desc, err := reg.FetchManifest(ctx, repo, d)
	if err != nil {
		return nil, err
	}
	switch desc.MediaType {
	case registryclient.MediaTypeOCIManifest, registryclient.MediaTypeDockerManifest:
		return nil, nil
	}
	var m struct {
		Manifests []ocispec.Descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("manifest %s of %s: decode: %w", d, repo, err)
	}
	out := make([]digest.Digest, 0, len(m.Manifests))
	for i, c := range m.Manifests {
		if err := c.Digest.Validate(); err != nil {
			return nil, fmt.Errorf("manifest %s of %s: entry %d: digest %q: %w", d, repo, i, c.Digest, err)
		}
		out = append(out, c.Digest)
	}
	return out, nil
}

// deleteManifest deletes manifest d of repo by digest; gone reports it was
// already absent. A 405 says why: the registry has deletes off.
func deleteManifest(ctx context.Context, reg *registryclient.Endpoint, repo string, d digest.Digest) (gone bool, err error) {
	gone, err = reg.DeleteManifest(ctx, repo, d)
	var re *registryclient.Error
	if errors.As(err, &re) && re.StatusCode == http.StatusMethodNotAllowed {
		return false, fmt.Errorf("%w (is storage.delete.enabled set in the bundled registry's config?)", err)
	}
	return gone, err
}
