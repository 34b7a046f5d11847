package imagecopy

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	testrig "github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/pkg/registryclient"
)

// genImage is an image manifest built from given layer bytes, so that
// generations can share layers.
type genImage struct {
	Digest   digest.Digest
	Manifest []byte
	Config   ocispec.Descriptor
	Layers   []ocispec.Descriptor
}

func (g genImage) blobs() []digest.Digest {
	out := []digest.Digest{g.Config.Digest}
	for _, l := range g.Layers {
		out = append(out, l.Digest)
	}
	return out
}

func layerBytes(t *testing.T) []byte {
	t.Helper()
	b := make([]byte, 2048)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// pushGenImage pushes layers (bytes; the same bytes make the same blob), a
// config unique to name, and their manifest by digest.
func pushGenImage(t *testing.T, reg *testrig.Registry, repo, name, arch string, layers ...[]byte) genImage {
	t.Helper()
	var img genImage
	var diffIDs []digest.Digest
	for _, l := range layers {
		img.Layers = append(img.Layers, reg.PushBlob(t, repo, ocispec.MediaTypeImageLayerGzip, l))
		diffIDs = append(diffIDs, digest.FromBytes(l))
	}
	cfg, err := json.Marshal(ocispec.Image{
		Platform: ocispec.Platform{OS: "linux", Architecture: arch},
		Config:   ocispec.ImageConfig{Labels: map[string]string{"generation": name}},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: diffIDs},
	})
	if err != nil {
		t.Fatal(err)
	}
	img.Config = reg.PushBlob(t, repo, ocispec.MediaTypeImageConfig, cfg)
	img.Manifest, err = json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    img.Config,
		Layers:    img.Layers,
	})
	if err != nil {
		t.Fatal(err)
	}
	img.Digest = reg.PushManifest(t, repo, digest.FromBytes(img.Manifest).String(), ocispec.MediaTypeImageManifest, img.Manifest)
	return img
}

// pushGenIndex pushes an OCI index of already pushed images.
func pushGenIndex(t *testing.T, reg *testrig.Registry, repo string, imgs map[string]genImage) digest.Digest {
	t.Helper()
	var descs []ocispec.Descriptor
	for _, arch := range slices.Sorted(maps.Keys(imgs)) {
		img := imgs[arch]
		descs = append(descs, ocispec.Descriptor{
			MediaType: ocispec.MediaTypeImageManifest, Digest: img.Digest, Size: int64(len(img.Manifest)),
			Platform: &ocispec.Platform{OS: "linux", Architecture: arch},
		})
	}
	body, err := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: descs,
	})
	if err != nil {
		t.Fatal(err)
	}
	return reg.PushManifest(t, repo, digest.FromBytes(body).String(), ocispec.MediaTypeImageIndex, body)
}

func assertGone(t *testing.T, base, repo, kind string, ds ...digest.Digest) {
	t.Helper()
	for _, d := range ds {
		if got := status(t, base, repo, kind, d.String()); got != http.StatusNotFound {
			t.Errorf("%s %s: HEAD = %d, want 404", kind, d, got)
		}
	}
}

func assertPresent(t *testing.T, reg *testrig.Registry, repo, kind string, ds ...digest.Digest) {
	t.Helper()
	for _, d := range ds {
		assertContent(t, reg, repo, kind, d)
	}
}

