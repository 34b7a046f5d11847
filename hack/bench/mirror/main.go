// Command mirror benchmarks the node mirror (pkg/mirror) against the real
// alternatives, in one run, on one machine, with one load generator, and
// reports ratios (docs/benchmarks.md, DESIGN.md section 6):
//
//   - pinned-tag manifest HEAD and GET, with wrk: through the mirror (backed
//     by the real distribution registry as the bundled registry; with its
//     manifest cache at the default bound, as the node agent runs it, and
//     for GETs also with the cache off), from the distribution registry
//     directly, and from a minimal net/http server that answers the same
//     bytes and headers from memory (the ceiling);
//   - GET of a 256 MiB blob through the mirror and from the registry
//     directly, with a Go client that discards the body;
//   - the memory of a pin table of 10,000 pins in a fresh process (the "mem"
//     subcommand), alone and with the Tag objects an informer would hold.
//
// The registry is the binary `make testbin` builds; wrk must handle HEAD
// responses (stock wrk does not, wg/wrk#198: hack/bench/mirror.sh builds a
// patched one). Every process the program starts is stopped when it exits,
// on error and on SIGINT/SIGTERM too.
//
//	hack/bench/mirror.sh                  # what `make bench` runs
//	go run ./hack/bench/mirror -wrk PATH  # the same, with a given wrk
//	go run ./hack/bench/mirror mem -pins 10000 -keep-tags
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
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
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/hack/bench/internal/benchproc"
	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/pkg/mirror"
	"github.com/tagger-project/tagger/pkg/pins"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "mem" {
		os.Exit(memMain(os.Args[2:]))
	}
	os.Exit(benchMain(os.Args[1:]))
}

// The pinned image. Its copy in the bundled registry lives under
// pins.Reference.CacheRepository ("docker.io/library/bench"), as the node
// agent puts it there; containerd asks the mirror for
// /v2/library/bench/manifests/v1?ns=docker.io.
const (
	benchImage = "docker.io/library/bench:v1"
	mirrorPath = "/v2/library/bench/manifests/v1"
	mirrorNS   = "?ns=docker.io"
)

// acceptHeader is the Accept line containerd v2 sends when it resolves a tag
// (core/remotes/docker/resolver.go).
const acceptHeader = "application/vnd.docker.distribution.manifest.v2+json, " +
	"application/vnd.docker.distribution.manifest.list.v2+json, " +
	"application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*"

type config struct {
	wrk                 string
	duration, warmup    time.Duration
	conns, threads      int
	repeat              int
	blobMiB, blobRuns   int
	pins                int
	testbin             string
	out                 string
	noManifest, noBlob  bool
	noMem               bool
	memGenerationsWorst int
}

func benchMain(args []string) int {
	var c config
	fs := flag.NewFlagSet("mirror", flag.ExitOnError)
	fs.StringVar(&c.wrk, "wrk", "wrk", "wrk binary; it must handle HEAD responses (see hack/bench/mirror.sh)")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "wrk -d of each measured run (whole seconds)")
	fs.DurationVar(&c.warmup, "warmup", 2*time.Second, "wrk -d of the unmeasured warm-up of each server and method")
	fs.IntVar(&c.conns, "c", 16, "wrk -c")
	fs.IntVar(&c.threads, "t", 2, "wrk -t")
	fs.IntVar(&c.repeat, "repeat", 3, "measured runs of each case (the median is reported); also memory runs")
	fs.IntVar(&c.blobMiB, "blob-mib", 256, "blob size in MiB")
	fs.IntVar(&c.blobRuns, "blob-runs", 10, "sequential downloads of the blob from each server")
	fs.IntVar(&c.pins, "pins", 10000, "pins in the table (the mirror's table and the memory runs)")
	fs.IntVar(&c.memGenerationsWorst, "mem-worst-generations", v1alpha1.DefaultHistoryLimit,
		"generations per Tag in the worst-case memory run (0: skip it)")
	fs.StringVar(&c.testbin, "testbin", rig.BinDir(), "directory holding the registry binary (make testbin)")
	fs.StringVar(&c.out, "json", "", "also write every raw measurement to this JSON file")
	fs.BoolVar(&c.noManifest, "no-manifest", false, "skip the manifest (wrk) benchmark")
	fs.BoolVar(&c.noBlob, "no-blob", false, "skip the blob benchmark")
	fs.BoolVar(&c.noMem, "no-mem", false, "skip the memory runs")
	_ = fs.Parse(args)
	if c.repeat < 1 || c.blobRuns < 1 || c.pins < 1 || c.blobMiB < 1 || c.duration < time.Second {
		fmt.Fprintln(os.Stderr, "bench: -repeat, -blob-runs, -pins, -blob-mib must be >= 1 and -duration >= 1s")
		return 2
	}

	return benchproc.Main("tagger-bench", func(ctx context.Context, r *rig.Program) error { return run(ctx, r, &c) })
}

// rig is the program's rig.T, owning every cleanup.
type program = rig.Program

func logf(f string, a ...any) { fmt.Fprintf(os.Stderr, "bench: "+f+"\n", a...) }

