package cripull

import (
	"bufio"
	"context"
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
	"syscall"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sirupsen/logrus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/pkg/controller"
	"github.com/tagger-project/tagger/pkg/logging"
	"github.com/tagger-project/tagger/pkg/node"
	"github.com/tagger-project/tagger/pkg/pins"
)

var (
	reps        = flag.Int("cripull.reps", 11, "measured pulls of each case (the median is reported)")
	layers      = flag.Int("cripull.layers", 5, "layers of the image")
	layerMiB    = flag.Int("cripull.layer-mib", 40, "random (incompressible) bytes in each layer, MiB")
	snapshotter = flag.String("cripull.snapshotter", rig.SnapshotterOverlayfs,
		"containerd snapshotter: overlayfs (what nodes use) or native")
)

// pullCase is one way of pulling: its own containerd daemon (same
// configuration for all), and for the mirror cases a node agent.
type pullCase struct {
	name, what string
	ctd        *rig.Containerd
	agent      *node.Agent
	times      []time.Duration
	// mirror request counts of the last measured pull, by "kind/result".
	requests map[string]float64
}

// BenchmarkCRIPull measures the wall time of a CRI pull (PullImage, which
// returns once the image is fetched and unpacked) of one pinned image, with
// the content store emptied before every pull. The cases run in rotating
// order after one unmeasured warm-up pull each. It ignores b.N: run it with
// -benchtime 1x.
func BenchmarkCRIPull(b *testing.B) {
	rig.RequireRoot(b)
	dir := rig.RequireBins(b, "kube-apiserver", "etcd", "registry", "containerd", "ctr", "containerd-shim-runc-v2")
	if *reps < 1 || *layers < 1 || *layerMiB < 1 {
		b.Fatal("-cripull.reps, -cripull.layers and -cripull.layer-mib must be >= 1")
	}
	ctx := context.Background()
	log, err := logging.New(os.Stderr, "text", "warn")
	if err != nil {
		b.Fatal(err)
	}
	cfg, c := startCluster(b, dir, log)

	// The upstream and the image: random layers do not compress, so the
	// pull moves layers x layer-mib MiB.
	up := rig.NewRegistry(b, rig.RegistryOptions{})
	logf("building and pushing a %d x %d MiB image", *layers, *layerMiB)
	img := up.PushImage(b, "bench/app", "v1", rig.ImageOptions{Layers: *layers, LayerSize: *layerMiB << 20})
	imageRef := up.Host() + "/bench/app:v1"
	var total int64
	for _, l := range img.Layers {
		total += l.Size
	}
	total += img.Config.Size + img.Size
	logf("image %s: %s, %d layers, %.1f MiB in all", imageRef, img.Digest, len(img.Layers), float64(total)/(1<<20))

	// The Tag pinning it, served by the in-process controller.
	tag := &v1alpha1.Tag{ObjectMeta: metav1.ObjectMeta{Name: "cripull-bench"}, Spec: v1alpha1.TagSpec{Image: imageRef}}
	if err := c.Create(ctx, tag); err != nil {
		b.Fatalf("create Tag: %v", err)
	}
	b.Cleanup(func() { _ = c.Delete(context.Background(), tag) })
	rig.WaitFor(b, time.Minute, "the Tag to serve the image", func() (bool, string) {
		var t v1alpha1.Tag
		if err := c.Get(ctx, client.ObjectKey{Name: tag.Name}, &t); err != nil {
			return false, err.Error()
		}
		return t.Status.ServedDigest == img.Digest.String(), fmt.Sprintf("served %q", t.Status.ServedDigest)
	})

	ref, err := pins.ParseReference(imageRef)
	if err != nil {
		b.Fatal(err)
	}
	newCtd := func() *rig.Containerd {
		return rig.NewContainerd(b, rig.ContainerdOptions{Snapshotter: *snapshotter})
	}

	// (a) direct: hosts.toml with the upstream only.
	direct := &pullCase{name: "direct", what: "no mirror (hosts.toml: server = upstream)", ctd: newCtd()}
	hostDir := filepath.Join(direct.ctd.HostsDir(), up.Host())
	if err := os.MkdirAll(hostDir, 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(hostDir, "hosts.toml"), []byte(fmt.Sprintf("server = %q\n", up.URL())), 0o644); err != nil {
		b.Fatal(err)
	}

	// (b) through the mirror, bundled registry empty: content falls through.
	emptyBundled := rig.NewRegistry(b, rig.RegistryOptions{})
	fallthru := &pullCase{name: "mirror-fallthrough", what: "node mirror, bundled registry empty (content 404 -> upstream)", ctd: newCtd()}
	fallthru.agent = startAgent(b, cfg, log, fallthru.ctd, emptyBundled.URL())

	// (c) through the mirror, the image in the bundled registry under its
	// cache repository, as the node agent would find it.
	fullBundled := rig.NewRegistry(b, rig.RegistryOptions{})
	for _, d := range append([]ocispec.Descriptor{img.Config}, img.Layers...) {
		fullBundled.PushBlob(b, ref.CacheRepository(), d.MediaType, img.Blobs[d.Digest])
	}
	fullBundled.PushManifest(b, ref.CacheRepository(), ref.Tag, img.MediaType, img.Manifest)
	logf("pushed the same image to the bundled registry as %s/%s:%s", fullBundled.Host(), ref.CacheRepository(), ref.Tag)
	streamed := &pullCase{name: "mirror-bundled", what: "node mirror, image in the bundled registry (streamed)", ctd: newCtd()}
	streamed.agent = startAgent(b, cfg, log, streamed.ctd, fullBundled.URL())

	for _, pc := range []*pullCase{fallthru, streamed} {
		rig.WaitFor(b, time.Minute, pc.name+" agent to serve the pin and write hosts.toml", func() (bool, string) {
			p, ok := pc.agent.Pins().Lookup(ref.Registry, ref.Repository, ref.Tag)
			h, _ := os.ReadFile(filepath.Join(pc.ctd.HostsDir(), ref.Registry, "hosts.toml"))
			return ok && p.Digest == img.Digest.String() && strings.HasPrefix(string(h), "# managed by tagger"),
				fmt.Sprintf("pin %+v (%v), hosts.toml %q", p, ok, h)
		})
	}
	h, _ := os.ReadFile(filepath.Join(fallthru.ctd.HostsDir(), ref.Registry, "hosts.toml"))
	logf("hosts.toml written by the node agent:\n%s", h)

	cases := []*pullCase{direct, fallthru, streamed}
	pull := func(pc *pullCase) time.Duration {
		b.Helper()
		clearStore(b, pc.ctd)
		// Write back what earlier pulls left dirty, so that no pull pays
		// for another's page-cache writeback.
		syscall.Sync()
		before := mirrorRequests(b, pc.agent)
		pctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		defer cancel()
		start := time.Now()
		if _, err := pc.ctd.Pull(pctx, imageRef); err != nil {
			b.Fatalf("%s: %v\ncontainerd output:\n%s", pc.name, err, pc.ctd.Output())
		}
		d := time.Since(start)
		got, ok, err := pc.ctd.ImageDigest(ctx, imageRef)
		if err != nil || !ok || got != img.Digest.String() {
			b.Fatalf("%s: pulled %q (present %v, %v), want %s", pc.name, got, ok, err, img.Digest)
		}
		after := mirrorRequests(b, pc.agent)
		pc.requests = map[string]float64{}
		for k, v := range after {
			if n := v - before[k]; n > 0 {
				pc.requests[k] = n
			}
		}
		return d
	}

	// Warm-up: page cache of the registries' storage, connections, and a
	// check that each case takes the path it is named for.
	for _, pc := range cases {
		d := pull(pc)
		logf("warm-up %-18s %6.2fs  mirror requests %v", pc.name, d.Seconds(), pc.requests)
	}
	if err := checkPaths(fallthru, streamed, len(img.Layers)+1); err != nil {
		b.Fatal(err)
	}
	for rep := range *reps {
		for k := range cases {
			pc := cases[(k+rep)%len(cases)]
			d := pull(pc)
			pc.times = append(pc.times, d)
			logf("rep %d %-18s %6.2fs  %6.0f MiB/s", rep+1, pc.name, d.Seconds(), float64(total)/(1<<20)/d.Seconds())
		}
	}

	base := median(direct.times)
	var sb strings.Builder
	fmt.Fprintf(&sb, "\nCRI pull of %s (%d layers, %.1f MiB), snapshotter %s, %d CPUs, median of %d:\n\n",
		imageRef, len(img.Layers), float64(total)/(1<<20), *snapshotter, runtime.NumCPU(), *reps)
	fmt.Fprintln(&sb, "| case | median s/pull | vs direct | fastest s/pull | fastest vs direct's | each pull (s) |")
	fmt.Fprintln(&sb, "|---|---:|---:|---:|---:|---|")
	baseMin := slices.Min(direct.times)
	for _, pc := range cases {
		m, lo := median(pc.times), slices.Min(pc.times)
		each := make([]string, len(pc.times))
		for i, d := range pc.times {
			each[i] = fmt.Sprintf("%.2f", d.Seconds())
		}
		fmt.Fprintf(&sb, "| %s: %s | %.3f | %.2fx | %.3f | %.2fx | %s |\n", pc.name, pc.what, m.Seconds(), m.Seconds()/base.Seconds(),
			lo.Seconds(), lo.Seconds()/baseMin.Seconds(), strings.Join(each, ", "))
		b.ReportMetric(m.Seconds(), "s/pull-"+pc.name)
		if pc != direct {
			b.ReportMetric(m.Seconds()/base.Seconds(), "x-"+pc.name+"/direct")
		}
	}
	r := median(fallthru.times).Seconds() / base.Seconds()
	verdict := "met"
	if r > 1.1 {
		verdict = "NOT met"
	}
	fmt.Fprintf(&sb, "\nmirror-fallthrough / direct = %.2fx (target <= 1.1x): %s; load average %s\n", r, verdict, loadavg())
	fmt.Print(sb.String())
}

