package hooks

import (
	"context"
	"fmt"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/pkg/pins"
)

// ImageIndex is the field index on Tags by normalized spec.image
// ("docker.io/library/nginx:1.27"), the value ImageIndexValue computes. The
// Server lists Tags with it, so the cache behind Options.Client must have it.
// The Tag controller (pkg/tagcontroller) registers the very same index under
// this name on its manager; a Server running in that manager needs nothing
// more, and IndexTags must then not be called (an index cannot be registered
// twice).
const ImageIndex = "tagger.dev/normalized-image"

// ImageIndexValue is ImageIndex's index function: the Tag's spec.image
// normalized by pins.ParseReference, or nothing when it does not parse.
func ImageIndexValue(o client.Object) []string {
	tag, ok := o.(*v1alpha1.Tag)
	if !ok {
		return nil
	}
	ref, err := pins.ParseReference(tag.Spec.Image)
	if err != nil {
		return nil
	}
	return []string{ref.String()}
}

// IndexTags registers ImageIndex on mgr's cache, for a manager that does not
// run the Tag controller (which registers it itself). Call it before the
// manager starts.
func IndexTags(ctx context.Context, mgr manager.Manager) error {
	if err := mgr.GetFieldIndexer().IndexField(ctx, &v1alpha1.Tag{}, ImageIndex, ImageIndexValue); err != nil {
		return fmt.Errorf("index Tags by %s: %w", ImageIndex, err)
	}
	return nil
}
