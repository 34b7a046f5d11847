// Command copy benchmarks the controller's copy of an image into the bundled
// registry (issue #4; docs/benchmarks.md, "Bundled-registry copy") against
// `skopeo copy` and `crane copy` of the same image in the same run.
//
// Everything is real and a separate process: the upstream and every bundled
// registry are the distribution registry binary (internal/rig), the
// controller is the binary built from ./cmd/controller, run against a real
// kube-apiserver and etcd (envtest, internal/rig).
//
//  1. The image: 1 GiB in 10 layers of incompressible bytes (gzip streams
//     of stored blocks, as registries hold random data) and a second image
//     sharing 9 of the 10 layers, both pushed once into the upstream.
//
//  2. Trials, interleaved (tagger, skopeo, crane, then skopeo, crane,
//     tagger, ...: the order rotates each round), each copying into a new,
//     empty bundled registry. tagger: a fresh controller process with
//     --registry-url; a Tag with spec.cache: true is created and timed until
//     its Cached condition is True, and the copy itself is timed by the
//     copier (its "copied into bundled registry" log line). The copier's
//     VmRSS is sampled every -rss-every. skopeo and crane: the process's
//     wall time. After each copy the destination must hold the source
//     digest (nothing was recompressed).
//
//  3. The second copy: per tool, a new bundled registry behind a proxy that
//     counts the bytes uploaded through it; copy the first image, then the
//     second. For tagger, the same Tag gains a generation: the upstream tag
//     moves to the second image and the Tag's check annotation is set.
//
//     go run ./hack/bench/copy                   # 5 rounds (make bench runs this)
//     go run ./hack/bench/copy -rounds 9 -json /tmp/copy.json -logs /tmp/copy-logs
//     go run ./hack/bench/copy -tools tagger,crane -rounds 1 -size 256MiB   # a quick look
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/hack/bench/internal/benchproc"
	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/pkg/pins"
)

func main() { os.Exit(benchMain(os.Args[1:])) }

type config struct {
	rounds        int
	layers        int
	size          int64
	tools         []string
	testbin       string
	controllerBin string
	maxCopies     int
	skopeo        string
	crane         string
	rssEvery      time.Duration
	timeout       time.Duration
	out           string
	logDir        string
	skipSecond    bool
	verbose       bool
	cpuProfile    string
}

func benchMain(args []string) int {
	var c config
	fs := flag.NewFlagSet("copy", flag.ExitOnError)
	fs.IntVar(&c.rounds, "rounds", 5, "measured rounds; each copies the image once with every tool, in rotating order")
	fs.IntVar(&c.layers, "layers", 10, "layers of the image")
	size := fs.String("size", "1GiB", "blob bytes of the image, split evenly over the layers (suffix KiB, MiB, GiB)")
	tools := fs.String("tools", "tagger,skopeo,crane", "comma-separated tools to run: tagger, skopeo, crane; "+
		"tagger@N is the controller with --max-concurrent-copies N (e.g. tagger,tagger@2,crane)")
	fs.StringVar(&c.testbin, "testbin", rig.BinDir(), "directory holding kube-apiserver, etcd and registry (make testbin)")
	fs.StringVar(&c.controllerBin, "controller-bin", "", "run this controller binary instead of building ./cmd/controller")
	fs.IntVar(&c.maxCopies, "max-concurrent-copies", 0, "the controller's --max-concurrent-copies (0: its default)")
	fs.StringVar(&c.skopeo, "skopeo", "", "skopeo binary (default: skopeo on $PATH; Debian: apt-get install -y skopeo)")
	fs.StringVar(&c.crane, "crane", "", "crane binary (default: built once with go install into ~/.cache/tagger/bench/crane-"+craneVersion+")")
	fs.DurationVar(&c.rssEvery, "rss-every", 100*time.Millisecond, "VmRSS sampling period of the copying process")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Minute, "limit of one copy")
	fs.StringVar(&c.out, "json", "", "also write every raw measurement to this JSON file")
	fs.StringVar(&c.logDir, "logs", "", "keep the controller and tool logs in this directory (default: a temp dir, deleted)")
	fs.BoolVar(&c.skipSecond, "skip-second", false, "skip the second-copy (shared layers) part")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "first run one copy with pkg/controller/imagecopy inside this process under the CPU profiler, writing the profile here")
	fs.BoolVar(&c.verbose, "v", false, "log every watch event of the benchmark's Tags")
	_ = fs.Parse(args)
	var err error
	if c.size, err = parseSize(*size); err != nil || c.layers < 1 || c.rounds < 1 {
		fmt.Fprintln(os.Stderr, "bench: -size must be like 1GiB; -layers and -rounds >= 1")
		return 2
	}
	for _, t := range strings.Split(*tools, ",") {
		t = strings.TrimSpace(t)
		if _, ok := taggerCopies(t, 0); !ok && t != "skopeo" && t != "crane" {
			fmt.Fprintf(os.Stderr, "bench: -tools: unknown tool %q\n", t)
			return 2
		}
		c.tools = append(c.tools, t)
	}

	return benchproc.Main("tagger-bench-copy", func(ctx context.Context, r *rig.Program) error { return run(ctx, r, &c) })
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = v, u.m
			break
		}
	}
	n, err := strconv.ParseFloat(s, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return int64(n * float64(mult)), nil
}

