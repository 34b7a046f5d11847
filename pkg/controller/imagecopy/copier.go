package imagecopy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sirupsen/logrus"

	"github.com/tagger-project/tagger/pkg/pins"
	"github.com/tagger-project/tagger/pkg/registryclient"
)

// DefaultMaxConcurrent is the number of blobs in flight when
// Copier.MaxConcurrent is not set.
const DefaultMaxConcurrent = 4

const (
	// readBufferSize bounds the buffer a blob is read from the upstream
	// through.
	readBufferSize = 1 << 20
	// maxMountTries bounds the mount attempts for one blob.
	maxMountTries = 3
	// maxRemembered bounds the digests the Copier remembers repositories
	// for; past it the memory starts over (it is only a hint).
	maxRemembered = 1 << 16
	// maxReposPerDigest bounds the repositories remembered per digest.
	maxReposPerDigest = 4
)

var tagPattern = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)

// Copier copies generations from upstream registries into the bundled
// registry. Set its fields before the first Copy, then it is safe for
// concurrent use; do not copy a Copier after first use.
type Copier struct {
	// Upstream reads manifests and blobs from upstream registries. Give it
	// an HTTP client without an overall Timeout (or a generous one): a
	// layer is streamed through within the same request.
	Upstream *registryclient.Client
	// Registry is the bundled registry's base URL, "http://host:port".
	Registry string
	// HTTPClient talks to the bundled registry; default: a client without
	// timeout (Copy's context bounds the work).
	HTTPClient *http.Client
	// MaxConcurrent is the number of blobs in flight; default 4.
	MaxConcurrent int
	// MountFrom, when set, names cache repositories of the bundled registry
	// that may hold blob d; they are tried as cross-repository mount
	// sources before the ones this Copier has seen holding d.
	MountFrom func(d digest.Digest) []string
	// Metrics, when set, counts bytes, blobs and copy durations.
	Metrics *Metrics
	// Log receives per-copy and per-blob logs; default: discarded.
	Log logrus.FieldLogger

	mu    sync.Mutex
	seen  map[digest.Digest][]string // blob -> cache repositories known to hold it
	locks repoLocks
}

// Progress reports a copy: the blobs and bytes of the generation's tree,
// how many are done and how each got there. It is returned with an error
// too, as far as the copy got.
type Progress struct {
	// Blobs and Bytes count the tree's unique config and layer blobs.
	Blobs int
	Bytes int64
	// BlobsDone and BytesDone count blobs now in the cache repository.
	BlobsDone int
	BytesDone int64
	// Uploaded, Present and Mounted split BlobsDone by how: streamed from
	// the upstream, already there, mounted from another cache repository.
	Uploaded, Present, Mounted int
	// BytesUploaded is the blob bytes streamed from the upstream.
	BytesUploaded int64
	// Manifests counts the tree's manifests (the root included);
	// ManifestsPushed those this copy had to PUT (not already there).
	Manifests, ManifestsPushed int
}

// Copy copies the tree of root, a manifest or index of src's repository,
// into the bundled registry's repository src.CacheRepository(): every blob,
// then every child manifest by digest, then root by digest and, unless tag
// is "", under tag. It returns once all of it is there, or with the first
// errors; a failed copy commits no partial blob and no manifest whose
// content is missing, and running it again resumes where it stopped.
func (c *Copier) Copy(ctx context.Context, src pins.Reference, root digest.Digest, creds registryclient.Credentials, tag string) (Progress, error) {
	start := time.Now()
	log := c.logger().WithFields(logrus.Fields{"image": src.Name(), "digest": root.String(), "repository": src.CacheRepository()})
	var p Progress
	var err error
	c.locks.shared(src.CacheRepository(), func() { p, err = c.copy(ctx, log, src, root, creds, tag) })
	elapsed := time.Since(start)
	c.Metrics.copied(elapsed, err)
	log = log.WithFields(logrus.Fields{
		"blobs": p.Blobs, "uploaded": p.Uploaded, "present": p.Present, "mounted": p.Mounted,
		"bytesUploaded": p.BytesUploaded, "manifestsPushed": p.ManifestsPushed, "duration": elapsed.String(),
	})
	if err != nil {
		log.WithError(err).Warn("copy into bundled registry failed")
		return p, fmt.Errorf("copy %s@%s into %s: %w", src.Name(), root, src.CacheRepository(), err)
	}
	log.Info("copied into bundled registry")
	return p, nil
}