// TestPruneGenerationsSharingLayers is scenario 6 of the cache issue: three
// generations of one image sharing layers, and two multi-arch generations
// sharing a platform image, copied into the bundled registry; the dropped
// ones are pruned and the real garbage collector run. What only the dropped
// generations referenced is gone, everything the kept ones need is intact.
func TestPruneGenerationsSharingLayers(t *testing.T) {
	up := testrig.NewRegistry(t, testrig.RegistryOptions{})
	bundled := testrig.NewRegistry(t, testrig.RegistryOptions{})
	client := registryclient.New(registryclient.Options{HTTPClient: &http.Client{}, PlainHTTP: func(string) bool { return true }})
	c := &Copier{Upstream: client, Registry: bundled.URL()}
	ctx := copyCtx(t)

	const upRepo = "team/app"
	src := ref(up.Host(), upRepo)
	repo := src.CacheRepository()

	A, B, C, D := layerBytes(t), layerBytes(t), layerBytes(t), layerBytes(t)
	F, G, H := layerBytes(t), layerBytes(t), layerBytes(t)
	gen1 := pushGenImage(t, up, upRepo, "g1", "amd64", A, B)
	gen2 := pushGenImage(t, up, upRepo, "g2", "amd64", A, C)
	gen3 := pushGenImage(t, up, upRepo, "g3", "amd64", A, C, D)
	// gen4 and gen5 are indexes sharing their amd64 image; arm64 differs.
	amd := pushGenImage(t, up, upRepo, "g45-amd64", "amd64", A, F)
	arm4 := pushGenImage(t, up, upRepo, "g4-arm64", "arm64", G)
	arm5 := pushGenImage(t, up, upRepo, "g5-arm64", "arm64", H)
	gen4 := pushGenIndex(t, up, upRepo, map[string]genImage{"amd64": amd, "arm64": arm4})
	gen5 := pushGenIndex(t, up, upRepo, map[string]genImage{"amd64": amd, "arm64": arm5})

	roots := []digest.Digest{gen1.Digest, gen2.Digest, gen3.Digest, gen4, gen5}
	for i, root := range roots {
		if _, err := c.Copy(ctx, src, root, registryclient.Credentials{}, "tagger.app.g"+string(rune('1'+i))); err != nil {
			t.Fatalf("copy generation %d: %v", i+1, err)
		}
	}

	res, err := c.Prune(ctx, repo, []digest.Digest{gen1.Digest, gen4}, Keep(gen2.Digest, gen3.Digest, gen5))
	if err != nil {
		t.Fatalf("Prune: %v", err)
	}
	// Children before their index; gen4's amd64 image is gen5's too.
	wantDeleted := []digest.Digest{gen1.Digest, arm4.Digest, gen4}
	if !slices.Equal(res.Deleted, wantDeleted) {
		t.Fatalf("Deleted = %v, want %v", res.Deleted, wantDeleted)
	}
	if res.Kept != 5 { // gen2, gen3, gen5 and its two images
		t.Fatalf("Kept = %d, want 5", res.Kept)
	}
	// Manifests and the tags on them are gone at once; blobs wait for GC.
	assertGone(t, bundled.URL(), repo, "manifests", gen1.Digest, arm4.Digest, gen4)
	assertGone(t, bundled.URL(), repo, "manifests", "tagger.app.g1", "tagger.app.g4")
	assertPresent(t, bundled, repo, "blobs", digest.FromBytes(B))

	// A second run finds nothing left to do.
	res, err = c.Prune(ctx, repo, []digest.Digest{gen1.Digest, gen4}, Keep(gen2.Digest, gen3.Digest, gen5))
	if err != nil || len(res.Deleted) != 0 || res.Kept != 5 {
		t.Fatalf("second Prune = %+v, %v; want nothing deleted", res, err)
	}

	bundled.CollectGarbage(t)

	// What only the dropped generations referenced is gone ...
	assertGone(t, bundled.URL(), repo, "blobs", digest.FromBytes(B), gen1.Config.Digest, digest.FromBytes(G), arm4.Config.Digest)
	assertGone(t, bundled.URL(), repo, "manifests", gen1.Digest, arm4.Digest, gen4)
	// ... the shared layer stays, and the kept generations are whole and
	// byte-identical, under their tags too.
	assertPresent(t, bundled, repo, "blobs", digest.FromBytes(A))
	for _, img := range []genImage{gen2, gen3, amd, arm5} {
		assertPresent(t, bundled, repo, "manifests", img.Digest)
		assertPresent(t, bundled, repo, "blobs", img.blobs()...)
	}
	assertPresent(t, bundled, repo, "manifests", gen5)
	for i, root := range map[int]digest.Digest{2: gen2.Digest, 3: gen3.Digest, 5: gen5} {
		tag := "tagger.app.g" + string(rune('0'+i))
		_, body := bundled.Get(t, repo, "/v2/"+repo+"/manifests/"+tag, manifestAccept)
		if digest.FromBytes(body) != root {
			t.Errorf("tag %s no longer points at %s", tag, root)
		}
	}

	// Pruning after GC is still a no-op, and a copy of the kept roots
	// finds everything present.
	if res, err := c.Prune(ctx, repo, []digest.Digest{gen1.Digest, gen4}, Keep(gen2.Digest, gen3.Digest, gen5)); err != nil || len(res.Deleted) != 0 {
		t.Fatalf("Prune after GC = %+v, %v; want nothing deleted", res, err)
	}
	p, err := c.Copy(ctx, src, gen5, registryclient.Credentials{}, "tagger.app.g5")
	if err != nil || p.Uploaded != 0 || p.ManifestsPushed != 0 {
		t.Fatalf("re-copy of kept gen5 after GC = %+v, %v; want everything present", p, err)
	}
}