// results is everything measured; -json writes it.
type results struct {
	Machine   machine         `json:"machine"`
	Config    map[string]any  `json:"config"`
	Manifest  []wrkRun        `json:"manifest,omitempty"`
	Blob      []blobRun       `json:"blob,omitempty"`
	BlobBytes int64           `json:"blob_bytes,omitempty"`
	Memory    []memRunResults `json:"memory,omitempty"`
	Fixture   map[string]any  `json:"fixture,omitempty"`
}

func run(ctx context.Context, r *program, c *config) error {
	res := &results{Machine: machineInfo(c.wrk), Config: map[string]any{
		"wrk": fmt.Sprintf("-c%d -t%d -d%s --latency", c.conns, c.threads, c.duration), "repeat": c.repeat,
		"warmup": c.warmup.String(), "blob_mib": c.blobMiB, "blob_runs": c.blobRuns, "pins": c.pins,
	}}
	logf("machine: %d CPUs (%s), GOMAXPROCS %d, load average %s", res.Machine.NumCPU, res.Machine.CPU,
		runtime.GOMAXPROCS(0), benchproc.Loadavg())

	if !c.noMem {
		mem, err := runMemory(ctx, c)
		if err != nil {
			return err
		}
		res.Memory = mem
	}

	if !c.noManifest || !c.noBlob {
		if err := runServers(ctx, r, c, res); err != nil {
			return err
		}
	}

	report(os.Stdout, c, res)
	if c.out != "" {
		if err := benchproc.WriteJSON(c.out, res); err != nil {
			return err
		}
		logf("raw results written to %s", c.out)
	}
	return nil
}

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
	reg := rig.StartRegistry(r, regBin, rig.RegistryOptions{})
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
	h, err := mirror.New(mirror.Options{Table: table, RegistryURL: reg.URL(), Metrics: mirror.NewMetrics(prometheus.NewRegistry())})
	if err != nil {
		return err
	}
	noCache, err := mirror.New(mirror.Options{Table: table, RegistryURL: reg.URL(), ManifestCacheBytes: -1,
		Metrics: mirror.NewMetrics(prometheus.NewRegistry())})
	if err != nil {
		return err
	}
	if err := checkMirrorPaths(table, reg.URL(), idx); err != nil {
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

// serve runs h on an ephemeral loopback port until the rig is cleaned up.
func serve(r *program, h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() { _ = srv.Serve(ln); close(done) }()
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
func checkMirrorPaths(table *pins.Table, registryURL string, idx rig.Index) error {
	byDigest := "/v2/library/bench/manifests/" + idx.Digest.String()
	for _, cacheBytes := range []int64{0, -1} {
		ct := &countingTransport{rt: http.DefaultTransport}
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

// The manifest cases. containerd resolves a tag with HEAD, then GETs the
// manifest by digest; a GET by tag happens only when the HEAD fails.
const (
	caseHead      = "HEAD by tag"
	caseGet       = "GET by tag"
	caseGetDigest = "GET by digest"
)

var caseNames = []string{caseHead, caseGet, caseGetDigest}

// targetNoCache is the mirror with its manifest cache off
// (ManifestCacheBytes < 0): the mirror as it was before the cache.
const targetNoCache = "mirror-nocache"

type benchCase struct {
	Name, Method string
	Targets      []target
}

type target struct {
	Name string `json:"name"`
	URL  string `json:"url"`
}

// checkManifest checks that a server answers HEAD and GET with the pinned
// manifest's digest, media type, length and bytes: all three must serve the
// same thing for the comparison to mean anything.
func checkManifest(ctx context.Context, t target, idx rig.Index) error {
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	for _, m := range []string{http.MethodHead, http.MethodGet} {
		req, err := http.NewRequestWithContext(ctx, m, t.URL, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Accept", acceptHeader)
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("%s %s: %w", m, t.Name, err)
		}
		body, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			return fmt.Errorf("%s %s: %w", m, t.Name, err)
		}
		want := map[string]string{
			"Docker-Content-Digest": idx.Digest.String(),
			"Content-Type":          idx.MediaType,
			"Content-Length":        strconv.Itoa(len(idx.Manifest)),
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s %s: %s", m, t.Name, resp.Status)
		}
		for k, v := range want {
			if got := resp.Header.Get(k); got != v {
				return fmt.Errorf("%s %s: %s is %q, want %q", m, t.Name, k, got, v)
			}
		}
		if m == http.MethodGet && !bytes.Equal(body, idx.Manifest) {
			return fmt.Errorf("GET %s: body differs from the pinned manifest", t.Name)
		}
	}
	return nil
}

// wrkRun is one wrk run.
type wrkRun struct {
	Case   string `json:"case"`
	Target string `json:"target"`
	Rep    int    `json:"rep"`
	wrkSummary
	RPS float64 `json:"rps"`
	// CPU seconds used during the run by this process (mirror, ceiling),
	// the registry process and wrk, and by everything else on the machine
	// (other engineers' builds): the noise.
	CPU cpuUse `json:"cpu"`
}

// wrkSummary is what the Lua done() hook prints.
type wrkSummary struct {
	Requests   int64   `json:"requests"`
	DurationUS int64   `json:"duration_us"`
	Bytes      int64   `json:"bytes"`
	Connect    int64   `json:"connect"`
	Read       int64   `json:"read"`
	Write      int64   `json:"write"`
	Status     int64   `json:"status"`
	Timeout    int64   `json:"timeout"`
	P50US      float64 `json:"p50_us"`
	P90US      float64 `json:"p90_us"`
	P99US      float64 `json:"p99_us"`
	MeanUS     float64 `json:"mean_us"`
	MaxUS      float64 `json:"max_us"`
}

func (s wrkSummary) errors() int64 { return s.Connect + s.Read + s.Write + s.Status + s.Timeout }

const wrkScript = `-- written by hack/bench/mirror
wrk.method = %q
wrk.headers["Accept"] = %q
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests":%%d,"duration_us":%%d,"bytes":%%d,"connect":%%d,"read":%%d,"write":%%d,"status":%%d,"timeout":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"mean_us":%%.1f,"max_us":%%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
`

func benchManifests(ctx context.Context, r *program, c *config, cases []benchCase, p *procs) ([]wrkRun, error) {
	dir := r.TempDir()
	scripts := map[string]string{}
	for _, m := range []string{http.MethodHead, http.MethodGet} {
		path := filepath.Join(dir, strings.ToLower(m)+".lua")
		if err := os.WriteFile(path, fmt.Appendf(nil, wrkScript, m, acceptHeader), 0o644); err != nil {
			return nil, err
		}
		scripts[m] = path
	}

	// Stock wrk never completes a HEAD whose response has a Content-Length
	// (wg/wrk#198): it waits for a body. Refuse to report zeros.
	probe, err := runWrk(ctx, c, scripts[http.MethodHead], cases[0].Targets[len(cases[0].Targets)-1].URL, time.Second, p)
	if err != nil {
		return nil, err
	}
	if probe.Requests == 0 || probe.errors() > 0 {
		return nil, fmt.Errorf("%s cannot measure HEAD (%d requests, %d errors in 1s): stock wrk waits for a body "+
			"after a HEAD response with Content-Length (wg/wrk#198); run hack/bench/mirror.sh, which builds a patched wrk",
			c.wrk, probe.Requests, probe.errors())
	}

	logf("warm-up: %s per server and case", c.warmup)
	for _, bc := range cases {
		for _, t := range bc.Targets {
			if _, err := runWrk(ctx, c, scripts[bc.Method], t.URL, c.warmup, p); err != nil {
				return nil, err
			}
		}
	}
	var runs []wrkRun
	for rep := range c.repeat {
		for _, bc := range cases {
			// Rotate the order each repetition so a burst of outside load
			// does not always land on the same server.
			for k := range bc.Targets {
				t := bc.Targets[(k+rep)%len(bc.Targets)]
				run, err := runWrk(ctx, c, scripts[bc.Method], t.URL, c.duration, p)
				if err != nil {
					return nil, err
				}
				run.Case, run.Target, run.Rep = bc.Name, t.Name, rep+1
				logf("%-13s %-12s rep %d: %9.0f req/s  p50 %-8s p99 %-8s  CPU us/req: server %.1f wrk %.1f  other load %.2f cores",
					bc.Name, t.Name, rep+1, run.RPS, fmtUS(run.P50US), fmtUS(run.P99US),
					run.CPU.serverUSPerReq(run.Requests), run.CPU.WrkS*1e6/float64(max(run.Requests, 1)), run.CPU.OtherCores)
				if run.errors() > 0 {
					return nil, fmt.Errorf("%s %s: wrk saw errors: %+v", bc.Name, t.Name, run.wrkSummary)
				}
				runs = append(runs, run)
			}
		}
	}
	return runs, nil
}

func runWrk(ctx context.Context, c *config, script, url string, d time.Duration, p *procs) (wrkRun, error) {
	secs := max(int(d.Round(time.Second)/time.Second), 1)
	cmd := exec.CommandContext(ctx, c.wrk, "-c", strconv.Itoa(c.conns), "-t", strconv.Itoa(c.threads),
		"-d", strconv.Itoa(secs)+"s", "--latency", "-s", script, url)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	before := p.sample()
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	after := p.sample()
	if err != nil {
		return wrkRun{}, fmt.Errorf("wrk %s: %w\n%s", url, err, out.String())
	}
	var run wrkRun
	found := false
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "WRKJSON "); ok {
			if err := json.Unmarshal([]byte(rest), &run.wrkSummary); err != nil {
				return wrkRun{}, fmt.Errorf("wrk %s: parse %q: %w", url, rest, err)
			}
			found = true
		}
	}
	if !found {
		return wrkRun{}, fmt.Errorf("wrk %s: no summary in its output:\n%s", url, out.String())
	}
	if run.DurationUS > 0 {
		run.RPS = float64(run.Requests) / (float64(run.DurationUS) / 1e6)
	}
	wrkCPU := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	run.CPU = p.diff(before, after, wrkCPU, wall)
	return run, nil
}

// blobRun is one download of the blob.
type blobRun struct {
	Target  string  `json:"target"`
	Rep     int     `json:"rep"`
	Seconds float64 `json:"seconds"`
	MBps    float64 `json:"mb_per_s"`
	CPU     cpuUse  `json:"cpu"`
}

type discard struct{}

// Write without ReadFrom, so io.CopyBuffer uses our buffer.
func (discard) Write(p []byte) (int, error) { return len(p), nil }

func benchBlob(ctx context.Context, c *config, targets []target, blob ocispec.Descriptor, p *procs) ([]blobRun, error) {
	clients := map[string]*http.Client{}
	for _, t := range targets {
		// One client per server; each keeps its connection between downloads.
		tr := &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 1}
		defer tr.CloseIdleConnections()
		clients[t.Name] = &http.Client{Transport: tr}
	}
	buf := make([]byte, 1<<20)
	download := func(t target, w io.Writer) (time.Duration, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.URL, nil)
		if err != nil {
			return 0, err
		}
		start := time.Now()
		resp, err := clients[t.Name].Do(req)
		if err != nil {
			return 0, fmt.Errorf("blob from %s: %w", t.Name, err)
		}
		defer func() { _ = resp.Body.Close() }()
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("blob from %s: %s", t.Name, resp.Status)
		}
		n, err := io.CopyBuffer(w, resp.Body, buf)
		d := time.Since(start)
		if err != nil {
			return 0, fmt.Errorf("blob from %s: after %d bytes: %w", t.Name, n, err)
		}
		if n != blob.Size {
			return 0, fmt.Errorf("blob from %s: %d bytes, want %d", t.Name, n, blob.Size)
		}
		return d, nil
	}

	// Warm-up: one verified download from each (page cache, connections).
	for _, t := range targets {
		h := sha256.New()
		if _, err := download(t, h); err != nil {
			return nil, err
		}
		if got := digest.NewDigest(digest.SHA256, h); got != blob.Digest {
			return nil, fmt.Errorf("blob from %s hashes to %s, want %s", t.Name, got, blob.Digest)
		}
	}
	logf("blob: warm-up downloads verified (%s)", blob.Digest)
	var runs []blobRun
	for rep := range c.blobRuns {
		for k := range targets {
			t := targets[(k+rep)%len(targets)]
			before := p.sample()
			d, err := download(t, discard{})
			after := p.sample()
			if err != nil {
				return nil, err
			}
			run := blobRun{Target: t.Name, Rep: rep + 1, Seconds: d.Seconds(), MBps: float64(blob.Size) / 1e6 / d.Seconds(),
				CPU: p.diff(before, after, 0, d)}
			logf("blob %-12s rep %d: %7.0f MB/s (%.2fs; CPU s: bench %.2f registry %.2f; other load %.2f cores)",
				t.Name, rep+1, run.MBps, run.Seconds, run.CPU.SelfS, run.CPU.RegistryS, run.CPU.OtherCores)
			runs = append(runs, run)
		}
	}
	return runs, nil
}