// env is what the trials share.
type env struct {
	c          *config
	r          *rig.Program
	cl         client.WithWatch
	kubeconfig string
	ctrlBin    string
	regBin     string
	up         *rig.Registry
	upPID      int
	upRepo     string // repository in the upstream
	cacheRepo  string // its cache repository in the bundled registry
	imgA, imgB *benchImage
	skopeo     string
	crane      string
	policy     string
	logDir     string
	hc         *http.Client
}

// results is everything measured; -json writes it.
type results struct {
	Machine map[string]any `json:"machine"`
	Config  map[string]any `json:"config"`
	Trials  []*trial       `json:"trials"`
	Second  []*second      `json:"second_copy,omitempty"`
}

// trial is one copy of the first image into an empty bundled registry.
type trial struct {
	Tool  string `json:"tool"`
	Round int    `json:"round"`
	// Wall: skopeo and crane: the process's wall time. tagger: Tag created
	// -> Cached=True seen by a watch.
	Wall float64 `json:"wall_s"`
	// Copy: tagger only, Copier.Copy's own duration (its log line).
	Copy float64 `json:"copy_s,omitempty"`
	// Reconcile: tagger only, Tag created -> the finalizer the reconcile
	// adds first seen by the watch.
	Reconcile   float64 `json:"finalizer_s,omitempty"`
	CopierCPU   float64 `json:"copier_cpu_s"`
	UpstreamCPU float64 `json:"upstream_cpu_s"`
	BundledCPU  float64 `json:"bundled_cpu_s"`
	MachineBusy float64 `json:"machine_busy_cores"`
	RSSMax      int64   `json:"rss_max_bytes"`         // sampled VmRSS of the copier
	RSSBefore   int64   `json:"rss_before_bytes"`      // tagger: the controller idle, before the Tag
	RSSSamples  int     `json:"rss_samples"`           //
	Bytes       int64   `json:"bytes_uploaded"`        // tagger: tagger_copy_bytes_total delta
	Loadavg     string  `json:"loadavg_before"`        //
	Present     int     `json:"blobs_present"`         // tagger: from its log
	Uploaded    int     `json:"blobs_uploaded"`        //
	Digest      string  `json:"destination_digest_ok"` // "ok" when the copy has the source digest
}

// second is the second-copy part for one tool.
type second struct {
	Tool          string  `json:"tool"`
	FirstBytes    int64   `json:"first_copy_bytes_uploaded"`  // through the proxy
	SecondBytes   int64   `json:"second_copy_bytes_uploaded"` // through the proxy
	SecondWall    float64 `json:"second_copy_wall_s"`
	SecondCopy    float64 `json:"second_copy_copy_s,omitempty"` // tagger: Copier.Copy's duration
	SecondReqs    string  `json:"second_copy_requests"`
	MetricBytes   int64   `json:"second_copy_metric_bytes,omitempty"` // tagger: tagger_copy_bytes_total delta
	LogBytes      int64   `json:"second_copy_log_bytes,omitempty"`    // tagger: bytesUploaded of its log line
	BlobsUploaded int     `json:"second_copy_blobs_uploaded,omitempty"`
	BlobsPresent  int     `json:"second_copy_blobs_present,omitempty"`
	BlobsMounted  int     `json:"second_copy_blobs_mounted,omitempty"`
}