// TestPruneKeepsWhatIsKept: a dropped root also kept (by another Tag) is not
// deleted, nor is a dropped image that a kept index lists; an unknown
// dropped root is no error.
func TestPruneKeepsWhatIsKept(t *testing.T) {
	r := newRig(t)
	c := r.copier()
	ctx := copyCtx(t)
	const upRepo = "team/lib"
	src := ref(r.up.Host(), upRepo)
	repo := src.CacheRepository()

	img := pushGenImage(t, r.up, upRepo, "g1", "amd64", layerBytes(t))
	idx := pushGenIndex(t, r.up, upRepo, map[string]genImage{"amd64": img})
	for i, root := range []digest.Digest{img.Digest, idx} {
		if _, err := c.Copy(ctx, src, root, registryclient.Credentials{}, "tagger.lib.g"+string(rune('1'+i))); err != nil {
			t.Fatalf("copy: %v", err)
		}
	}
	unknown := digest.FromString("never pushed")

	res, err := c.Prune(ctx, repo, []digest.Digest{img.Digest, idx, unknown}, Keep(idx))
	if err != nil {
		t.Fatalf("Prune: %v", err)
	}
	if len(res.Deleted) != 0 || res.Kept != 2 {
		t.Fatalf("Prune = %+v; want nothing deleted, 2 kept", res)
	}
	assertPresent(t, r.bundled, repo, "manifests", img.Digest, idx)
	assertPresent(t, r.bundled, repo, "blobs", img.blobs()...)

	// A kept root the repository does not have protects nothing but does
	// not stop the prune.
	res, err = c.Prune(ctx, repo, []digest.Digest{idx}, Keep(unknown))
	if err != nil || !slices.Equal(res.Deleted, []digest.Digest{img.Digest, idx}) || res.Kept != 0 {
		t.Fatalf("Prune = %+v, %v; want %s and %s deleted", res, err, img.Digest, idx)
	}
}