// ---- CPU accounting ----

// procs samples CPU time of this process, the registry and the machine.
type procs struct{ registry int }

type cpuSample struct {
	self, registry time.Duration
	busy           time.Duration // all CPUs, from /proc/stat
}

// cpuUse is the CPU time used during one measurement.
type cpuUse struct {
	SelfS     float64 `json:"self_s"`     // this process: mirror / ceiling and the blob client
	RegistryS float64 `json:"registry_s"` // the distribution registry process
	WrkS      float64 `json:"wrk_s"`      // the load generator
	// OtherCores is the average number of cores busy with anything else
	// during the run (other engineers' builds): the noise.
	OtherCores float64 `json:"other_cores"`
}

// serverUSPerReq is server-side CPU (this process and the registry) per request.
func (u cpuUse) serverUSPerReq(n int64) float64 {
	return (u.SelfS + u.RegistryS) * 1e6 / float64(max(n, 1))
}

// clockTick is USER_HZ, 100 on every Linux architecture Go supports.
const clockTick = 100

func (p *procs) sample() cpuSample {
	var s cpuSample
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	if p.registry > 0 {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.registry)); err == nil {
			// Fields after the parenthesised command: state is field 3,
			// utime 14, stime 15.
			if i := bytes.LastIndexByte(b, ')'); i > 0 {
				f := strings.Fields(string(b[i+1:]))
				if len(f) > 12 {
					ut, _ := strconv.ParseInt(f[11], 10, 64)
					st, _ := strconv.ParseInt(f[12], 10, 64)
					s.registry = time.Duration(ut+st) * time.Second / clockTick
				}
			}
		}
	}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := bytes.Cut(b, []byte("\n"))
		f := strings.Fields(string(line))
		var busy int64
		// cpu user nice system idle iowait irq softirq steal ...
		for i := 1; i < len(f) && i <= 8; i++ {
			if i == 4 || i == 5 { // idle, iowait
				continue
			}
			v, _ := strconv.ParseInt(f[i], 10, 64)
			busy += v
		}
		s.busy = time.Duration(busy) * time.Second / clockTick
	}
	return s
}