func (c *Copier) copy(ctx context.Context, log logrus.FieldLogger, src pins.Reference, root digest.Digest, creds registryclient.Credentials, tag string) (Progress, error) {
	if c.Upstream == nil {
		return Progress{}, errors.New("imagecopy: Copier without an upstream client")
	}
	if err := root.Validate(); err != nil {
		return Progress{}, fmt.Errorf("root digest %q: %w", root, err)
	}
	if tag != "" && !tagPattern.MatchString(tag) {
		return Progress{}, fmt.Errorf("invalid tag %q", tag)
	}
	reg, err := registryclient.NewEndpoint(c.Registry, c.HTTPClient)
	if err != nil {
		return Progress{}, err
	}
	dst := src.CacheRepository()

	// A root the cache repository already has was only accepted with all
	// its content: read the tree from there and spare the upstream (GETs
	// of manifests count against Docker Hub's pull limit). The blobs are
	// still HEADed below, which costs the upstream nothing.
	var t *tree
	if have, err := reg.ManifestDigest(ctx, dst, root.String()); err == nil && have == root {
		t, err = walk(ctx, func(ctx context.Context, d digest.Digest) ([]byte, registryclient.Descriptor, error) {
			return reg.FetchManifest(ctx, dst, d)
		}, root)
		if err != nil {
			log.WithError(err).Warn("reading the cached tree failed; reading it from the upstream")
		}
	}
	if t == nil {
		if t, err = walk(ctx, c.upstreamFetch(src, creds), root); err != nil {
			return Progress{}, err
		}
	}
	tr := &tracker{m: c.Metrics}
	tr.p.Blobs = len(t.blobs)
	tr.p.Manifests = len(t.manifests)
	for _, b := range t.blobs {
		tr.p.Bytes += b.Size
	}

	if err := c.copyBlobs(ctx, log, reg, src, dst, t.blobs, creds, tr); err != nil {
		return tr.snapshot(), err
	}

	// Children before parents: the registry refuses an index whose
	// manifests it lacks. walk put the root last.
	for _, m := range t.manifests {
		have, err := reg.ManifestDigest(ctx, dst, m.desc.Digest.String())
		if err != nil {
			return tr.snapshot(), fmt.Errorf("manifest %s: %w", m.desc.Digest, err)
		}
		if have == m.desc.Digest {
			continue
		}
		if err := reg.PushManifest(ctx, dst, m.desc.Digest.String(), m.oci(), m.body); err != nil {
			return tr.snapshot(), fmt.Errorf("manifest %s: %w", m.desc.Digest, err)
		}
		tr.manifestPushed()
	}
	if tag != "" {
		rootM := t.manifests[len(t.manifests)-1]
		have, err := reg.ManifestDigest(ctx, dst, tag)
		if err != nil {
			return tr.snapshot(), fmt.Errorf("tag %s: %w", tag, err)
		}
		if have != root {
			if err := reg.PushManifest(ctx, dst, tag, rootM.oci(), rootM.body); err != nil {
				return tr.snapshot(), fmt.Errorf("tag %s: %w", tag, err)
			}
		}
	}
	return tr.snapshot(), nil
}

