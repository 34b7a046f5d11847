package rig

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Docker schema 2 media types (image-spec only defines the OCI ones).
const (
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerConfig       = "application/vnd.docker.container.image.v1+json"
	MediaTypeDockerLayer        = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	// MediaTypeInToto is the layer type of BuildKit's attestation manifests.
	MediaTypeInToto = "application/vnd.in-toto+json"
)

// ImageOptions shape a generated image. Zero values pick the defaults.
type ImageOptions struct {
	// Layers is the number of layers; default 1.
	Layers int
	// LayerSize is the size of the random file in each layer; default 1 KiB.
	LayerSize int
	// LayerSizes, when set, gives the size of each layer's random file, one
	// layer per entry; it overrides Layers and LayerSize.
	LayerSizes []int
	// StoredLayers gzips the layers without compressing them (stored
	// deflate blocks, still valid gzip). Random content does not compress
	// anyway, and large layers are then quick to build, also under -race.
	StoredLayers bool
	// Platform is "os/arch[/variant]"; default "linux/amd64". NoPlatform
	// is a config that names none (what `crane append` onto scratch makes).
	Platform string
	// MediaType is the manifest media type: ocispec.MediaTypeImageManifest
	// (default) or MediaTypeDockerManifest; config and layer types follow it.
	MediaType string
	// Base, when set, makes Base's layers this image's first layers (the
	// same blobs, as images built FROM one base share them); the generated
	// layers follow. Base must have the same MediaType.
	Base *Image
}

// NoPlatform as ImageOptions.Platform gives a config without os/architecture.
const NoPlatform = "none"

// Image is a pushed image manifest and its content.
type Image struct {
	Digest    digest.Digest
	MediaType string
	Size      int64
	Manifest  []byte
	Platform  string
	Config    ocispec.Descriptor
	Layers    []ocispec.Descriptor
	// Blobs holds the config and layer bytes by digest.
	Blobs map[digest.Digest][]byte
}

// Descriptor is the image manifest's descriptor.
func (i Image) Descriptor() ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: i.MediaType, Digest: i.Digest, Size: i.Size}
}

// IndexOptions shape a generated multi-platform image.
type IndexOptions struct {
	// Image shapes every per-platform image (its Platform is ignored).
	Image ImageOptions
	// MediaType is ocispec.MediaTypeImageIndex (default) or
	// MediaTypeDockerManifestList, which also makes the images Docker schema 2.
	MediaType string
	// Attestations adds a BuildKit-style attestation manifest per image,
	// listed with platform unknown/unknown as BuildKit does.
	Attestations bool
}

// Index is a pushed image index and its per-platform images.
type Index struct {
	Digest    digest.Digest
	MediaType string
	Size      int64
	Manifest  []byte
	// Images are the per-platform images, in the order the platforms were given.
	Images []Image
	// Attestations are the attestation manifests, if asked for.
	Attestations []Image
}

// Descriptor is the index's descriptor.
func (x Index) Descriptor() ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: x.MediaType, Digest: x.Digest, Size: x.Size}
}

// PushImage generates an image with random gzipped-tar layers and a real
// config (os, architecture, rootfs diff_ids), pushes its blobs and its
// manifest under tag (by digest only when tag is ""), and returns it. Every
// call makes new content, so pushing to the same tag moves it.
func (r *Registry) PushImage(t T, repo, tag string, opts ImageOptions) Image {
	t.Helper()
	img, err := buildImage(opts)
	if err != nil {
		t.Fatalf("rig registry: build image for %s: %v", repo, err)
	}
	r.pushImage(t, repo, tag, &img)
	return img
}

func (r *Registry) pushImage(t T, repo, tag string, img *Image) {
	t.Helper()
	for _, d := range append([]ocispec.Descriptor{img.Config}, img.Layers...) {
		r.PushBlob(t, repo, d.MediaType, img.Blobs[d.Digest])
	}
	ref := tag
	if ref == "" {
		ref = img.Digest.String()
	}
	r.PushManifest(t, repo, ref, img.MediaType, img.Manifest)
}