func (p *procs) diff(a, b cpuSample, wrk, wall time.Duration) cpuUse {
	u := cpuUse{
		SelfS:     (b.self - a.self).Seconds(),
		RegistryS: (b.registry - a.registry).Seconds(),
		WrkS:      wrk.Seconds(),
	}
	other := (b.busy - a.busy).Seconds() - u.SelfS - u.RegistryS - u.WrkS
	if wall > 0 {
		u.OtherCores = max(other, 0) / wall.Seconds()
	}
	return u
}

// childPID finds the pid of our child process running bin.
func childPID(bin string) int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", os.Getpid()))
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, s := range strings.Fields(string(b)) {
			pid, _ := strconv.Atoi(s)
			cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if err == nil && string(bytes.SplitN(cmdline, []byte{0}, 2)[0]) == bin {
				return pid
			}
		}
	}
	return 0
}

// ---- memory ----

// memResult is what one `mem` process reports.
type memResult struct {
	Pins        int      `json:"pins"`
	Generations int      `json:"generations"`
	KeepTags    bool     `json:"keep_tags"`
	Trim        bool     `json:"trim"`
	Baseline    memUsage `json:"baseline"`
	After       memUsage `json:"after"`
	// RebuildPeakRSS is the highest RSS while the snapshot is rebuilt as the
	// node agent does (a deep-copied List, a new snapshot), keep-tags only.
	RebuildPeakRSS int64 `json:"rebuild_peak_rss,omitempty"`
}

