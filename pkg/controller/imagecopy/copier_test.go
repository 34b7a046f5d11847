package imagecopy

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	testrig "github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/pkg/pins"
	"github.com/tagger-project/tagger/pkg/registryclient"
)

// rig is an upstream registry and a bundled one, both real.
type rig struct {
	up, bundled *testrig.Registry
	client      *registryclient.Client
}

func newRig(t *testing.T) *rig {
	t.Helper()
	return &rig{
		up:      testrig.NewRegistry(t, testrig.RegistryOptions{}),
		bundled: testrig.NewRegistry(t, testrig.RegistryOptions{}),
		client: registryclient.New(registryclient.Options{
			HTTPClient: &http.Client{},
			PlainHTTP:  func(string) bool { return true },
		}),
	}
}

func (r *rig) copier() *Copier {
	return &Copier{Upstream: r.client, Registry: r.bundled.URL()}
}

func ref(host, repo string) pins.Reference {
	return pins.Reference{Registry: host, Repository: repo, Tag: "v1"}
}

// manifestAccept admits every manifest type.
const manifestAccept = registryclient.ManifestAccept

func copyCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// status HEADs a manifest or blob in the bundled registry.
func status(t *testing.T, base, repo, kind, ref string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodHead, base+"/v2/"+repo+"/"+kind+"/"+ref, nil)
	req.Header.Set("Accept", manifestAccept)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("HEAD %s: %v", ref, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// assertImage GETs an image manifest and all its blobs from the bundled
// registry and checks each hashes to its digest.
func assertImage(t *testing.T, reg *testrig.Registry, repo string, img testrig.Image) {
	t.Helper()
	assertContent(t, reg, repo, "manifests", img.Digest)
	for _, d := range append([]ocispec.Descriptor{img.Config}, img.Layers...) {
		assertContent(t, reg, repo, "blobs", d.Digest)
	}
}

func assertContent(t *testing.T, reg *testrig.Registry, repo, kind string, d digest.Digest) {
	t.Helper()
	_, body := reg.Get(t, repo, "/v2/"+repo+"/"+kind+"/"+d.String(), manifestAccept)
	if got := digest.FromBytes(body); got != d {
		t.Fatalf("%s %s in %s: content hashes to %s", kind, d, repo, got)
	}
}

func TestCopyIndexWithAttestations(t *testing.T) {
	r := newRig(t)
	idx := r.up.PushIndex(t, "team/app", "v1", []string{"linux/amd64", "linux/arm64"},
		testrig.IndexOptions{Attestations: true, Image: testrig.ImageOptions{Layers: 2}})
	src := ref(r.up.Host(), "team/app")
	preg := prometheus.NewRegistry()
	c := r.copier()
	c.Metrics = NewMetrics(preg)

	p, err := c.Copy(copyCtx(t), src, idx.Digest, registryclient.Credentials{}, "tagger-gen-1")
	if err != nil {
		t.Fatalf("Copy: %v", err)
	}
	// 2 images x (config + 2 layers) + 2 attestations x (config + layer).
	var bytes int64
	for _, img := range append(append([]testrig.Image{}, idx.Images...), idx.Attestations...) {
		bytes += img.Config.Size
		for _, l := range img.Layers {
			bytes += l.Size
		}
	}
	want := Progress{Blobs: 10, BlobsDone: 10, Bytes: bytes, BytesDone: bytes, Uploaded: 10, BytesUploaded: bytes, Manifests: 5, ManifestsPushed: 5}
	if p != want {
		t.Fatalf("progress = %+v, want %+v", p, want)
	}

	repo := src.CacheRepository()
	if !strings.HasPrefix(repo, "127.0.0.1_") {
		t.Fatalf("cache repository %q", repo)
	}
	assertContent(t, r.bundled, repo, "manifests", idx.Digest)
	for _, img := range append(append([]testrig.Image{}, idx.Images...), idx.Attestations...) {
		assertImage(t, r.bundled, repo, img)
	}
	resp, body := r.bundled.Get(t, repo, "/v2/"+repo+"/manifests/tagger-gen-1", manifestAccept)
	if resp.Header.Get("Docker-Content-Digest") != idx.Digest.String() || string(body) != string(idx.Manifest) {
		t.Fatalf("tag tagger-gen-1 is %s, want the index %s byte for byte", resp.Header.Get("Docker-Content-Digest"), idx.Digest)
	}
	if got := testutil.ToFloat64(c.Metrics.blobs.WithLabelValues(resultUploaded)); got != 10 {
		t.Errorf("tagger_copy_blobs_total{result=uploaded} = %v, want 10", got)
	}
	if got := testutil.ToFloat64(c.Metrics.bytes); got != float64(bytes) {
		t.Errorf("tagger_copy_bytes_total = %v, want %d", got, bytes)
	}
	if n := testutil.CollectAndCount(preg, "tagger_copy_duration_seconds"); n != 2 {
		t.Errorf("tagger_copy_duration_seconds series = %d, want 2", n)
	}
}

func TestCopyAgainUploadsNothing(t *testing.T) {
	r := newRig(t)
	upProxy := testrig.NewCountingProxy(t, r.up.URL())
	bProxy := testrig.NewCountingProxy(t, r.bundled.URL())
	idx := r.up.PushIndex(t, "team/app", "v1", []string{"linux/amd64", "linux/arm64"},
		testrig.IndexOptions{Attestations: true})
	src := ref(upProxy.Host(), "team/app")
	c := &Copier{Upstream: r.client, Registry: bProxy.URL()}
	if _, err := c.Copy(copyCtx(t), src, idx.Digest, registryclient.Credentials{}, "tagger-gen-1"); err != nil {
		t.Fatalf("first Copy: %v", err)
	}
	upProxy.Reset()
	bProxy.Reset()

	// A fresh Copier: as after a controller restart.
	c = &Copier{Upstream: r.client, Registry: bProxy.URL()}
	p, err := c.Copy(copyCtx(t), src, idx.Digest, registryclient.Credentials{}, "tagger-gen-1")
	if err != nil {
		t.Fatalf("second Copy: %v", err)
	}
	if p.Present != p.Blobs || p.Uploaded != 0 || p.Mounted != 0 || p.BytesUploaded != 0 || p.ManifestsPushed != 0 || p.Blobs != 8 {
		t.Fatalf("progress = %+v, want all 8 blobs present and nothing pushed", p)
	}
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodPatch} {
		if n := bProxy.Count(m, testrig.KindUpload); n != 0 {
			t.Errorf("%s upload requests = %d, want 0 (%s)", m, n, bProxy)
		}
	}
	if n := bProxy.Count(http.MethodPut, testrig.KindManifest); n != 0 {
		t.Errorf("PUT manifest requests = %d, want 0 (%s)", n, bProxy)
	}
	// The tree was read from the bundled registry: nothing asked upstream.
	if n := upProxy.Total(); n != 0 {
		t.Errorf("upstream requests = %d, want 0: %v", n, upProxy.Requests())
	}
}