// run sets up the tools, the cluster and the upstream, measures the copies,
// then reports.
func run(ctx context.Context, r *rig.Program, c *config) error {
	root, err := benchproc.CheckRig(ctx, c.testbin)
	if err != nil {
		return err
	}
	e := &env{c: c, r: r, regBin: filepath.Join(c.testbin, "registry"), hc: &http.Client{Timeout: 30 * time.Second}}
	res := &results{
		Machine: map[string]any{"cpus": runtime.NumCPU(), "go": runtime.Version(), "loadavg_start": benchproc.Loadavg(), "start": time.Now().UTC().Format(time.RFC3339)},
		Config: map[string]any{
			"rounds": c.rounds, "layers": c.layers, "size_bytes": c.size, "tools": c.tools,
			"max_concurrent_copies": c.maxCopies, "rss_every": c.rssEvery.String(), "controller_bin": c.controllerBin,
		},
	}
	logf("machine: %d CPUs, load average %s", runtime.NumCPU(), benchproc.Loadavg())
	if err := e.setup(ctx, root, res); err != nil {
		return err
	}
	if err := e.measure(ctx, res); err != nil {
		return err
	}
	res.Machine["loadavg_end"] = benchproc.Loadavg()
	return benchproc.Emit(c.out, res, func(w io.Writer) { report(w, e, res) }, logf)
}

// setup finds the tools, starts the cluster when a tagger variant runs, and
// the upstream with the two images.
func (e *env) setup(ctx context.Context, root string, res *results) error {
	if err := e.findTools(ctx, res); err != nil {
		return err
	}
	if err := e.startCluster(ctx, root); err != nil {
		return err
	}
	return e.startUpstream(ctx, res)
}

// findTools sets up the log dir and finds skopeo and crane when asked for.
func (e *env) findTools(ctx context.Context, res *results) error {
	c, r := e.c, e.r
	var err error
	e.logDir = c.logDir
	if e.logDir == "" {
		e.logDir = r.TempDir()
	} else if err := os.MkdirAll(e.logDir, 0o755); err != nil {
		return err
	}
	if slices.Contains(c.tools, "skopeo") {
		var v string
		if e.skopeo, v, err = findSkopeo(c.skopeo); err != nil {
			return err
		}
		if e.policy, err = policyFile(r.TempDir()); err != nil {
			return err
		}
		res.Config["skopeo"] = v
		logf("%s", v)
	} else {
		logf("NOTE: skopeo is left out (-tools): the ratio is against crane only")
	}
	if slices.Contains(c.tools, "crane") {
		var v string
		if e.crane, v, err = findCrane(ctx, c.crane); err != nil {
			return err
		}
		res.Config["crane"] = v
		logf("%s", v)
	} else {
		logf("NOTE: crane is left out (-tools): the ratio is against skopeo only")
	}
	return nil
}