type memUsage struct {
	RSS       int64 `json:"rss"`        // VmRSS
	HeapAlloc int64 `json:"heap_alloc"` // live heap after GC
	HeapInuse int64 `json:"heap_inuse"`
	GoSys     int64 `json:"go_sys"` // memory the Go runtime got from the OS
}

// memRunResults is one configuration's runs.
type memRunResults struct {
	Name string      `json:"name"`
	Runs []memResult `json:"runs"`
}

func measureMem() memUsage {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memUsage{RSS: procStatusKB("VmRSS") << 10, HeapAlloc: int64(ms.HeapAlloc), HeapInuse: int64(ms.HeapInuse), GoSys: int64(ms.Sys)}
}

// procStatusKB reads one "kB" field of /proc/self/status.
func procStatusKB(field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			v, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return v
		}
	}
	return -1
}

func memMain(args []string) int {
	fs := flag.NewFlagSet("mem", flag.ExitOnError)
	n := fs.Int("pins", 10000, "synthetic Tags, each pinning one image")
	gens := fs.Int("generations", 3, "generations in each Tag's status")
	keep := fs.Bool("keep-tags", false, "keep the Tag objects, as the node agent's informer cache does")
	trim := fs.Bool("trim", false, "keep only what the node agent's Tag cache transform keeps of each Tag (slim Tags)")
	_ = fs.Parse(args)
	if *n < 1 || *gens < 1 {
		fmt.Fprintln(os.Stderr, "mem: -pins and -generations must be >= 1")
		return 2
	}
	res := memResult{Pins: *n, Generations: *gens, KeepTags: *keep, Trim: *trim}
	res.Baseline = measureMem()

	table, tags, err := buildTable(*n, *gens, *trim, *keep)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mem:", err)
		return 1
	}
	res.After = measureMem()
	if *keep {
		// A rebuild: controller-runtime's cache List deep-copies every Tag,
		// then a new snapshot replaces the old one.
		_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) // resets VmHWM
		list := (&v1alpha1.TagList{Items: tags}).DeepCopy()
		table.Store(pins.BuildSnapshot(list.Items))
		runtime.KeepAlive(list)
		res.RebuildPeakRSS = procStatusKB("VmHWM") << 10
	}
	runtime.KeepAlive(table)
	runtime.KeepAlive(tags)
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		return 1
	}
	return 0
}

// buildTable decodes n synthetic Tags and builds the pin table from them,
// as the node agent does; it returns the Tags only when keep is set. (In its
// own function so that nothing in the caller's frame holds the Tags.)
func buildTable(n, gens int, trim, keep bool) (*pins.Table, []v1alpha1.Tag, error) {
	// Each Tag goes through JSON, so it is laid out in memory as one decoded
	// from the API server is (one allocation per string, slice, raw field).
	tags := make([]v1alpha1.Tag, n)
	for i := range tags {
		t := synthTag(i, gens)
		b, err := json.Marshal(&t)
		if err != nil {
			return nil, nil, err
		}
		if err := json.Unmarshal(b, &tags[i]); err != nil {
			return nil, nil, err
		}
		if trim {
			trimTag(&tags[i])
		}
	}
	snap := pins.BuildSnapshot(tags)
	if snap.Len() != n {
		return nil, nil, fmt.Errorf("snapshot holds %d pins, want %d", snap.Len(), n)
	}
	table := pins.NewTable()
	table.Store(snap)
	if !keep {
		return table, nil, nil
	}
	return table, tags, nil
}