// PushIndex pushes one image per platform by digest, then an index of them
// under tag, and returns it.
func (r *Registry) PushIndex(t T, repo, tag string, platforms []string, opts IndexOptions) Index {
	t.Helper()
	if opts.MediaType == "" {
		opts.MediaType = ocispec.MediaTypeImageIndex
	}
	imgOpts := opts.Image
	switch opts.MediaType {
	case ocispec.MediaTypeImageIndex:
	case MediaTypeDockerManifestList:
		imgOpts.MediaType = MediaTypeDockerManifest
	default:
		t.Fatalf("rig registry: push index %s:%s: unsupported media type %q", repo, tag, opts.MediaType)
	}
	x := Index{MediaType: opts.MediaType}
	var descs []ocispec.Descriptor
	for _, p := range platforms {
		imgOpts.Platform = p
		img, err := buildImage(imgOpts)
		if err != nil {
			t.Fatalf("rig registry: build %s image for %s: %v", p, repo, err)
		}
		r.pushImage(t, repo, "", &img)
		x.Images = append(x.Images, img)
		d := img.Descriptor()
		d.Platform = parsePlatform(p)
		descs = append(descs, d)
	}
	if opts.Attestations {
		for _, img := range x.Images {
			att, err := buildAttestation(img)
			if err != nil {
				t.Fatalf("rig registry: build attestation for %s: %v", repo, err)
			}
			r.pushImage(t, repo, "", &att)
			x.Attestations = append(x.Attestations, att)
			d := att.Descriptor()
			d.Platform = &ocispec.Platform{OS: "unknown", Architecture: "unknown"}
			d.Annotations = map[string]string{
				"vnd.docker.reference.type":   "attestation-manifest",
				"vnd.docker.reference.digest": img.Digest.String(),
			}
			descs = append(descs, d)
		}
	}
	body, err := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: opts.MediaType,
		Manifests: descs,
	})
	if err != nil {
		t.Fatalf("rig registry: encode index for %s: %v", repo, err)
	}
	ref := tag
	if ref == "" {
		ref = digest.FromBytes(body).String()
	}
	x.Digest = r.PushManifest(t, repo, ref, opts.MediaType, body)
	x.Size = int64(len(body))
	x.Manifest = body
	return x
}

func buildImage(o ImageOptions) (Image, error) {
	if o.Layers <= 0 {
		o.Layers = 1
	}
	if o.LayerSize <= 0 {
		o.LayerSize = 1 << 10
	}
	if o.Platform == "" {
		o.Platform = "linux/amd64"
	}
	if o.MediaType == "" {
		o.MediaType = ocispec.MediaTypeImageManifest
	}
	configType, layerType := ocispec.MediaTypeImageConfig, ocispec.MediaTypeImageLayerGzip
	switch o.MediaType {
	case ocispec.MediaTypeImageManifest:
	case MediaTypeDockerManifest:
		configType, layerType = MediaTypeDockerConfig, MediaTypeDockerLayer
	default:
		return Image{}, fmt.Errorf("unsupported manifest media type %q", o.MediaType)
	}

	sizes := o.LayerSizes
	if len(sizes) == 0 {
		for range o.Layers {
			sizes = append(sizes, o.LayerSize)
		}
	}
	level := gzip.DefaultCompression
	if o.StoredLayers {
		level = gzip.NoCompression
	}

	img := Image{MediaType: o.MediaType, Platform: o.Platform, Blobs: map[digest.Digest][]byte{}}
	var diffIDs []digest.Digest
	if b := o.Base; b != nil {
		if b.MediaType != o.MediaType {
			return Image{}, fmt.Errorf("base image is %s, want %s", b.MediaType, o.MediaType)
		}
		var bc ocispec.Image
		if err := json.Unmarshal(b.Blobs[b.Config.Digest], &bc); err != nil {
			return Image{}, fmt.Errorf("read base image config: %w", err)
		}
		diffIDs = append(diffIDs, bc.RootFS.DiffIDs...)
		for _, l := range b.Layers {
			img.Layers = append(img.Layers, l)
			img.Blobs[l.Digest] = b.Blobs[l.Digest]
		}
	}
	first := len(diffIDs) // file names stay distinct after the base's
	for i, size := range sizes {
		tarball, gz, err := randomLayer(first+i, size, level)
		if err != nil {
			return Image{}, err
		}
		diffIDs = append(diffIDs, digest.FromBytes(tarball))
		d := ocispec.Descriptor{MediaType: layerType, Digest: digest.FromBytes(gz), Size: int64(len(gz))}
		img.Layers = append(img.Layers, d)
		img.Blobs[d.Digest] = gz
	}

	created := time.Now().UTC().Truncate(time.Second)
	cfg := ocispec.Image{
		Created:  &created,
		Platform: *parsePlatform(o.Platform),
		Config: ocispec.ImageConfig{
			Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		},
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: diffIDs},
	}
	cb, err := json.Marshal(cfg)
	if err != nil {
		return Image{}, fmt.Errorf("encode image config: %w", err)
	}
	img.Config = ocispec.Descriptor{MediaType: configType, Digest: digest.FromBytes(cb), Size: int64(len(cb))}
	img.Blobs[img.Config.Digest] = cb
	return img, img.finish()
}