// pushManifest pushes blobs and an OCI image manifest of them to repo.
func pushManifest(t *testing.T, reg *testrig.Registry, repo, tag string, config []byte, layers [][]byte) (digest.Digest, []ocispec.Descriptor) {
	t.Helper()
	cfg := reg.PushBlob(t, repo, ocispec.MediaTypeImageConfig, config)
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cfg}
	for _, l := range layers {
		m.Layers = append(m.Layers, reg.PushBlob(t, repo, ocispec.MediaTypeImageLayerGzip, l))
	}
	body, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return reg.PushManifest(t, repo, tag, m.MediaType, body), append([]ocispec.Descriptor{cfg}, m.Layers...)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func TestCopySharedLayers(t *testing.T) {
	r := newRig(t)
	const n = 3
	a := r.up.PushImage(t, "team/app", "v1", testrig.ImageOptions{Layers: n})
	var layers [][]byte
	for _, l := range a.Layers[:n-1] {
		layers = append(layers, a.Blobs[l.Digest])
	}
	newLayer := randomBytes(3000)
	layers = append(layers, newLayer)
	cfgB := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"nonce":"` + digest.FromBytes(newLayer).Encoded() + `"}`)
	b, _ := pushManifest(t, r.up, "team/app", "v2", cfgB, layers)
	bOther, _ := pushManifest(t, r.up, "other/app", "v1", cfgB, layers)
	bThird, _ := pushManifest(t, r.up, "third/app", "v1", cfgB, layers)
	if b != bOther || b != bThird {
		t.Fatal("same manifest, different digests")
	}

	bProxy := testrig.NewCountingProxy(t, r.bundled.URL())
	c := &Copier{Upstream: r.client, Registry: bProxy.URL()}
	app := ref(r.up.Host(), "team/app")
	if _, err := c.Copy(copyCtx(t), app, a.Digest, registryclient.Credentials{}, "tagger-gen-1"); err != nil {
		t.Fatalf("Copy A: %v", err)
	}

	// Same cache repository: only B's new layer and its config go up.
	p, err := c.Copy(copyCtx(t), app, b, registryclient.Credentials{}, "tagger-gen-2")
	if err != nil {
		t.Fatalf("Copy B: %v", err)
	}
	wantBytes := int64(len(newLayer) + len(cfgB))
	if p.Uploaded != 2 || p.Present != n-1 || p.Mounted != 0 || p.BytesUploaded != wantBytes {
		t.Fatalf("B in the same repository: progress = %+v, want 2 uploaded (%d bytes), %d present", p, wantBytes, n-1)
	}

	// Another cache repository: everything is mounted from team/app.
	bProxy.Reset()
	other := ref(r.up.Host(), "other/app")
	p, err = c.Copy(copyCtx(t), other, b, registryclient.Credentials{}, "tagger-gen-1")
	if err != nil {
		t.Fatalf("Copy B into another repository: %v", err)
	}
	if p.Mounted != n+1 || p.Uploaded != 0 || p.BytesUploaded != 0 {
		t.Fatalf("B in another repository: progress = %+v, want %d mounted, none uploaded", p, n+1)
	}
	if n := bProxy.Count(http.MethodPut, testrig.KindUpload); n != 0 {
		t.Fatalf("blob PUTs = %d, want 0 (%s)", n, bProxy)
	}
	assertContent(t, r.bundled, other.CacheRepository(), "manifests", b)

	// A Copier that has seen nothing uses the MountFrom hint.
	c2 := &Copier{Upstream: r.client, Registry: r.bundled.URL(), MountFrom: func(digest.Digest) []string {
		return []string{"no/such-repo", app.CacheRepository()}
	}}
	p, err = c2.Copy(copyCtx(t), ref(r.up.Host(), "third/app"), b, registryclient.Credentials{}, "")
	if err != nil {
		t.Fatalf("Copy B with MountFrom: %v", err)
	}
	if p.Mounted != n+1 || p.Uploaded != 0 {
		t.Fatalf("B with MountFrom: progress = %+v, want %d mounted", p, n+1)
	}
}

// corruptingProxy flips a byte in the body of GETs of one blob while on.
func corruptingProxy(t *testing.T, target string, blob digest.Digest) (*httptest.Server, *atomic.Bool) {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	on := &atomic.Bool{}
	on.Store(true)
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(u) },
		ModifyResponse: func(resp *http.Response) error {
			if on.Load() && resp.Request.Method == http.MethodGet && strings.HasSuffix(resp.Request.URL.Path, "/blobs/"+blob.String()) {
				resp.Body = &flipper{rc: resp.Body, at: 100}
			}
			return nil
		},
	}
	srv := httptest.NewServer(rp)
	t.Cleanup(srv.Close)
	return srv, on
}

type flipper struct {
	rc  io.ReadCloser
	at  int64
	off int64
}

func (f *flipper) Read(p []byte) (int, error) {
	n, err := f.rc.Read(p)
	if f.at >= f.off && f.at < f.off+int64(n) {
		p[f.at-f.off] ^= 0xff
	}
	f.off += int64(n)
	return n, err
}

func (f *flipper) Close() error { return f.rc.Close() }

func TestCopyCorruptBlob(t *testing.T) {
	r := newRig(t)
	idx := r.up.PushIndex(t, "team/app", "v1", []string{"linux/amd64", "linux/arm64"},
		testrig.IndexOptions{Image: testrig.ImageOptions{Layers: 2}})
	bad := idx.Images[0].Layers[1]
	proxy, on := corruptingProxy(t, r.up.URL(), bad.Digest)
	src := ref(strings.TrimPrefix(proxy.URL, "http://"), "team/app")
	repo := src.CacheRepository()
	c := r.copier()

	p, err := c.Copy(copyCtx(t), src, idx.Digest, registryclient.Credentials{}, "tagger-gen-1")
	if err == nil {
		t.Fatal("Copy of a corrupted blob succeeded")
	}
	if !errors.Is(err, ErrDigestMismatch) || !errors.Is(err, registryclient.ErrDigestMismatch) {
		t.Fatalf("err = %v, want a digest mismatch", err)
	}
	if want := "blob " + bad.Digest.String() + " from " + src.Name() + ": digest mismatch (got sha256:"; !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %q, want it to contain %q", err, want)
	}
	t.Logf("error: %v; progress %+v", err, p)
	if got := status(t, r.bundled.URL(), repo, "blobs", bad.Digest.String()); got != http.StatusNotFound {
		t.Fatalf("HEAD corrupted blob = %d, want 404", got)
	}
	for _, d := range []digest.Digest{idx.Digest, idx.Images[0].Digest, idx.Images[1].Digest} {
		if got := status(t, r.bundled.URL(), repo, "manifests", d.String()); got != http.StatusNotFound {
			t.Fatalf("HEAD manifest %s = %d, want 404", d, got)
		}
	}

	on.Store(false)
	p, err = c.Copy(copyCtx(t), src, idx.Digest, registryclient.Credentials{}, "tagger-gen-1")
	if err != nil {
		t.Fatalf("clean Copy: %v", err)
	}
	if p.BlobsDone != p.Blobs || p.Uploaded < 1 || p.Uploaded+p.Present != p.Blobs {
		t.Fatalf("clean Copy progress = %+v", p)
	}
	assertContent(t, r.bundled, repo, "manifests", idx.Digest)
	for _, img := range idx.Images {
		assertImage(t, r.bundled, repo, img)
	}
}

func TestCopyStreamsLargeBlob(t *testing.T) {
	r := newRig(t)
	const size = 64 << 20
	layer := randomBytes(size)
	layerDigest := digest.FromBytes(layer)
	root, _ := pushManifest(t, r.up, "team/big", "v1", []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`), [][]byte{layer})
	layer = nil //nolint:ineffassign // release it before measuring

	c := r.copier()
	src := ref(r.up.Host(), "team/big")
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse

	var (
		peak atomic.Uint64
		wg   sync.WaitGroup
		stop = make(chan struct{})
	)
	wg.Go(func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})
	p, err := c.Copy(copyCtx(t), src, root, registryclient.Credentials{}, "tagger-gen-1")
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("Copy: %v", err)
	}
	if p.BytesUploaded < size {
		t.Fatalf("progress = %+v, want the %d-byte layer uploaded", p, size)
	}
	delta := int64(peak.Load()) - int64(base)
	t.Logf("heap in use: base %d MiB, peak delta %.1f MiB while copying a %d MiB layer", base>>20, float64(delta)/(1<<20), size>>20)
	if delta > 16<<20 {
		t.Fatalf("heap in use grew by %d MiB while copying a %d MiB blob: not streamed", delta>>20, size>>20)
	}
	if got := status(t, r.bundled.URL(), src.CacheRepository(), "blobs", layerDigest.String()); got != http.StatusOK {
		t.Fatalf("HEAD layer = %d", got)
	}
}