// trimTag is what the node agent's Tag informer keeps of a Tag (its cache
// transform, slimTag in pkg/node): type meta, name, uid,
// resourceVersion, creation and deletion time, spec.image,
// status.servedGeneration and servedDigest, and the served generation's
// entry without its platforms. No managedFields, annotations, conditions or
// other generations.
func trimTag(t *v1alpha1.Tag) {
	g, ok := pins.Find(t.Status.Generations, t.Status.ServedGeneration)
	*t = v1alpha1.Tag{
		TypeMeta: t.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{Name: t.Name, CreationTimestamp: t.CreationTimestamp, DeletionTimestamp: t.DeletionTimestamp,
			ResourceVersion: t.ResourceVersion, UID: t.UID},
		Spec:   v1alpha1.TagSpec{Image: t.Spec.Image},
		Status: v1alpha1.TagStatus{ServedGeneration: t.Status.ServedGeneration, ServedDigest: t.Status.ServedDigest},
	}
	if ok {
		g.Platforms = nil
		t.Status.Generations = []v1alpha1.Generation{g}
	}
}

var synthRegistries = []string{"docker.io", "ghcr.io", "quay.io", "registry.example.com:5000"}

// synthTag is a Tag as the API server returns it after a few upstream
// moves: applied with kubectl, status written by the controller, gens
// generations, the newest served.
func synthTag(i, gens int) v1alpha1.Tag {
	reg := synthRegistries[i%len(synthRegistries)]
	image := fmt.Sprintf("%s/team%03d/app%05d:v1.%d", reg, i%100, i, i%10)
	name := fmt.Sprintf("app%05d", i)
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Second)
	ts := metav1.NewTime(created)
	digestOf := func(g int) string {
		s := sha256.Sum256(fmt.Appendf(nil, "%d/%d", i, g))
		return "sha256:" + hex.EncodeToString(s[:])
	}
	status := v1alpha1.TagStatus{
		ObservedGeneration: 1, Image: image, ServedGeneration: int64(gens), LatestGeneration: int64(gens),
		ServedDigest: digestOf(gens), ServedShortDigest: digestOf(gens)[7:19], CachedServed: true,
		LastCheck:       &v1alpha1.CheckStatus{Time: metav1.NewTime(created.Add(24 * time.Hour)), Result: v1alpha1.CheckUnchanged},
		CheckAnnotation: "",
	}
	for g := gens; g >= 1; g-- { // newest first
		status.Generations = append(status.Generations, v1alpha1.Generation{
			Generation: int64(g), Image: image, Digest: digestOf(g), MediaType: ocispec.MediaTypeImageIndex,
			Size: int64(1500 + i%700), Platforms: []string{"linux/amd64", "linux/arm64"},
			FirstSeen: metav1.NewTime(created.Add(time.Duration(g) * time.Hour)), Cached: true,
		})
	}
	for _, ct := range []string{v1alpha1.ConditionReady, v1alpha1.ConditionResolved, v1alpha1.ConditionCached} {
		status.Conditions = append(status.Conditions, metav1.Condition{
			Type: ct, Status: metav1.ConditionTrue, ObservedGeneration: 1, LastTransitionTime: ts,
			Reason: "Serving", Message: fmt.Sprintf("generation %d (%s) is served", gens, digestOf(gens)[:19]),
		})
	}
	applied := fmt.Sprintf(`{"apiVersion":"tagger.dev/v1alpha1","kind":"Tag","metadata":{"annotations":{},"name":%q},"spec":{"image":%q}}`+"\n", name, image)
	return v1alpha1.Tag{
		TypeMeta: metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "Tag"},
		ObjectMeta: metav1.ObjectMeta{
			Name: name, UID: synthUID(i), ResourceVersion: strconv.Itoa(100000 + i*7), Generation: 1,
			CreationTimestamp: ts,
			Annotations:       map[string]string{"kubectl.kubernetes.io/last-applied-configuration": applied},
			ManagedFields: []metav1.ManagedFieldsEntry{
				{Manager: "kubectl-client-side-apply", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "tagger.dev/v1alpha1",
					Time: &ts, FieldsType: "FieldsV1", FieldsV1: metav1.NewFieldsV1(
						`{"f:metadata":{"f:annotations":{".":{},"f:kubectl.kubernetes.io/last-applied-configuration":{}}},"f:spec":{".":{},"f:historyLimit":{},"f:image":{}}}`)},
				{Manager: "tagger-controller", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "tagger.dev/v1alpha1",
					Time: &ts, FieldsType: "FieldsV1", Subresource: "status", FieldsV1: metav1.NewFieldsV1(
						`{"f:status":{".":{},"f:cachedServed":{},"f:conditions":{".":{},"k:{\"type\":\"Cached\"}":{".":{},"f:lastTransitionTime":{},"f:message":{},"f:observedGeneration":{},"f:reason":{},"f:status":{},"f:type":{}},"k:{\"type\":\"Ready\"}":{".":{},"f:lastTransitionTime":{},"f:message":{},"f:observedGeneration":{},"f:reason":{},"f:status":{},"f:type":{}},"k:{\"type\":\"Resolved\"}":{".":{},"f:lastTransitionTime":{},"f:message":{},"f:observedGeneration":{},"f:reason":{},"f:status":{},"f:type":{}}},"f:generations":{},"f:image":{},"f:lastCheck":{".":{},"f:result":{},"f:time":{}},"f:latestGeneration":{},"f:observedGeneration":{},"f:servedDigest":{},"f:servedGeneration":{},"f:servedShortDigest":{}}}`)},
			},
		},
		Spec:   v1alpha1.TagSpec{Image: image, HistoryLimit: v1alpha1.DefaultHistoryLimit},
		Status: status,
	}
}