// finish encodes the manifest and fills in its digest and size.
func (img *Image) finish() error {
	body, err := json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: img.MediaType,
		Config:    img.Config,
		Layers:    img.Layers,
	})
	if err != nil {
		return fmt.Errorf("encode image manifest: %w", err)
	}
	img.Manifest = body
	img.Digest = digest.FromBytes(body)
	img.Size = int64(len(body))
	return nil
}

// buildAttestation makes an OCI manifest shaped like BuildKit's attestation
// manifests: an in-toto layer describing the subject image.
func buildAttestation(subject Image) (Image, error) {
	statement, err := json.Marshal(map[string]any{
		"_type":         "https://in-toto.io/Statement/v0.1",
		"predicateType": "https://spdx.dev/Document",
		"subject":       []map[string]any{{"name": "_", "digest": map[string]string{"sha256": subject.Digest.Encoded()}}},
		"predicate":     map[string]string{"nonce": randomHex(8)},
	})
	if err != nil {
		return Image{}, fmt.Errorf("encode attestation: %w", err)
	}
	cfg := []byte(`{"architecture":"unknown","os":"unknown","config":{},"rootfs":{"type":"layers","diff_ids":["` +
		digest.FromBytes(statement).String() + `"]}}`)
	img := Image{
		MediaType: ocispec.MediaTypeImageManifest,
		Platform:  "unknown/unknown",
		Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(cfg), Size: int64(len(cfg))},
		Layers: []ocispec.Descriptor{{
			MediaType:   MediaTypeInToto,
			Digest:      digest.FromBytes(statement),
			Size:        int64(len(statement)),
			Annotations: map[string]string{"in-toto.io/predicate-type": "https://spdx.dev/Document"},
		}},
		Blobs: map[digest.Digest][]byte{},
	}
	img.Blobs[img.Config.Digest] = cfg
	img.Blobs[img.Layers[0].Digest] = statement
	return img, img.finish()
}

// randomLayer is a tar holding one file of random bytes, and its gzip at
// the given level; real enough for containerd to unpack.
func randomLayer(i, size, level int) (tarball, gz []byte, err error) {
	content := make([]byte, size)
	_, _ = rand.Read(content) // never fails
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	hdr := &tar.Header{
		Name:     fmt.Sprintf("layer-%d.bin", i),
		Mode:     0o644,
		Size:     int64(size),
		ModTime:  time.Unix(0, 0),
		Typeflag: tar.TypeReg,
		Format:   tar.FormatPAX,
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, nil, fmt.Errorf("write layer tar header: %w", err)
	}
	if _, err := tw.Write(content); err != nil {
		return nil, nil, fmt.Errorf("write layer tar: %w", err)
	}
	if err := tw.Close(); err != nil {
		return nil, nil, fmt.Errorf("close layer tar: %w", err)
	}
	var gb bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gb, level)
	if err != nil {
		return nil, nil, fmt.Errorf("gzip layer: %w", err)
	}
	if _, err := zw.Write(tb.Bytes()); err != nil {
		return nil, nil, fmt.Errorf("gzip layer: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, nil, fmt.Errorf("gzip layer: %w", err)
	}
	return tb.Bytes(), gb.Bytes(), nil
}

// parsePlatform reads "os/arch[/variant]".
func parsePlatform(s string) *ocispec.Platform {
	if s == NoPlatform {
		return &ocispec.Platform{}
	}
	parts := strings.SplitN(s, "/", 3)
	p := &ocispec.Platform{OS: parts[0]}
	if len(parts) > 1 {
		p.Architecture = parts[1]
	}
	if len(parts) > 2 {
		p.Variant = parts[2]
	}
	return p
}
