package imagecopy

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/tagger-project/tagger/pkg/pins"
	"github.com/tagger-project/tagger/pkg/registryclient"
)

// maxDepth bounds index nesting (an index of indexes is legal but rare).
const maxDepth = 4

// manifest is a fetched, digest-verified manifest.
type manifest struct {
	desc registryclient.Descriptor
	body []byte
}

// tree is a generation's content: manifests children first (the root is
// last), and the unique blobs they reference.
type tree struct {
	manifests []manifest
	blobs     []ocispec.Descriptor
}

// walk fetches the root manifest and, for an index, every manifest it
// lists, verifying each against its digest, and collects config and layer
// blobs, deduplicated by digest.
// fetchFunc reads a manifest by digest, verified against it.
type fetchFunc func(ctx context.Context, d digest.Digest) ([]byte, registryclient.Descriptor, error)

// upstreamFetch reads manifests from src's upstream repository.
func (c *Copier) upstreamFetch(src pins.Reference, creds registryclient.Credentials) fetchFunc {
	return func(ctx context.Context, d digest.Digest) ([]byte, registryclient.Descriptor, error) {
		return c.Upstream.FetchManifest(ctx, src, d, creds)
	}
}

func walk(ctx context.Context, fetch fetchFunc, root digest.Digest) (*tree, error) {
	t := &tree{}
	seenManifest := map[digest.Digest]bool{}
	blobSize := map[digest.Digest]int64{}

	addBlob := func(owner digest.Digest, d ocispec.Descriptor) error {
		if err := d.Digest.Validate(); err != nil {
			return fmt.Errorf("manifest %s: blob %q: %w", owner, d.Digest, err)
		}
		if d.Size < 0 {
			return fmt.Errorf("manifest %s: blob %s: negative size %d", owner, d.Digest, d.Size)
		}
		if nonDistributable(d) {
			// Fetched by clients from its URLs; the registry does not ask for it.
			return nil
		}
		if s, ok := blobSize[d.Digest]; ok {
			if s != d.Size {
				return fmt.Errorf("manifest %s: blob %s listed with sizes %d and %d", owner, d.Digest, s, d.Size)
			}
			return nil
		}
		blobSize[d.Digest] = d.Size
		t.blobs = append(t.blobs, d)
		return nil
	}

	var visit func(d digest.Digest, want *ocispec.Descriptor, depth int) error
	visit = func(d digest.Digest, want *ocispec.Descriptor, depth int) error {
		if seenManifest[d] {
			return nil
		}
		seenManifest[d] = true
		if depth > maxDepth {
			return fmt.Errorf("manifest %s: indexes nested deeper than %d", d, maxDepth)
		}
		body, desc, err := fetch(ctx, d)
		if err != nil {
			return err
		}
		if want != nil && want.Size != desc.Size {
			return fmt.Errorf("manifest %s: %w (index says %d bytes, got %d)", d, ErrSizeMismatch, want.Size, desc.Size)
		}
		switch desc.MediaType {
		case registryclient.MediaTypeOCIIndex, registryclient.MediaTypeDockerManifestList:
			var idx ocispec.Index
			if err := json.Unmarshal(body, &idx); err != nil {
				return fmt.Errorf("manifest %s: decode index: %w", d, err)
			}
			for i := range idx.Manifests {
				child := idx.Manifests[i]
				if err := child.Digest.Validate(); err != nil {
					return fmt.Errorf("manifest %s: entry %d: digest %q: %w", d, i, child.Digest, err)
				}
				if err := visit(child.Digest, &child, depth+1); err != nil {
					return err
				}
			}
		case registryclient.MediaTypeOCIManifest, registryclient.MediaTypeDockerManifest:
			var m ocispec.Manifest
			if err := json.Unmarshal(body, &m); err != nil {
				return fmt.Errorf("manifest %s: decode: %w", d, err)
			}
			if err := addBlob(d, m.Config); err != nil {
				return err
			}
			for _, l := range m.Layers {
				if err := addBlob(d, l); err != nil {
					return err
				}
			}
		default:
			return fmt.Errorf("manifest %s: unsupported media type %q", d, desc.MediaType)
		}
		t.manifests = append(t.manifests, manifest{desc: desc, body: body})
		return nil
	}
	if err := visit(root, nil, 0); err != nil {
		return nil, err
	}
	return t, nil
}

// nonDistributable reports a foreign layer (Windows base layers): clients
// fetch it from its URLs and registries do not require it to be pushed.
func nonDistributable(d ocispec.Descriptor) bool {
	if len(d.URLs) == 0 {
		return false
	}
	switch d.MediaType {
	case "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
		"application/vnd.oci.image.layer.nondistributable.v1.tar",
		"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
		"application/vnd.oci.image.layer.nondistributable.v1.tar+zstd":
		return true
	}
	return false
}

// oci is m's descriptor as the push side takes it.
func (m manifest) oci() ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: m.desc.MediaType, Digest: m.desc.Digest, Size: m.desc.Size}
}