// copyBlobs copies blobs with at most MaxConcurrent in flight. After the
// first failure it starts no more, lets those in flight finish (their work
// is kept for the next run) and returns every error.
func (c *Copier) copyBlobs(ctx context.Context, log logrus.FieldLogger, reg *registryclient.Endpoint, src pins.Reference, dst string, blobs []ocispec.Descriptor, creds registryclient.Credentials, tr *tracker) error {
	n := c.MaxConcurrent
	if n <= 0 {
		n = DefaultMaxConcurrent
	}
	n = min(n, len(blobs))
	jobs := make(chan ocispec.Descriptor)
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		errs   []error
		failed atomic.Bool
	)
	for range n {
		wg.Go(func() {
			for d := range jobs {
				if err := c.copyBlob(ctx, log, reg, src, dst, d, creds, tr); err != nil {
					tr.failed()
					failed.Store(true)
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
feed:
	for _, b := range blobs {
		if failed.Load() {
			break
		}
		select {
		case jobs <- b:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return ctx.Err()
}

// copyBlob makes blob d present in dst: already there, mounted from another
// cache repository, or streamed from the upstream.
func (c *Copier) copyBlob(ctx context.Context, log logrus.FieldLogger, reg *registryclient.Endpoint, src pins.Reference, dst string, d ocispec.Descriptor, creds registryclient.Credentials, tr *tracker) error {
	wrap := func(err error) error { return fmt.Errorf("blob %s from %s: %w", d.Digest, src.Name(), err) }
	log = log.WithField("blob", d.Digest.String())

	ok, err := reg.BlobExists(ctx, dst, d.Digest)
	if err != nil {
		return wrap(err)
	}
	if ok {
		c.remember(d.Digest, dst)
		tr.done(d.Size, resultPresent, 0)
		return nil
	}

	var location string
	for _, from := range c.mountSources(d.Digest, dst) {
		mounted, loc, err := reg.StartUpload(ctx, dst, d.Digest, from)
		if err != nil {
			return wrap(err)
		}
		if mounted {
			log.WithField("from", from).Debug("blob mounted")
			c.remember(d.Digest, dst)
			tr.done(d.Size, resultMounted, 0)
			return nil
		}
		if location != "" {
			reg.CancelUpload(ctx, location)
		}
		location = loc
	}
	if location == "" {
		if _, location, err = reg.StartUpload(ctx, dst, d.Digest, ""); err != nil {
			return wrap(err)
		}
	}

	if err := c.upload(ctx, reg, src, location, d, creds); err != nil {
		reg.CancelUpload(ctx, location)
		return wrap(err)
	}
	log.WithField("bytes", d.Size).Debug("blob uploaded")
	c.remember(d.Digest, dst)
	tr.done(d.Size, resultUploaded, d.Size)
	return nil
}

// upload streams blob d from the upstream into the session at location.
func (c *Copier) upload(ctx context.Context, reg *registryclient.Endpoint, src pins.Reference, location string, d ocispec.Descriptor, creds registryclient.Credentials) error {
	resp, err := c.Upstream.Open(ctx, src, http.MethodGet, "blobs", d.Digest, "", "", creds)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("upstream: %w", registryclient.ResponseError("fetch blob", src.Name()+"@"+d.Digest.String(), resp))
	}
	if resp.ContentLength >= 0 && resp.ContentLength != d.Size {
		return &contentError{
			msg:  fmt.Sprintf("size mismatch (upstream sends %d bytes, descriptor says %d)", resp.ContentLength, d.Size),
			kind: ErrSizeMismatch,
		}
	}
	// net/http copies a request body to the socket in 32 KiB reads, and the
	// response body hands each one straight to a read(2) of the upstream
	// connection. Reading the upstream in up to 1 MiB instead cuts those
	// syscalls about fourfold: ~15% of the copier's CPU for large layers
	// (hack/bench/copy), bounded memory per blob in flight.
	v := newVerifier(bufio.NewReaderSize(resp.Body, int(min(max(d.Size, 4<<10), readBufferSize))), d.Digest, d.Size)
	var body io.Reader = v
	if d.Size == 0 {
		// Nothing to stream; verify the (empty) content before the PUT.
		if _, err := io.Copy(io.Discard, v); err != nil {
			return err
		}
	}
	err = reg.PutBlob(ctx, location, d, body)
	if cerr := v.contentErr(); cerr != nil {
		return cerr // the PUT was aborted because of it; say why
	}
	if err != nil {
		return fmt.Errorf("upload into bundled registry: %w", err)
	}
	return nil
}

// mountSources lists repositories to try mounting d from: the MountFrom
// hint's, then those this Copier saw holding d; never dst itself.
func (c *Copier) mountSources(d digest.Digest, dst string) []string {
	var out []string
	if c.MountFrom != nil {
		out = append(out, c.MountFrom(d)...)
	}
	c.mu.Lock()
	out = append(out, c.seen[d]...)
	c.mu.Unlock()
	var res []string
	for _, r := range out {
		if r != "" && r != dst && !slices.Contains(res, r) {
			res = append(res, r)
		}
	}
	if len(res) > maxMountTries {
		res = res[:maxMountTries]
	}
	return res
}

// remember notes that repo holds d, for later mounts.
func (c *Copier) remember(d digest.Digest, repo string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen == nil || len(c.seen) >= maxRemembered {
		c.seen = map[digest.Digest][]string{}
	}
	rs := c.seen[d]
	if slices.Contains(rs, repo) {
		return
	}
	// Most recent first; the oldest falls off.
	rs = append([]string{repo}, rs...)
	if len(rs) > maxReposPerDigest {
		rs = rs[:maxReposPerDigest]
	}
	c.seen[d] = rs
}

func (c *Copier) logger() logrus.FieldLogger {
	if c.Log != nil {
		return c.Log
	}
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

// tracker accumulates a Progress across the blob workers.
type tracker struct {
	m  *Metrics
	mu sync.Mutex
	p  Progress
}

func (t *tracker) done(size int64, result string, uploaded int64) {
	t.m.blob(result, uploaded)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.p.BlobsDone++
	t.p.BytesDone += size
	t.p.BytesUploaded += uploaded
	switch result {
	case resultUploaded:
		t.p.Uploaded++
	case resultPresent:
		t.p.Present++
	case resultMounted:
		t.p.Mounted++
	}
}

func (t *tracker) failed() { t.m.blob(resultFailed, 0) }

func (t *tracker) manifestPushed() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.p.ManifestsPushed++
}

func (t *tracker) snapshot() Progress {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.p
}