// TestPruneAbortsWhenAKeptTreeIsUnreadable: if a kept tree cannot be read
// nothing is deleted, and the error names the root and the request.
func TestPruneAbortsWhenAKeptTreeIsUnreadable(t *testing.T) {
	r := newRig(t)
	c := r.copier()
	ctx := copyCtx(t)
	const upRepo = "team/svc"
	src := ref(r.up.Host(), upRepo)
	repo := src.CacheRepository()

	shared := layerBytes(t)
	old := pushGenImage(t, r.up, upRepo, "g1", "amd64", shared)
	cur := pushGenImage(t, r.up, upRepo, "g2", "amd64", shared)
	for _, root := range []digest.Digest{old.Digest, cur.Digest} {
		if _, err := c.Copy(ctx, src, root, registryclient.Credentials{}, ""); err != nil {
			t.Fatalf("copy: %v", err)
		}
	}

	// The bundled registry fails reads of the kept root.
	target, _ := url.Parse(r.bundled.URL())
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodGet && strings.HasSuffix(req.URL.Path, "/manifests/"+cur.Digest.String()) {
			http.Error(w, "storage on fire", http.StatusInternalServerError)
			return
		}
		proxy.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	failing := &Copier{Upstream: r.client, Registry: srv.URL}

	res, err := failing.Prune(ctx, repo, []digest.Digest{old.Digest}, Keep(cur.Digest))
	if err == nil {
		t.Fatalf("Prune = %+v, want an error", res)
	}
	for _, want := range []string{repo, "kept root " + cur.Digest.String(), "500", "storage on fire"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if len(res.Deleted) != 0 {
		t.Fatalf("Deleted = %v, want none", res.Deleted)
	}
	assertPresent(t, r.bundled, repo, "manifests", old.Digest, cur.Digest)

	// Bad input is refused before any request.
	if _, err := c.Prune(context.Background(), repo, []digest.Digest{"sha256:nope"}, Keep()); err == nil || !strings.Contains(err.Error(), "sha256:nope") {
		t.Fatalf("Prune with an invalid digest: %v", err)
	}
}

// gatedReader blocks its first Read until release is closed, after
// signalling reached: an upstream blob that arrives only when the test says.
type gatedReader struct {
	rc       io.ReadCloser
	reached  chan<- struct{}
	release  <-chan struct{}
	released bool
}

func (g *gatedReader) Read(p []byte) (int, error) {
	if !g.released {
		g.reached <- struct{}{}
		<-g.release
		g.released = true
	}
	return g.rc.Read(p)
}

func (g *gatedReader) Close() error { return g.rc.Close() }

// TestPruneWaitsForCopy: a Prune of a repository waits for a Copy into it
// to finish and only then asks for its keep list, so a root the copy just
// pushed (recorded before the copy began) is kept.
func TestPruneWaitsForCopy(t *testing.T) {
	r := newRig(t)
	old, _ := pushManifest(t, r.up, "team/app", "old", []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"old":true}`), [][]byte{randomBytes(1000)})
	root, descs := pushManifest(t, r.up, "team/app", "v1", []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`), [][]byte{randomBytes(1 << 20)})
	layer := descs[1]

	u, _ := url.Parse(r.up.URL())
	reached, release := make(chan struct{}, 1), make(chan struct{})
	var releaseOnce sync.Once
	releaseGate := func() { releaseOnce.Do(func() { close(release) }) }
	srv := httptest.NewServer(&httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(u) },
		ModifyResponse: func(resp *http.Response) error {
			if resp.Request.Method == http.MethodGet && strings.HasSuffix(resp.Request.URL.Path, "/blobs/"+layer.Digest.String()) {
				resp.Body = &gatedReader{rc: resp.Body, reached: reached, release: release}
			}
			return nil
		},
	})
	t.Cleanup(srv.Close)
	t.Cleanup(releaseGate) // runs before srv.Close: a failed test leaves no handler blocked
	src := ref(strings.TrimPrefix(srv.URL, "http://"), "team/app")
	repo := src.CacheRepository()
	c := r.copier()
	ctx := copyCtx(t)
	if _, err := c.Copy(ctx, src, old, registryclient.Credentials{}, "tagger-gen-1"); err != nil {
		t.Fatal(err)
	}

	copied := make(chan error, 1)
	go func() {
		_, err := c.Copy(ctx, src, root, registryclient.Credentials{}, "tagger-gen-2")
		copied <- err
	}()
	select {
	case <-reached:
	case <-time.After(time.Minute):
		t.Fatal("the copy never fetched the gated layer")
	}

	var keepCalled atomic.Bool
	var rootStatus atomic.Int32
	pruned := make(chan error, 1)
	go func() {
		_, err := c.Prune(ctx, repo, []digest.Digest{old}, func(context.Context) ([]digest.Digest, error) {
			keepCalled.Store(true)
			req, _ := http.NewRequest(http.MethodHead, r.bundled.URL()+"/v2/"+repo+"/manifests/"+root.String(), nil)
			req.Header.Set("Accept", ocispec.MediaTypeImageManifest)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return nil, err
			}
			resp.Body.Close()
			rootStatus.Store(int32(resp.StatusCode))
			return []digest.Digest{root}, nil
		})
		pruned <- err
	}()
	testrig.WaitFor(t, time.Minute, "the prune waiting behind the copy", func() (bool, string) {
		n := c.locks.holders(repo)
		return n == 2, fmt.Sprintf("%d holders", n)
	})
	if keepCalled.Load() {
		t.Fatal("the prune read its keep list while a copy into the repository ran")
	}
	releaseGate()
	if err := <-copied; err != nil {
		t.Fatalf("copy: %v", err)
	}
	if err := <-pruned; err != nil {
		t.Fatalf("prune: %v", err)
	}
	if got := rootStatus.Load(); got != http.StatusOK {
		t.Fatalf("the keep list was read when the copied manifest was at %d, want 200 (copy finished)", got)
	}
	assertContent(t, r.bundled, repo, "manifests", root)
	if got := status(t, r.bundled.URL(), repo, "manifests", old.String()); got != http.StatusNotFound {
		t.Fatalf("pruned manifest: HEAD %d, want 404", got)
	}
	if n := c.locks.holders(repo); n != 0 {
		t.Fatalf("%d lock holders left for %s", n, repo)
	}
}