// checkPaths checks, from the agents' mirror metrics of the warm-up pulls,
// that (b) resolved through the mirror and fetched content upstream after
// its 404s, and (c) got everything from the mirror. blobs is config+layers.
func checkPaths(fallthru, streamed *pullCase, blobs int) error {
	if fallthru.requests["manifest_tag/pinned_hit"] < 1 || fallthru.requests["blob/upstream_fallback_404"] != float64(blobs) ||
		fallthru.requests["blob/pinned_hit"] != 0 {
		return fmt.Errorf("mirror-fallthrough: mirror requests %v; want the tag answered and %d blob 404s", fallthru.requests, blobs)
	}
	if streamed.requests["manifest_tag/pinned_hit"] < 1 || streamed.requests["blob/pinned_hit"] != float64(blobs) ||
		streamed.requests["manifest_digest/pinned_hit"] < 1 || streamed.requests["blob/upstream_fallback_404"] != 0 {
		return fmt.Errorf("mirror-bundled: mirror requests %v; want the manifest and %d blobs served", streamed.requests, blobs)
	}
	return nil
}

// clearStore removes every image and waits until the content store and the
// snapshotter are empty, so each pull fetches and unpacks everything.
func clearStore(b *testing.B, ctd *rig.Containerd) {
	b.Helper()
	ctx := context.Background()
	if err := ctd.RemoveAllImages(ctx); err != nil {
		b.Fatal(err)
	}
	rig.WaitFor(b, time.Minute, "content and snapshots to be gone", func() (bool, string) {
		content, err := ctd.ContentDigests(ctx)
		if err != nil {
			return false, err.Error()
		}
		out, err := ctd.Ctr(ctx, "snapshots", "--snapshotter", *snapshotter, "ls")
		if err != nil {
			return false, err.Error()
		}
		var snaps []string
		for i, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if i > 0 && strings.TrimSpace(l) != "" { // line 0: KEY PARENT KIND
				snaps = append(snaps, l)
			}
		}
		return len(content) == 0 && len(snaps) == 0, fmt.Sprintf("content %v, snapshots %v", content, snaps)
	})
}