// stallingReader hands on the first half of a body, signals, then blocks
// until its request is gone: an upstream that hangs mid-blob.
type stallingReader struct {
	rc      io.ReadCloser
	ctx     context.Context
	half    int64
	n       int64
	reached chan struct{}
	once    sync.Once
}

func (s *stallingReader) Read(p []byte) (int, error) {
	if s.n >= s.half {
		s.once.Do(func() { close(s.reached) })
		<-s.ctx.Done()
		return 0, s.ctx.Err()
	}
	if rest := s.half - s.n; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := s.rc.Read(p)
	s.n += int64(n)
	return n, err
}

func (s *stallingReader) Close() error { return s.rc.Close() }

func TestCopyCanceledMidBlobResumes(t *testing.T) {
	r := newRig(t)
	big := randomBytes(4 << 20)
	small := randomBytes(1000)
	root, descs := pushManifest(t, r.up, "team/app", "v1", []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`), [][]byte{small, big})
	bigDesc := descs[2]

	u, _ := url.Parse(r.up.URL())
	reached := make(chan struct{})
	var stall atomic.Bool
	stall.Store(true)
	srv := httptest.NewServer(&httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(u) },
		ModifyResponse: func(resp *http.Response) error {
			if stall.Load() && resp.Request.Method == http.MethodGet && strings.HasSuffix(resp.Request.URL.Path, "/blobs/"+bigDesc.Digest.String()) {
				resp.Body = &stallingReader{rc: resp.Body, ctx: resp.Request.Context(), half: bigDesc.Size / 2, reached: reached}
			}
			return nil
		},
	})
	t.Cleanup(srv.Close)
	src := ref(strings.TrimPrefix(srv.URL, "http://"), "team/app")
	repo := src.CacheRepository()
	c := r.copier()

	ctx, cancel := context.WithCancel(copyCtx(t))
	go func() {
		select {
		case <-reached:
		case <-time.After(time.Minute):
		}
		cancel() // the controller dies mid-blob
	}()
	if _, err := c.Copy(ctx, src, root, registryclient.Credentials{}, "tagger-gen-1"); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled Copy: err = %v, want context.Canceled", err)
	}
	if got := status(t, r.bundled.URL(), repo, "blobs", bigDesc.Digest.String()); got != http.StatusNotFound {
		t.Fatalf("HEAD half-sent blob = %d, want 404", got)
	}
	if got := status(t, r.bundled.URL(), repo, "manifests", root.String()); got != http.StatusNotFound {
		t.Fatalf("HEAD manifest = %d, want 404", got)
	}

	stall.Store(false)
	p, err := c.Copy(copyCtx(t), src, root, registryclient.Credentials{}, "tagger-gen-1")
	if err != nil {
		t.Fatalf("resumed Copy: %v", err)
	}
	if p.Uploaded < 1 || p.Uploaded+p.Present != 3 || p.BytesUploaded < bigDesc.Size {
		t.Fatalf("resumed Copy progress = %+v, want the big layer uploaded and the rest present or uploaded", p)
	}
	assertContent(t, r.bundled, repo, "blobs", bigDesc.Digest)
	assertContent(t, r.bundled, repo, "manifests", root)
}
