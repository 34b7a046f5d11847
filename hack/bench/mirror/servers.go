package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/pkg/httplimits"
	"github.com/tagger-project/tagger/pkg/mirror"
	"github.com/tagger-project/tagger/pkg/pins"
)

// runServers starts the registry, the mirror and the ceiling server, and runs
// the manifest and blob benchmarks against them.
func runServers(ctx context.Context, r *program, c *config, res *results) error {
	regBin := filepath.Join(c.testbin, "registry")
	if fi, err := os.Stat(regBin); err != nil || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("registry binary missing in %s: run `make testbin` (or pass -testbin)", c.testbin)
	}
	if !c.noManifest {
		if _, err := exec.LookPath(c.wrk); err != nil {
			return fmt.Errorf("wrk: %w (apt-get install -y wrk, and see hack/bench/mirror.sh for HEAD)", err)
		}
	}

	logf("starting the distribution registry (%s)", regBin)
	regOpts, bundled, err := benchAuth(r, c)
	if err != nil {
		return err
	}
	reg := rig.StartRegistry(r, regBin, regOpts)
	regPID := childPID(regBin)
	if regPID == 0 {
		logf("warning: registry pid not found; its CPU time is not reported")
	}

	ref, err := pins.ParseReference(benchImage)
	if err != nil {
		return err
	}
	cacheRepo := ref.CacheRepository()
	idx := reg.PushIndex(r, cacheRepo, ref.Tag, []string{"linux/amd64", "linux/arm64"},
		rig.IndexOptions{Attestations: true})
	logf("pushed %s as %s/%s:%s: %s, %d bytes", benchImage, reg.Host(), cacheRepo, ref.Tag, idx.Digest, idx.Size)

	var blob ocispec.Descriptor
	if !c.noBlob {
		size := int64(c.blobMiB) << 20
		data := make([]byte, size)
		seed := [32]byte{'t', 'a', 'g', 'g', 'e', 'r'}
		_, _ = rand.NewChaCha8(seed).Read(data)
		logf("pushing a %d MiB blob", c.blobMiB)
		blob = reg.PushBlob(r, cacheRepo, ocispec.MediaTypeImageLayer, data)
		// data is dead from here: return its 256 MiB before measuring.
		runtime.GC()
		debug.FreeOSMemory()
		res.BlobBytes = size
	}

	// The pin table: the bench image and c.pins-1 synthetic pins, as the
	// node agent builds it from Tags.
	tags := make([]v1alpha1.Tag, 0, c.pins)
	tags = append(tags, v1alpha1.Tag{
		ObjectMeta: metav1.ObjectMeta{Name: "bench", CreationTimestamp: metav1.Now()},
		Spec:       v1alpha1.TagSpec{Image: benchImage},
		Status: v1alpha1.TagStatus{
			ServedGeneration: 1, ServedDigest: idx.Digest.String(),
			Generations: []v1alpha1.Generation{{Generation: 1, Image: ref.String(), Digest: idx.Digest.String(),
				MediaType: idx.MediaType, Size: idx.Size, Cached: true}},
		},
	})
	for i := 1; i < c.pins; i++ {
		tags = append(tags, synthTag(i, 1))
	}
	snap := pins.BuildSnapshot(tags)
	if snap.Len() != c.pins {
		return fmt.Errorf("pin table holds %d pins, want %d", snap.Len(), c.pins)
	}
	table := pins.NewTable()
	table.Store(snap)

	// The mirror as the node agent builds it (the manifest cache at its
	// default bound), and the same with the cache off, for comparison.
	if err := bundled.start(reg.URL(), cacheRepo); err != nil {
		return err
	}
	h, err := mirror.New(mirror.Options{Table: table, RegistryURL: reg.URL(), HTTPClient: bundled.client(), Metrics: mirror.NewMetrics(prometheus.NewRegistry())})
	if err != nil {
		return err
	}
	noCache, err := mirror.New(mirror.Options{Table: table, RegistryURL: reg.URL(), HTTPClient: bundled.client(), ManifestCacheBytes: -1,
		Metrics: mirror.NewMetrics(prometheus.NewRegistry())})
	if err != nil {
		return err
	}
	if err := checkMirrorPaths(table, reg.URL(), idx, bundled); err != nil {
		return err
	}
	mirrorURL, err := serve(r, h)
	if err != nil {
		return err
	}
	noCacheURL, err := serve(r, noCache)
	if err != nil {
		return err
	}
	ceil := &ceiling{paths: []string{mirrorPath, "/v2/library/bench/manifests/" + idx.Digest.String()}, body: idx.Manifest, digest: []string{idx.Digest.String()},
		mediaType: []string{idx.MediaType}, length: []string{strconv.Itoa(len(idx.Manifest))}}
	ceilURL, err := serve(r, ceil)
	if err != nil {
		return err
	}
	res.Fixture = map[string]any{
		"image": benchImage, "manifest_digest": idx.Digest.String(), "manifest_media_type": idx.MediaType,
		"manifest_bytes": idx.Size, "registry": reg.URL(), "mirror": mirrorURL, "ceiling": ceilURL, "registry_pid": regPID,
	}

	procs := &procs{registry: regPID}
	if !c.noManifest {
		byDigest := "/v2/library/bench/manifests/" + idx.Digest.String()
		cases := []benchCase{
			{Name: caseHead, Method: http.MethodHead, Targets: []target{
				{Name: "mirror", URL: mirrorURL + mirrorPath + mirrorNS},
				{Name: "distribution", URL: reg.URL() + "/v2/" + cacheRepo + "/manifests/" + ref.Tag},
				{Name: "ceiling", URL: ceilURL + mirrorPath + mirrorNS},
			}},
			{Name: caseGet, Method: http.MethodGet},
			{Name: caseGetDigest, Method: http.MethodGet, Targets: []target{
				{Name: "mirror", URL: mirrorURL + byDigest + mirrorNS},
				{Name: targetNoCache, URL: noCacheURL + byDigest + mirrorNS},
				{Name: "distribution", URL: reg.URL() + "/v2/" + cacheRepo + "/manifests/" + idx.Digest.String()},
				{Name: "ceiling", URL: ceilURL + byDigest + mirrorNS},
			}},
		}
		// GET by tag: the HEAD servers, plus the mirror with its cache off
		// (a HEAD by tag never reads the registry, cache or not).
		cases[1].Targets = append([]target{cases[0].Targets[0], {Name: targetNoCache, URL: noCacheURL + mirrorPath + mirrorNS}},
			cases[0].Targets[1:]...)
		for _, bc := range cases {
			for _, t := range bc.Targets {
				if err := checkManifest(ctx, t, idx); err != nil {
					return err
				}
			}
		}
		runs, err := benchManifests(ctx, r, c, cases, procs)
		if err != nil {
			return err
		}
		res.Manifest = runs
	}
	if !c.noBlob {
		direct := reg.URL() + "/v2/" + cacheRepo + "/blobs/" + blob.Digest.String()
		proxyURL, err := serve(r, newCopyProxy(direct))
		if err != nil {
			return err
		}
		targets := []target{
			{Name: "mirror", URL: mirrorURL + "/v2/library/bench/blobs/" + blob.Digest.String() + mirrorNS},
			{Name: "distribution", URL: direct},
			{Name: "go-proxy", URL: proxyURL + "/blob"},
		}
		runs, err := benchBlob(ctx, c, targets, blob, procs)
		if err != nil {
			return err
		}
		res.Blob = runs
	}
	return nil
}