// startCluster builds the controller unless given and starts kube-apiserver
// when a tagger variant is among the tools.
func (e *env) startCluster(ctx context.Context, root string) error {
	c, r := e.c, e.r
	if slices.ContainsFunc(c.tools, func(t string) bool { _, ok := taggerCopies(t, 0); return ok }) {
		if e.ctrlBin = c.controllerBin; e.ctrlBin == "" {
			logf("building ./cmd/... (rig.Commands, as the Dockerfile builds)")
			e.ctrlBin = rig.Command(r, rig.Static, "controller")
		}
		logf("starting kube-apiserver + etcd (envtest, internal/rig)")
		cluster, err := rig.StartKube(c.testbin)
		if err != nil {
			return err
		}
		r.Cleanup(func() {
			if err := cluster.Stop(); err != nil {
				logf("stop envtest: %v", err)
			}
		})
		scheme, err := v1alpha1.NewScheme()
		if err != nil {
			return err
		}
		if e.cl, err = client.NewWithWatch(cluster.Config, client.Options{Scheme: scheme}); err != nil {
			return err
		}
		e.kubeconfig = filepath.Join(r.TempDir(), "kubeconfig")
		if err := os.WriteFile(e.kubeconfig, cluster.KubeConfig, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// startUpstream starts the upstream registry and pushes the two images.
func (e *env) startUpstream(ctx context.Context, res *results) error {
	r := e.r
	// The upstream, with the two images.
	logf("starting the upstream registry")
	upT := newTrialT(r)
	e.up = rig.StartRegistry(upT, e.regBin, rig.RegistryOptions{})
	if len(upT.dirs) > 0 {
		e.upPID = pidByCmdline(filepath.Join(upT.dirs[0], "config.json"))
	}
	e.upRepo = "bench/big"
	ref, err := pins.ParseReference(e.up.Host() + "/" + e.upRepo + ":v1")
	if err != nil {
		return err
	}
	e.cacheRepo = ref.CacheRepository()
	if err := e.prepareImages(ctx); err != nil {
		return err
	}
	res.Config["image"] = map[string]any{
		"first": e.imgA.digest.String(), "second": e.imgB.digest.String(), "blob_bytes": e.imgA.size(),
		"layer_bytes": e.imgA.layers[0].desc.Size, "new_layer_bytes": e.imgB.layers[len(e.imgB.layers)-1].desc.Size,
		"config_bytes": e.imgB.configD.Size, "manifest_bytes": len(e.imgB.manifest),
	}
	return nil
}

// measure runs the profiled copy, the timed rounds and the second copies.
func (e *env) measure(ctx context.Context, res *results) error {
	c := e.c
	if c.cpuProfile != "" {
		if err := e.profileCopy(ctx, c.cpuProfile); err != nil {
			return fmt.Errorf("profiled copy: %w", err)
		}
	}
	for round := range c.rounds {
		order := slices.Clone(c.tools)
		k := round % len(order)
		order = append(order[k:], order[:k]...)
		for _, tool := range order {
			logf("round %d/%d: %s (load average %s)", round+1, c.rounds, tool, benchproc.Loadavg())
			t, err := e.trial(ctx, tool, round)
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", round+1, tool, err)
			}
			logf("  %s: %.2fs%s, copier CPU %.2fs, upstream %.2fs, bundled %.2fs, RSS max %.1f MiB",
				tool, t.Wall, map[bool]string{true: fmt.Sprintf(" (copy %.2fs)", t.Copy), false: ""}[t.Copy > 0],
				t.CopierCPU, t.UpstreamCPU, t.BundledCPU, benchproc.MiB(t.RSSMax))
			res.Trials = append(res.Trials, t)
		}
	}
	if !c.skipSecond {
		for _, tool := range c.tools {
			if strings.HasPrefix(tool, "tagger@") {
				continue // the variants are for the timing only
			}
			logf("second copy: %s (load average %s)", tool, benchproc.Loadavg())
			s, err := e.secondCopy(ctx, tool)
			if err != nil {
				return fmt.Errorf("second copy, %s: %w", tool, err)
			}
			logf("  %s: first copy uploaded %s, second %s in %.2fs", tool, fmtBytes(s.FirstBytes), fmtBytes(s.SecondBytes), s.SecondWall)
			res.Second = append(res.Second, s)
		}
	}
	return nil
}

// prepareImages generates both images and pushes them into the upstream:
// the first under v1 and latest, the second under v2.
func (e *env) prepareImages(ctx context.Context) error {
	n := e.c.layers
	per := e.c.size / int64(n)
	start := time.Now()
	var layers []*layerSpec
	for i := range n {
		l, err := newLayer(uint64(i+1), per)
		if err != nil {
			return err
		}
		layers = append(layers, l)
	}
	extra, err := newLayer(uint64(1000+n), per)
	if err != nil {
		return err
	}
	if e.imgA, err = newImage(layers); err != nil {
		return err
	}
	if e.imgB, err = newImage(append(slices.Clone(layers[:n-1]), extra)); err != nil {
		return err
	}
	logf("generated the images in %.1fs: %d layers of %s (%s in all); pushing them", time.Since(start).Seconds(), n,
		fmtBytes(layers[0].desc.Size), fmtBytes(e.imgA.size()))
	start = time.Now()
	p := &pusher{base: e.up.URL(), hc: &http.Client{}}
	if err := p.pushImage(ctx, e.upRepo, e.imgA, "v1", "latest"); err != nil {
		return err
	}
	if err := p.pushImage(ctx, e.upRepo, e.imgB, "v2"); err != nil {
		return err
	}
	logf("pushed in %.1fs: first %s, second %s", time.Since(start).Seconds(), e.imgA.digest, e.imgB.digest)
	return nil
}

// copyArgv is the skopeo or crane command line copying src to dst.
func (e *env) copyArgv(tool, src, dst string) []string {
	if tool == "skopeo" {
		return []string{e.skopeo, "--policy", e.policy, "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
			"--preserve-digests", "--retry-times", "0", "docker://" + src, "docker://" + dst}
	}
	return []string{e.crane, "copy", "--insecure", src, dst}
}

// counters are CPU readings around a copy.
type counters struct {
	at                  time.Time
	copier, up, bundled time.Duration
	busy, total         int64
}

func (e *env) read(copierPID, bundledPID int) counters {
	c := counters{at: time.Now(), up: cpuTime(e.upPID), bundled: cpuTime(bundledPID)}
	if copierPID > 0 {
		c.copier = cpuTime(copierPID)
	}
	c.busy, c.total = benchproc.MachineCPU()
	return c
}

func (t *trial) setCPU(a, b counters) {
	t.CopierCPU = (b.copier - a.copier).Seconds()
	t.UpstreamCPU = (b.up - a.up).Seconds()
	t.BundledCPU = (b.bundled - a.bundled).Seconds()
	if b.total > a.total {
		t.MachineBusy = float64(b.busy-a.busy) / float64(b.total-a.total) * float64(runtime.NumCPU())
	}
}

// startBundled starts an empty bundled registry owned by tt.
func (e *env) startBundled(tt *trialT) (*rig.Registry, int) {
	n := len(tt.dirs)
	reg := rig.StartRegistry(tt, e.regBin, rig.RegistryOptions{})
	pid := 0
	if len(tt.dirs) > n {
		pid = pidByCmdline(filepath.Join(tt.dirs[n], "config.json"))
	}
	return reg, pid
}

func (e *env) trial(ctx context.Context, tool string, round int) (*trial, error) {
	tt := newTrialT(e.r)
	defer tt.close()
	bundled, bundledPID := e.startBundled(tt)
	t := &trial{Tool: tool, Round: round + 1, Loadavg: benchproc.Loadavg()}
	src := e.up.Host() + "/" + e.upRepo + ":v1"
	dst := bundled.Host() + "/" + e.cacheRepo + ":v1"
	logPath := filepath.Join(e.logDir, fmt.Sprintf("%s-round%d.log", tool, round+1))
	cctx, cancel := context.WithTimeout(ctx, e.c.timeout)
	defer cancel()

	switch n, isTagger := taggerCopies(tool, e.c.maxCopies); {
	case isTagger:
		name := fmt.Sprintf("bench-r%d-%s", round+1, strings.ReplaceAll(tool, "@", "-"))
		if err := e.taggerTrial(cctx, tt, t, e.controllerArgs(bundled.URL(), n), bundledPID, logPath, name); err != nil {
			return nil, err
		}
	default:
		a := e.read(0, bundledPID)
		tr, err := runTool(cctx, e.copyArgv(tool, src, dst), logPath, e.c.rssEvery)
		b := e.read(0, bundledPID)
		if err != nil {
			return nil, err
		}
		t.setCPU(a, b)
		t.Wall, t.CopierCPU, t.RSSMax, t.RSSSamples = tr.wall.Seconds(), tr.cpu.Seconds(), tr.rssMax, tr.rssSamples
	}
	got, err := manifestDigest(ctx, e.hc, bundled.URL(), e.cacheRepo, e.imgA.digest.String())
	if err != nil {
		return nil, err
	}
	if got != e.imgA.digest {
		return nil, fmt.Errorf("the bundled registry has no manifest %s after the copy (got %q): the copy changed the image", e.imgA.digest, got)
	}
	t.Digest = "ok"
	return t, nil
}

// taggerCopies reports whether tool is the controller ("tagger", or
// "tagger@N" for --max-concurrent-copies N) and the value to pass (def for
// plain "tagger"; 0 leaves the controller's default).
func taggerCopies(tool string, def int) (int, bool) {
	if tool == "tagger" {
		return def, true
	}
	v, ok := strings.CutPrefix(tool, "tagger@")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(v)
	return n, err == nil && n > 0
}

// controllerArgs are the controller's flags for a bundled registry at url,
// copying at most copies blobs at once (0: its default).
func (e *env) controllerArgs(url string, copies int) []string {
	args := []string{"--kubeconfig", e.kubeconfig, "--registry-url", url, "--plain-http-registries", "127.0.0.1:*", "--log-format", "json"}
	if copies > 0 {
		args = append(args, "--max-concurrent-copies", strconv.Itoa(copies))
	}
	return args
}

func (e *env) taggerTrial(ctx context.Context, tt *trialT, t *trial, args []string, bundledPID int, logPath, name string) error {
	p, err := startController(tt.Program, e.ctrlBin, args, logPath)
	if err != nil {
		return err
	}
	defer e.deleteTag(name) // runs after p.Stop: the finalizer is dropped by hand
	defer p.Stop()
	m0, err := benchproc.Scrape(p.Metrics, "tagger_copy_bytes_total")
	if err != nil {
		return err
	}
	t.RSSBefore, _ = benchproc.VmRSS(p.Pid())
	a := e.read(p.Pid(), bundledPID)
	s := sampleRSS(p.Pid(), e.c.rssEvery)
	tag := &v1alpha1.Tag{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       v1alpha1.TagSpec{Image: e.up.Host() + "/" + e.upRepo + ":v1", Cache: true},
	}
	var finalizer time.Time
	cached := cachedGeneration(1, e.imgA.digest)
	done, _, err := e.waitTag(ctx, name, func() error { return e.cl.Create(ctx, tag) }, func(tag *v1alpha1.Tag) (bool, error) {
		if finalizer.IsZero() && len(tag.Finalizers) > 0 {
			finalizer = time.Now() // the controller's reconcile has started
		}
		return cached(tag)
	})
	b := e.read(p.Pid(), bundledPID)
	t.RSSMax, t.RSSSamples = s.stop()
	if err != nil {
		return fmt.Errorf("%w; controller log:\n%s", err, benchproc.Tail(logPath, 3000))
	}
	t.Wall = done.Sub(a.at).Seconds()
	if !finalizer.IsZero() {
		t.Reconcile = finalizer.Sub(a.at).Seconds()
	}
	t.setCPU(a, b)
	m1, err := benchproc.Scrape(p.Metrics, "tagger_copy_bytes_total")
	if err != nil {
		return err
	}
	t.Bytes = int64(m1["tagger_copy_bytes_total"] - m0["tagger_copy_bytes_total"])
	logs, err := copyLogs(logPath)
	if err != nil || len(logs) != 1 {
		return fmt.Errorf("want one copy logged by the controller, got %d (%v)", len(logs), err)
	}
	t.Copy, t.Uploaded, t.Present = logs[0].Duration.Seconds(), logs[0].Uploaded, logs[0].Present
	return nil
}

// cachedGeneration is satisfied once generation gen of the Tag, with digest
// d, is cached and the Cached condition is True; it fails on CopyFailed.
func cachedGeneration(gen int64, d digest.Digest) func(*v1alpha1.Tag) (bool, error) {
	return func(tag *v1alpha1.Tag) (bool, error) {
		cond := apimeta.FindStatusCondition(tag.Status.Conditions, v1alpha1.ConditionCached)
		if cond != nil && cond.Reason == "CopyFailed" {
			return false, fmt.Errorf("Tag %s: %s", tag.Name, cond.Message)
		}
		for _, g := range tag.Status.Generations {
			if g.Generation == gen {
				if g.Digest != d.String() {
					return false, fmt.Errorf("Tag %s: generation %d has digest %s, want %s", tag.Name, gen, g.Digest, d)
				}
				return g.Cached && cond != nil && cond.Status == metav1.ConditionTrue && tag.Status.ServedGeneration == gen, nil
			}
		}
		return false, nil
	}
}

// waitTag watches Tag name, calls start, and returns when cond holds.
func (e *env) waitTag(ctx context.Context, name string, start func() error, cond func(*v1alpha1.Tag) (bool, error)) (time.Time, *v1alpha1.Tag, error) {
	w, err := e.cl.Watch(ctx, &v1alpha1.TagList{}, client.MatchingFields{"metadata.name": name})
	if err != nil {
		return time.Time{}, nil, fmt.Errorf("watch Tag %s: %w", name, err)
	}
	defer w.Stop()
	if err := start(); err != nil {
		return time.Time{}, nil, err
	}
	var last *v1alpha1.Tag
	for {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				return time.Time{}, nil, fmt.Errorf("watch of Tag %s closed", name)
			}
			tag, ok := ev.Object.(*v1alpha1.Tag)
			if !ok {
				continue
			}
			last = tag
			if e.c.verbose {
				b, _ := json.Marshal(tag.Status)
				logf("    watch %s: finalizers %v, status %s", ev.Type, tag.Finalizers, b)
			}
			done, err := cond(tag)
			if err != nil {
				return time.Now(), tag, err
			}
			if done {
				return time.Now(), tag, nil
			}
		case <-ctx.Done():
			st := "never seen"
			if last != nil {
				b, _ := json.Marshal(last.Status)
				st = string(b)
			}
			return time.Time{}, nil, fmt.Errorf("Tag %s not cached in time (%v); last status: %s", name, ctx.Err(), st)
		}
	}
}