func synthUID(i int) types.UID {
	s := sha256.Sum256(fmt.Appendf(nil, "uid/%d", i))
	h := hex.EncodeToString(s[:16])
	return types.UID(h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32])
}

// runMemory runs the mem subcommand in fresh processes.
func runMemory(ctx context.Context, c *config) ([]memRunResults, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	type cfg struct {
		name string
		args []string
	}
	n := strconv.Itoa(c.pins)
	cfgs := []cfg{
		{"table only (3 generations per Tag)", []string{"-pins", n, "-generations", "3"}},
		{"table + Tags (3 generations)", []string{"-pins", n, "-generations", "3", "-keep-tags"}},
		{"table + slim Tags (node agent's transform; 3 generations before it)", []string{"-pins", n, "-generations", "3", "-keep-tags", "-trim"}},
	}
	if w := c.memGenerationsWorst; w > 0 {
		cfgs = append(cfgs, cfg{fmt.Sprintf("table + Tags (%d generations)", w),
			[]string{"-pins", n, "-generations", strconv.Itoa(w), "-keep-tags"}})
		cfgs = append(cfgs, cfg{fmt.Sprintf("table + slim Tags (node agent's transform; %d generations before it)", w),
			[]string{"-pins", n, "-generations", strconv.Itoa(w), "-keep-tags", "-trim"}})
	}
	var out []memRunResults
	for _, cf := range cfgs {
		mr := memRunResults{Name: cf.name}
		for range c.repeat {
			cmd := exec.CommandContext(ctx, exe, append([]string{"mem"}, cf.args...)...)
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			cmd.Stderr = os.Stderr
			b, err := cmd.Output()
			if err != nil {
				return nil, fmt.Errorf("mem %v: %w", cf.args, err)
			}
			var r memResult
			if err := json.Unmarshal(b, &r); err != nil {
				return nil, fmt.Errorf("mem %v: %w: %s", cf.args, err, b)
			}
			mr.Runs = append(mr.Runs, r)
		}
		med := medianBy(mr.Runs, func(r memResult) float64 { return float64(r.After.RSS) })
		logf("memory, %s: RSS %s (baseline %s), heap %s", cf.name, mib(int64(med)),
			mib(mr.Runs[0].Baseline.RSS), mib(int64(medianBy(mr.Runs, func(r memResult) float64 { return float64(r.After.HeapAlloc) }))))
		out = append(out, mr)
	}
	return out, nil
}

// ---- report ----