// serve runs h on an ephemeral loopback port until the rig is cleaned up,
// with the node agent's mirror server settings (timeouts, connection limit,
// error rewriting), so what is measured is what a node runs.
func serve(r *program, h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := httplimits.Mirror.New(h)
	done := make(chan struct{})
	go func() {
		_ = srv.Serve(httplimits.RewriteErrors(httplimits.Mirror.Listener(ln), mirror.ServerError))
		close(done)
	}()
	r.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		_ = srv.Close()
		<-done
	})
	return "http://" + ln.Addr().String(), nil
}

// ceiling is the least a server can do for a pinned tag: the same bytes and
// headers as the mirror, from memory, with net/http.
type ceiling struct {
	paths                     []string // by tag, by digest
	body                      []byte
	digest, mediaType, length []string
}

func (c *ceiling) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if (r.URL.Path != c.paths[0] && r.URL.Path != c.paths[1]) || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h["Docker-Content-Digest"] = c.digest
	h["Content-Type"] = c.mediaType
	h["Content-Length"] = c.length
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(c.body)
	}
}

// copyProxy is the least a proxy written in Go can do for a blob: one
// net/http client request to the registry, io.Copy to the response. It shows
// what any user-space proxy costs on top of the registry, whatever its code.
type copyProxy struct {
	url    string
	client *http.Client
}

