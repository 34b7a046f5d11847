package hooks

import (
	"context"

	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/tagger-project/tagger/pkg/controller/tagindex"
)

// ImageIndex is the field index the Server lists Tags by (tagindex.Image),
// so the cache behind Options.Client must have it. The Tag controller
// registers it on its manager; a Server running in that manager needs
// nothing more, and IndexTags must then not be called.
const ImageIndex = tagindex.Image

// IndexTags registers ImageIndex on mgr's cache, for a manager that does not
// run the Tag controller. Call it before the manager starts.
func IndexTags(ctx context.Context, mgr manager.Manager) error {
	return tagindex.Register(ctx, mgr.GetFieldIndexer())
}
