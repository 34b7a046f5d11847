package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// The benchmark image: layers of incompressible pseudo-random bytes (one
// file per layer, ChaCha8 seeded by the layer's seed, so every run builds the
// same bytes and the same digests), each a real tar in a real gzip stream
// written at gzip.NoCompression: stored deflate blocks, which is also what
// any gzip level makes of random data, without minutes of compressing. A
// layer is generated twice, once to hash it and once streamed straight into
// the upstream's upload request, so it is never held in memory or on disk.

// layerSpec is one generated layer.
type layerSpec struct {
	seed        uint64
	contentSize int64
	desc        ocispec.Descriptor // the gzip blob
	diffID      digest.Digest      // sha256 of the tar
}

// open streams the layer's gzip blob.
func (l *layerSpec) open() io.ReadCloser {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeLayer(pw, l.seed, l.contentSize, nil)) }()
	return pr
}

// writeLayer writes the gzipped tar of the layer with seed to w; tarHash,
// when set, also receives the uncompressed tar.
func writeLayer(w io.Writer, seed uint64, size int64, tarHash io.Writer) error {
	zw, err := gzip.NewWriterLevel(w, gzip.NoCompression)
	if err != nil {
		return err
	}
	zw.ModTime = time.Unix(0, 0)
	var tw *tar.Writer
	if tarHash != nil {
		tw = tar.NewWriter(io.MultiWriter(zw, tarHash))
	} else {
		tw = tar.NewWriter(zw)
	}
	if err := tw.WriteHeader(&tar.Header{
		Name: fmt.Sprintf("layer-%016x.bin", seed), Mode: 0o644, Size: size,
		ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg, Format: tar.FormatPAX,
	}); err != nil {
		return err
	}
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	copy(key[8:], "tagger-bench-copy-layer")
	src := rand.NewChaCha8(key)
	buf := make([]byte, 1<<20)
	for left := size; left > 0; {
		n := min(int64(len(buf)), left)
		_, _ = src.Read(buf[:n])
		if _, err := tw.Write(buf[:n]); err != nil {
			return err
		}
		left -= n
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}

// newLayer generates the layer once to learn its digests and size.
func newLayer(seed uint64, contentSize int64) (*layerSpec, error) {
	blob, tarH := sha256.New(), sha256.New()
	cw := &countWriter{w: blob}
	if err := writeLayer(cw, seed, contentSize, tarH); err != nil {
		return nil, err
	}
	return &layerSpec{
		seed: seed, contentSize: contentSize,
		desc: ocispec.Descriptor{
			MediaType: ocispec.MediaTypeImageLayerGzip,
			Digest:    digest.NewDigest(digest.SHA256, blob),
			Size:      cw.n,
		},
		diffID: digest.NewDigest(digest.SHA256, tarH),
	}, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// benchImage is an image manifest with its config and layers.
type benchImage struct {
	layers   []*layerSpec
	config   []byte
	configD  ocispec.Descriptor
	manifest []byte
	digest   digest.Digest
}

// size is the image's blob bytes (config and layers).
func (b *benchImage) size() int64 {
	n := b.configD.Size
	for _, l := range b.layers {
		n += l.desc.Size
	}
	return n
}

func newImage(layers []*layerSpec) (*benchImage, error) {
	img := &benchImage{layers: layers}
	created := time.Unix(0, 0).UTC()
	cfg := ocispec.Image{
		Created:  &created,
		Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
		Config:   ocispec.ImageConfig{Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}},
		RootFS:   ocispec.RootFS{Type: "layers"},
	}
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest}
	for _, l := range layers {
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, l.diffID)
		m.Layers = append(m.Layers, l.desc)
	}
	var err error
	if img.config, err = json.Marshal(cfg); err != nil {
		return nil, err
	}
	img.configD = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(img.config), Size: int64(len(img.config))}
	m.Config = img.configD
	if img.manifest, err = json.Marshal(m); err != nil {
		return nil, err
	}
	img.digest = digest.FromBytes(img.manifest)
	return img, nil
}

// pusher writes into an unauthenticated registry over the distribution API.
type pusher struct {
	base string // http://host:port
	hc   *http.Client
}

func (p *pusher) blobExists(ctx context.Context, repo string, d digest.Digest) (bool, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodHead, p.base+"/v2/"+repo+"/blobs/"+d.String(), nil)
	resp, err := p.hc.Do(req)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK, nil
}

// pushBlob uploads body (size bytes, digest d) monolithically, unless the
// repository has it already.
func (p *pusher) pushBlob(ctx context.Context, repo string, d digest.Digest, size int64, open func() io.ReadCloser) error {
	if ok, err := p.blobExists(ctx, repo, d); err != nil || ok {
		return err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, p.base+"/v2/"+repo+"/blobs/uploads/", nil)
	resp, err := p.hc.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("POST upload for %s: %s", repo, resp.Status)
	}
	base, _ := url.Parse(p.base)
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		return fmt.Errorf("upload Location: %w", err)
	}
	u := base.ResolveReference(loc)
	q := u.Query()
	q.Set("digest", d.String())
	u.RawQuery = q.Encode()
	body := open()
	defer body.Close()
	req, _ = http.NewRequestWithContext(ctx, http.MethodPut, u.String(), body)
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = p.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return fmt.Errorf("PUT blob %s: %s: %s", d, resp.Status, bytes.TrimSpace(b))
	}
	return nil
}

func (p *pusher) putManifest(ctx context.Context, repo, ref string, img *benchImage) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, p.base+"/v2/"+repo+"/manifests/"+ref, bytes.NewReader(img.manifest))
	req.Header.Set("Content-Type", ocispec.MediaTypeImageManifest)
	resp, err := p.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return fmt.Errorf("PUT manifest %s:%s: %s: %s", repo, ref, resp.Status, bytes.TrimSpace(b))
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != img.digest.String() {
		return fmt.Errorf("PUT manifest %s:%s: registry says %s, want %s", repo, ref, got, img.digest)
	}
	return nil
}

// pushImage pushes img's blobs and its manifest under each of refs.
func (p *pusher) pushImage(ctx context.Context, repo string, img *benchImage, refs ...string) error {
	for _, l := range img.layers {
		if err := p.pushBlob(ctx, repo, l.desc.Digest, l.desc.Size, l.open); err != nil {
			return err
		}
	}
	if err := p.pushBlob(ctx, repo, img.configD.Digest, img.configD.Size, func() io.ReadCloser {
		return io.NopCloser(bytes.NewReader(img.config))
	}); err != nil {
		return err
	}
	for _, ref := range refs {
		if err := p.putManifest(ctx, repo, ref, img); err != nil {
			return err
		}
	}
	return nil
}

// manifestDigest HEADs repo:ref and returns the digest the registry has
// under it ("" when none).
func manifestDigest(ctx context.Context, hc *http.Client, base, repo, ref string) (digest.Digest, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodHead, base+"/v2/"+repo+"/manifests/"+ref, nil)
	req.Header.Set("Accept", strings.Join([]string{ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex,
		"application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.distribution.manifest.list.v2+json"}, ", "))
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return digest.Digest(resp.Header.Get("Docker-Content-Digest")), nil
	case http.StatusNotFound:
		return "", nil
	}
	return "", fmt.Errorf("HEAD %s:%s: %s", repo, ref, resp.Status)
}