func newCopyProxy(url string) *copyProxy {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DisableCompression = true
	return &copyProxy{url: url, client: &http.Client{Transport: tr}}
}

func (p *copyProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req, err := http.NewRequestWithContext(r.Context(), r.Method, p.url, nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	setBenchAuth(req)
	resp, err := p.client.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer func() { _ = resp.Body.Close() }()
	for _, k := range []string{"Content-Type", "Docker-Content-Digest", "Content-Length"} {
		w.Header()[k] = resp.Header[k]
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

// countingTransport counts the mirror's requests to the bundled registry.
type countingTransport struct {
	n  atomic.Int64
	rt http.RoundTripper
}

func (t *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.n.Add(1)
	return t.rt.RoundTrip(r)
}

// checkMirrorPaths checks, on a second handler over the same table whose
// client counts requests, what the numbers are about: a pinned HEAD is
// answered without the bundled registry; the first pinned GET reads it once
// and fills the manifest cache; later GETs, by tag and by digest, are
// answered from the cache; and with the cache off every GET reads it.
func checkMirrorPaths(table *pins.Table, registryURL string, idx rig.Index, bundled *benchAuthState) error {
	byDigest := "/v2/library/bench/manifests/" + idx.Digest.String()
	for _, cacheBytes := range []int64{0, -1} {
		// Counted above the token transport: the mirror's own requests,
		// not the token fetches.
		ct := &countingTransport{rt: http.DefaultTransport}
		if hc := bundled.client(); hc != nil {
			ct.rt = hc.Transport
		}
		h, err := mirror.New(mirror.Options{Table: table, RegistryURL: registryURL, HTTPClient: &http.Client{Transport: ct}, ManifestCacheBytes: cacheBytes})
		if err != nil {
			return err
		}
		for i, step := range []struct {
			method, path string
			asked        int64 // registry requests, cache on
		}{
			{http.MethodHead, mirrorPath, 0},
			{http.MethodGet, mirrorPath, 1},
			{http.MethodGet, mirrorPath, 0},
			{http.MethodGet, byDigest, 0},
			{http.MethodHead, byDigest, 0},
		} {
			req := httptest.NewRequest(step.method, step.path+mirrorNS, nil)
			req.Header.Set("Accept", acceptHeader)
			w := httptest.NewRecorder()
			before := ct.n.Load()
			h.ServeHTTP(w, req)
			asked := ct.n.Load() - before
			want := step.asked
			if cacheBytes < 0 && !(step.method == http.MethodHead && step.path == mirrorPath) {
				want = 1
			}
			if w.Code != http.StatusOK || w.Header().Get("Docker-Content-Digest") != idx.Digest.String() {
				return fmt.Errorf("mirror %s %s: %d %v", step.method, step.path, w.Code, w.Header())
			}
			if asked != want {
				return fmt.Errorf("mirror (cache bytes %d) step %d, %s %s: asked the bundled registry %d times, want %d",
					cacheBytes, i, step.method, step.path, asked, want)
			}
			if step.method == http.MethodGet && !bytes.Equal(w.Body.Bytes(), idx.Manifest) {
				return fmt.Errorf("mirror %s: body is not the pinned manifest", step.path)
			}
		}
	}
	logf("checked: a pinned HEAD is answered from the pin table alone; with the manifest cache one GET reads the bundled registry once, " +
		"then GETs by tag and by digest are answered from memory; with the cache off every GET reads it")
	return nil
}
