package main

import (
	"fmt"
	"io"
	"runtime"
	"strings"
	"time"

	"github.com/tagger-project/tagger/hack/bench/internal/benchproc"
)

// emit prints the report to stdout and, with -json, writes every raw
// measurement.
func emit(c *config, res *results) error {
	return benchproc.Emit(c.out, res, func(w io.Writer) { report(w, c, res) }, logf)
}

// report prints the Markdown report: a header, then one section per
// benchmark that ran.
func report(w io.Writer, c *config, res *results) {
	m := res.Machine
	fmt.Fprintf(w, "\n# Mirror benchmark, %s\n\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "Machine: %d CPUs (nproc), %s; %s; %s; wrk: %s; load average at the end: %s\n",
		m.NumCPU, m.CPU, m.Kernel, runtime.Version(), m.Wrk, benchproc.Loadavg())

	if len(res.Manifest) > 0 {
		reportManifests(w, c, res)
	}
	if len(res.Blob) > 0 {
		reportBlob(w, c, res)
	}
	if len(res.Memory) > 0 {
		reportMemory(w, c, res)
	}
	fmt.Fprintln(w)
}

// reportManifests prints the wrk table and the ratios against the targets.
func reportManifests(w io.Writer, c *config, res *results) {
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
		fmt.Fprintf(w, "| %s | %.2fx %s | %.2fx %s | %s |\n", meth, d, benchproc.Met(d >= 5), cl, benchproc.Met(cl >= 0.7), off)
	}
}

// reportBlob prints the blob download table and its ratios.
func reportBlob(w io.Writer, c *config, res *results) {
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
		ratio, benchproc.Met(ratio >= 0.9), med["go-proxy"]/med["distribution"], med["mirror"]/med["go-proxy"])
}

// reportMemory prints the memory table.
func reportMemory(w io.Writer, c *config, res *results) {
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
			peak, benchproc.Met(rss <= 64<<20))
	}
}

func medianBy[T any](xs []T, f func(T) float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	v := make([]float64, len(xs))
	for i, x := range xs {
		v[i] = f(x)
	}
	return benchproc.Median(v)
}

func fmtUS(us float64) string {
	if us < 1000 {
		return fmt.Sprintf("%.0fµs", us)
	}
	return fmt.Sprintf("%.2fms", us/1000)
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