// deleteTag removes a Tag whose controller is gone: finalizer dropped by
// hand, then deleted, so the next controller never sees it.
func (e *env) deleteTag(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var tag v1alpha1.Tag
	if err := e.cl.Get(ctx, client.ObjectKey{Name: name}, &tag); err != nil {
		return
	}
	if len(tag.Finalizers) > 0 {
		patch := client.MergeFrom(tag.DeepCopy())
		tag.Finalizers = nil
		if err := e.cl.Patch(ctx, &tag, patch); err != nil {
			logf("drop the finalizer of Tag %s: %v", name, err)
		}
	}
	if err := e.cl.Delete(ctx, &tag); err != nil {
		logf("delete Tag %s: %v", name, err)
	}
	for ctx.Err() == nil {
		if err := e.cl.Get(ctx, client.ObjectKey{Name: name}, &tag); err != nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// secondCopy copies the first image and then the second, which shares all
// but its last layer, into a new bundled registry behind a byte-counting
// proxy.
func (e *env) secondCopy(ctx context.Context, tool string) (*second, error) {
	tt := newTrialT(e.r)
	defer tt.close()
	bundled, _ := e.startBundled(tt)
	proxy := rig.NewCountingProxy(tt, bundled.URL()) // closed by tt.close
	s := &second{Tool: tool}
	cctx, cancel := context.WithTimeout(ctx, 2*e.c.timeout)
	defer cancel()
	dstHost := strings.TrimPrefix(proxy.URL(), "http://")

	var b0, b1 map[string]int64
	var r0, r1 map[string]int
	var before int64
	switch tool {
	case "tagger":
		up := &pusher{base: e.up.URL(), hc: e.hc}
		if err := up.putManifest(ctx, e.upRepo, "latest", e.imgA); err != nil {
			return nil, err
		}
		logPath := filepath.Join(e.logDir, "tagger-second.log")
		const name = "bench-second"
		defer e.deleteTag(name) // runs after p.Stop
		p, err := startController(tt.Program, e.ctrlBin, e.controllerArgs(proxy.URL(), e.c.maxCopies), logPath)
		if err != nil {
			return nil, err
		}
		defer p.Stop()
		tag := &v1alpha1.Tag{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec:       v1alpha1.TagSpec{Image: e.up.Host() + "/" + e.upRepo + ":latest", Cache: true},
		}
		if _, _, err := e.waitTag(cctx, name, func() error { return e.cl.Create(cctx, tag) }, cachedGeneration(1, e.imgA.digest)); err != nil {
			return nil, fmt.Errorf("%w; controller log:\n%s", err, benchproc.Tail(logPath, 3000))
		}
		r0, b0 = proxy.Snapshot()
		before = sum(b0)
		s.FirstBytes = before
		m0, err := benchproc.Scrape(p.Metrics, "tagger_copy_bytes_total")
		if err != nil {
			return nil, err
		}
		// The upstream tag moves to the second image; a check records it
		// as generation 2, which is served and copied.
		if err := up.putManifest(ctx, e.upRepo, "latest", e.imgB); err != nil {
			return nil, err
		}
		start := time.Now()
		done, _, err := e.waitTag(cctx, name, func() error {
			var cur v1alpha1.Tag
			if err := e.cl.Get(cctx, client.ObjectKey{Name: name}, &cur); err != nil {
				return err
			}
			patch := client.MergeFrom(cur.DeepCopy())
			if cur.Annotations == nil {
				cur.Annotations = map[string]string{}
			}
			cur.Annotations[v1alpha1.CheckAnnotation] = strconv.FormatInt(time.Now().UnixNano(), 10)
			return e.cl.Patch(cctx, &cur, patch)
		}, cachedGeneration(2, e.imgB.digest))
		if err != nil {
			return nil, fmt.Errorf("%w; controller log:\n%s", err, benchproc.Tail(logPath, 3000))
		}
		s.SecondWall = done.Sub(start).Seconds()
		m1, err := benchproc.Scrape(p.Metrics, "tagger_copy_bytes_total")
		if err != nil {
			return nil, err
		}
		s.MetricBytes = int64(m1["tagger_copy_bytes_total"] - m0["tagger_copy_bytes_total"])
		logs, err := copyLogs(logPath)
		if err != nil || len(logs) != 2 {
			return nil, fmt.Errorf("want two copies logged by the controller, got %d (%v)", len(logs), err)
		}
		l := logs[1]
		s.SecondCopy, s.LogBytes = l.Duration.Seconds(), l.BytesUploaded
		s.BlobsUploaded, s.BlobsPresent, s.BlobsMounted = l.Uploaded, l.Present, l.Mounted
	default:
		copyOne := func(ref string) (time.Duration, error) {
			src := e.up.Host() + "/" + e.upRepo + ":" + ref
			dst := dstHost + "/" + e.cacheRepo + ":" + ref
			tr, err := runTool(cctx, e.copyArgv(tool, src, dst), filepath.Join(e.logDir, tool+"-second-"+ref+".log"), e.c.rssEvery)
			return tr.wall, err
		}
		if _, err := copyOne("v1"); err != nil {
			return nil, err
		}
		r0, b0 = proxy.Snapshot()
		before = sum(b0)
		s.FirstBytes = before
		wall, err := copyOne("v2")
		if err != nil {
			return nil, err
		}
		s.SecondWall = wall.Seconds()
	}
	r1, b1 = proxy.Snapshot()
	s.SecondBytes = sum(b1) - before
	s.SecondReqs = diffCounts(b0, b1, r0, r1)
	for _, img := range []*benchImage{e.imgA, e.imgB} {
		got, err := manifestDigest(ctx, e.hc, bundled.URL(), e.cacheRepo, img.digest.String())
		if err != nil {
			return nil, err
		}
		if got != img.digest {
			return nil, fmt.Errorf("the bundled registry lacks manifest %s after the copy", img.digest)
		}
	}
	return s, nil
}
