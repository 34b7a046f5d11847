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
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"time"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/hack/bench/internal/benchproc"
	"github.com/tagger-project/tagger/internal/rig"
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
	auth                bool
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
	fs.BoolVar(&c.auth, "auth", true, "bundled registry with token auth as the chart deploys it: tagger's issuer, the mirror authenticating with TokenAuth, direct requests with a token")
	_ = fs.Parse(args)
	if c.repeat < 1 || c.blobRuns < 1 || c.pins < 1 || c.blobMiB < 1 || c.duration < time.Second {
		fmt.Fprintln(os.Stderr, "bench: -repeat, -blob-runs, -pins, -blob-mib must be >= 1 and -duration >= 1s")
		return 2
	}

	return benchproc.Main("tagger-bench", func(ctx context.Context, r *rig.Program) error { return run(ctx, r, &c) })
}

// rig is the program's rig.T, owning every cleanup.
type program = rig.Program

func logf(f string, a ...any) { benchproc.Logf(f, a...) }

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

	return emit(c, res)
}
