// Package tagindex is the cache field index of Tags by normalized image, which
// the controller (conflicts) and the webhook receivers (matching pushes) both
// list Tags by.
package tagindex

import (
	"context"
	"fmt"

	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/pkg/pins"
)

// Image is the index name; its values are spec.image normalized by
// pins.ParseReference ("docker.io/library/nginx:1.27").
const Image = "tagger.dev/normalized-image"

// ImageValue is the index function: the Tag's normalized spec.image, or
// nothing when it does not parse.
func ImageValue(o client.Object) []string {
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

// Register adds the index to a cache before it starts. An index can be
// registered once per cache: the manager running the Tag controller has it.
func Register(ctx context.Context, indexer client.FieldIndexer) error {
	if err := indexer.IndexField(ctx, &v1alpha1.Tag{}, Image, ImageValue); err != nil {
		return fmt.Errorf("index Tags by %s: %w", Image, err)
	}
	return nil
}