// startAgent runs a real node agent for ctd in this process: mirror on an
// ephemeral port, hosts.toml in ctd's hosts dir, no local-image convergence
// (it would pull on its own and race the measured pulls).
func startAgent(b *testing.B, cfg *rest.Config, log *logrus.Logger, ctd *rig.Containerd, bundled string) *node.Agent {
	b.Helper()
	o := node.DefaultOptions()
	o.Listen = "127.0.0.1:0"
	o.MetricsAddr, o.HealthAddr = "127.0.0.1:0", "0"
	o.HostsDir = ctd.HostsDir()
	o.ContainerdConfig = ctd.ConfigPath()
	o.CRIEndpoint = ""
	o.RegistryURL = bundled
	o.PlainHTTPRegistries = []string{"127.0.0.1:*"}
	a, err := node.New(cfg, o, log)
	if err != nil {
		b.Fatalf("node agent: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("node agent: %v", err)
		}
	})
	rig.WaitFor(b, time.Minute, "node agent ready", func() (bool, string) {
		p := a.NotReady()
		return len(p) == 0, fmt.Sprint(p)
	})
	return a
}

// mirrorRequests reads tagger_mirror_requests_total from the agent's
// metrics endpoint, keyed "kind/result"; nil without an agent.
func mirrorRequests(b *testing.B, a *node.Agent) map[string]float64 {
	b.Helper()
	if a == nil {
		return nil
	}
	resp, err := http.Get("http://" + a.Addr("metrics") + "/metrics")
	if err != nil {
		b.Fatalf("scrape node agent metrics: %v", err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "tagger_mirror_requests_total{")
		if !ok {
			continue
		}
		labels, val, ok := strings.Cut(rest, "} ")
		if !ok {
			continue
		}
		var kind, result string
		for _, kv := range strings.Split(labels, ",") {
			k, v, _ := strings.Cut(kv, "=")
			v = strings.Trim(v, `"`)
			switch k {
			case "kind":
				kind = v
			case "result":
				result = v
			}
		}
		f, _ := strconv.ParseFloat(val, 64)
		out[kind+"/"+result] = f
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return out
}

// startCluster starts envtest (kube-apiserver, etcd) with the Tag CRD and
// the controller in-process, as test/e2e does.
func startCluster(b *testing.B, dir string, log *logrus.Logger) (*rest.Config, client.Client) {
	b.Helper()
	_, file, _, _ := runtime.Caller(0)
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(filepath.Dir(file), "..", "..", "..", "deploy", "crds")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: dir,
	}
	cfg, err := env.Start()
	if err != nil {
		b.Fatalf("start envtest: %v", err)
	}
	b.Cleanup(func() {
		if err := env.Stop(); err != nil {
			b.Errorf("stop envtest: %v", err)
		}
	})
	scheme, err := v1alpha1.NewScheme()
	if err != nil {
		b.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		b.Fatal(err)
	}
	co := controller.DefaultOptions()
	co.MetricsAddr, co.HealthAddr, co.WebhookAddr = "0", "0", "0"
	co.PlainHTTPRegistries = []string{"127.0.0.1:*"}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- controller.Run(ctx, cfg, co, log) }()
	// Registered after env.Stop's cleanup, so it runs first.
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("controller: %v", err)
		}
	})
	return cfg, c
}

// logf reports progress on stderr: the testing package truncates a
// benchmark's log.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "cripull: "+format+"\n", args...)
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func loadavg() string {
	bs, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(bs))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