func report(w io.Writer, c *config, res *results) {
	m := res.Machine
	fmt.Fprintf(w, "\n# Mirror benchmark, %s\n\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "Machine: %d CPUs (nproc), %s; %s; %s; wrk: %s; load average at the end: %s\n",
		m.NumCPU, m.CPU, m.Kernel, runtime.Version(), m.Wrk, benchproc.Loadavg())

	if len(res.Manifest) > 0 {
		fmt.Fprintf(w, "\n## Pinned-tag manifest (%s, wrk -c%d -t%d -d%s --latency, median of %d runs)\n\n",
			res.Fixture["manifest_media_type"], c.conns, c.threads, c.duration, c.repeat)
		fmt.Fprintln(w, "| case | server | req/s (median) | p50 | p99 | server CPU µs/req | req/s of each run | other load (cores) |")
		fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---|---:|")
		med := map[string]map[string]float64{}
		for _, meth := range caseNames {
			med[meth] = map[string]float64{}
			for _, t := range []string{"mirror", targetNoCache, "distribution", "ceiling"} {
				var rs []wrkRun
				for _, r := range res.Manifest {
					if r.Case == meth && r.Target == t {
						rs = append(rs, r)
					}
				}
				if len(rs) == 0 {
					continue
				}
				rps := medianBy(rs, func(r wrkRun) float64 { return r.RPS })
				med[meth][t] = rps
				each := make([]string, len(rs))
				for i, r := range rs {
					each[i] = fmt.Sprintf("%.0f", r.RPS)
				}
				fmt.Fprintf(w, "| %s | %s | %.0f | %s | %s | %.1f | %s | %.2f |\n", meth, t, rps,
					fmtUS(medianBy(rs, func(r wrkRun) float64 { return r.P50US })),
					fmtUS(medianBy(rs, func(r wrkRun) float64 { return r.P99US })),
					medianBy(rs, func(r wrkRun) float64 { return r.CPU.serverUSPerReq(r.Requests) }),
					strings.Join(each, ", "),
					medianBy(rs, func(r wrkRun) float64 { return r.CPU.OtherCores }))
			}
		}
		fmt.Fprintln(w, "\n| case | mirror/distribution (target >= 5) | mirror/ceiling (target >= 0.7) | cache off: mirror/distribution, mirror/ceiling |")
		fmt.Fprintln(w, "|---|---:|---:|---:|")
		for _, meth := range caseNames {
			d := med[meth]["mirror"] / med[meth]["distribution"]
			cl := med[meth]["mirror"] / med[meth]["ceiling"]
			off := "-"
			if nc, ok := med[meth][targetNoCache]; ok {
				off = fmt.Sprintf("%.2fx, %.2fx", nc/med[meth]["distribution"], nc/med[meth]["ceiling"])
			}
			fmt.Fprintf(w, "| %s | %.2fx %s | %.2fx %s | %s |\n", meth, d, verdict(d >= 5), cl, verdict(cl >= 0.7), off)
		}
	}

	if len(res.Blob) > 0 {
		fmt.Fprintf(w, "\n## Blob GET, %d MiB, %d sequential downloads each (Go client, body discarded)\n\n",
			res.BlobBytes>>20, c.blobRuns)
		fmt.Fprintln(w, "| server | MB/s (median) | MB/s of each run | CPU s per download (bench process, registry) |")
		fmt.Fprintln(w, "|---|---:|---|---|")
		med := map[string]float64{}
		for _, t := range []string{"mirror", "distribution", "go-proxy"} {
			var rs []blobRun
			for _, r := range res.Blob {
				if r.Target == t {
					rs = append(rs, r)
				}
			}
			med[t] = medianBy(rs, func(r blobRun) float64 { return r.MBps })
			each := make([]string, len(rs))
			for i, r := range rs {
				each[i] = fmt.Sprintf("%.0f", r.MBps)
			}
			fmt.Fprintf(w, "| %s | %.0f | %s | %.2f, %.2f |\n", t, med[t], strings.Join(each, ", "),
				medianBy(rs, func(r blobRun) float64 { return r.CPU.SelfS }),
				medianBy(rs, func(r blobRun) float64 { return r.CPU.RegistryS }))
		}
		ratio := med["mirror"] / med["distribution"]
		fmt.Fprintf(w, "\nmirror/distribution: %.2fx (target >= 0.9) %s; go-proxy/distribution: %.2fx; mirror/go-proxy: %.2fx\n",
			ratio, verdict(ratio >= 0.9), med["go-proxy"]/med["distribution"], med["mirror"]/med["go-proxy"])
	}

	if len(res.Memory) > 0 {
		fmt.Fprintf(w, "\n## Memory, %d pins, fresh process per run (median of %d; target <= 64 MiB)\n\n", c.pins, c.repeat)
		fmt.Fprintln(w, "| configuration | VmRSS after GC | baseline VmRSS | Go heap (live) | peak RSS during a rebuild | target |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|---|")
		for _, mr := range res.Memory {
			rss := int64(medianBy(mr.Runs, func(r memResult) float64 { return float64(r.After.RSS) }))
			peak := "-"
			if mr.Runs[0].KeepTags {
				peak = mib(int64(medianBy(mr.Runs, func(r memResult) float64 { return float64(r.RebuildPeakRSS) })))
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", mr.Name, mib(rss),
				mib(int64(medianBy(mr.Runs, func(r memResult) float64 { return float64(r.Baseline.RSS) }))),
				mib(int64(medianBy(mr.Runs, func(r memResult) float64 { return float64(r.After.HeapAlloc) }))),
				peak, verdict(rss <= 64<<20))
		}
	}
	fmt.Fprintln(w)
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

func medianBy[T any](xs []T, f func(T) float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	v := make([]float64, len(xs))
	for i, x := range xs {
		v[i] = f(x)
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func fmtUS(us float64) string {
	if us < 1000 {
		return fmt.Sprintf("%.0fµs", us)
	}
	return fmt.Sprintf("%.2fms", us/1000)
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// ---- machine ----

type machine struct {
	NumCPU int    `json:"nproc"`
	CPU    string `json:"cpu"`
	Kernel string `json:"kernel"`
	Go     string `json:"go"`
	Wrk    string `json:"wrk"`
}

func machineInfo(wrk string) machine {
	m := machine{NumCPU: runtime.NumCPU(), Go: runtime.Version(), CPU: "unknown", Kernel: "unknown", Wrk: "unknown"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = "Linux " + strings.TrimSpace(string(b))
	}
	if out, err := exec.Command(wrk, "-v").CombinedOutput(); len(out) > 0 || err == nil {
		first, _, _ := strings.Cut(string(out), "\n")
		m.Wrk = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(first), "Copyright (C) 2012 Will Glozer"))
	}
	return m
}
