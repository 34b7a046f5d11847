package main

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strings"

	"github.com/tagger-project/tagger/hack/bench/internal/benchproc"
)

// percentile is the nearest-rank percentile of xs (p in (0, 100]).
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	k := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[min(max(k, 0), len(s)-1)]
}

func report(w io.Writer, c *config, res *results) {
	fmt.Fprintf(w, "\n# tagger controller benchmark\n\n")
	fmt.Fprintf(w, "machine: %v CPUs, %v; load average %v at start, %v at end\n", res.Machine["cpus"], res.Machine["go"],
		res.Machine["loadavg_start"], res.Machine["loadavg_end"])
	if c.controllerBin != "" {
		fmt.Fprintf(w, "controller = %s, a separate process\n", c.controllerBin)
	} else {
		fmt.Fprintf(w, "controller = the shipped ./cmd/controller binary, a separate process\n")
	}
	if wr := res.Webhook; wr != nil {
		var post, annot, check, node, pin, beyond []float64
		for _, it := range wr.Iterations {
			post = append(post, it.Post)
			annot = append(annot, it.Annotation)
			check = append(check, it.Served-it.Annotation)
			node = append(node, it.Pin-it.Served)
			pin = append(pin, it.Pin)
			beyond = append(beyond, it.Pin-it.Annotation)
		}
		fmt.Fprintf(w, "\n## 1. webhook received -> new digest on the node agent's pin table (%d iterations after %d warm-up, each POSTed more than the coalescing window %s after the previous check)\n\n",
			len(wr.Iterations), c.warmup, wr.Coalesce)
		fmt.Fprintf(w, "| segment | median | p90 | p99 | max |\n|---|---:|---:|---:|---:|\n")
		row := func(name string, xs []float64) {
			fmt.Fprintf(w, "| %s | %.3fs | %.3fs | %.3fs | %.3fs |\n", name, percentile(xs, 50), percentile(xs, 90), percentile(xs, 99), percentile(xs, 100))
		}
		row("POST answered (202)", post)
		row("POST -> check annotation patched (queue + patch + watch)", annot)
		row("annotation -> status.servedDigest (reconcile: HEAD, platform read, status write)", check)
		row("status -> node agent pin table (informer + rebuild)", node)
		row("annotation -> pin table (everything but the window)", beyond)
		row("**POST -> pin table (total)**", pin)
		p99 := percentile(pin, 99)
		fmt.Fprintf(w, "\ntarget p99 < 1s: %s (p99 %.3fs; with N=%d, p99 is the nearest-rank value = the %s)\n",
			benchproc.Met(p99 < 1), p99, len(pin), map[bool]string{true: "maximum", false: "99th percentile"}[len(pin) <= 100])
		fmt.Fprintf(w, "upstream requests during the measured iterations: %v\n", wr.Upstream)
		if len(wr.BackToBack) > 0 {
			served := 0
			for _, b := range wr.BackToBack {
				if b.Served {
					served++
				}
			}
			fmt.Fprintf(w, "\nback to back (a second push, its generic body naming the push with \"id\", POSTed right after the first was served, inside the coalescing window): %d of %d second pushes reached the pin table without another webhook\n",
				served, len(wr.BackToBack))
			fmt.Fprintf(w, "| # | POST after previous check | answer | served | POST -> pin | later webhook -> pin |\n|---|---:|---|---|---:|---:|\n")
			for i, b := range wr.BackToBack {
				pin, rec := fmt.Sprintf("%.3fs", b.Pin), "-"
				if !b.Served {
					pin = fmt.Sprintf("not within %.0fs", b.Pin)
					rec = fmt.Sprintf("%.3fs", b.Recovered)
				}
				fmt.Fprintf(w, "| %d | %.3fs | `%s` | %v | %s | %s |\n", i+1, b.SincePrevCheck, b.Answer, b.Served, pin, rec)
			}
		}
		fmt.Fprintf(w, "CPU during the iterations (%.0fs): controller %.3f cores, machine busy %.2f cores; load average %s -> %s\n",
			wr.CPU.Seconds, wr.CPU.Controller, wr.CPU.Machine, wr.Loadavg[0], wr.Loadavg[1])
	}
	for _, s := range res.Scale {
		fmt.Fprintf(w, "\n## 2. %d Tags (%d repositories x %d tags), checkInterval %v, --registry-qps %v, --max-concurrent-checks %d, --kube-api-qps %s\n\n",
			s.Tags, s.Repos, s.Tags/s.Repos, c.interval, c.registryQPS, c.maxChecks, s.KubeAPIQPS)
		fmt.Fprintf(w, "created in %.1fs; first pass %s: %d of %d Tags checked %.1fs after the first create (%.0f Tags/s)\n",
			s.CreateSeconds, map[bool]string{true: "complete", false: "INCOMPLETE"}[s.FirstPassDone], s.FirstPassTags, s.Tags,
			s.FirstPassSecs, float64(s.FirstPassTags)/s.FirstPassSecs)
		fmt.Fprintf(w, "first pass upstream requests (until every Tag was checked): %v\n", s.FirstPass)
		fmt.Fprintf(w, "first pass CPU: controller %.3f cores, machine busy %.2f cores over %.0fs\n",
			s.CPUFirstPass.Controller, s.CPUFirstPass.Machine, s.CPUFirstPass.Seconds)
		fmt.Fprintf(w, "\nmeasured %.0fs after the first pass (nothing moved upstream):\n\n", s.MeasureSeconds)
		fmt.Fprintf(w, "| quantity | value | target |\n|---|---:|---|\n")
		fmt.Fprintf(w, "| **HEADs per interval, steady state** (sum over Tags of interval / mean time between its HEADs; %d Tags with one HEAD left out) | %.0f | %d (+-5%%): %s |\n",
			s.TagsOneHead, s.SteadyPerInterval, s.Tags, benchproc.Met(s.TagsOneHead == 0 && math.Abs(s.SteadyPerInterval-float64(s.Tags)) <= 0.05*float64(s.Tags)))
		for i, h := range s.PerInterval {
			fmt.Fprintf(w, "| upstream HEADs in interval %d after the first pass (%v) | %d | %d |\n", i+1, c.interval, h, s.Tags)
		}
		fmt.Fprintf(w, "| upstream HEADs in the whole window (%.0fs) | %d | |\n", s.MeasureSeconds, s.Window["HEAD manifest"])
		fmt.Fprintf(w, "| Tags checked within 1.1 intervals of the start | %d | %d |\n", s.TagsCovered, s.Tags)
		fmt.Fprintf(w, "| gap between a tag's HEADs: min / median / max | %.0f / %.0f / %.0f s | [%.0f, %.0f] s (jitter 0.9-1.1 x) |\n",
			s.Gaps.Min, s.Gaps.Median, s.Gaps.Max, 0.9*c.interval.Seconds(), 1.1*c.interval.Seconds())
		fmt.Fprintf(w, "| gaps outside the jitter (< 0.9 x - 2 s / > 1.1 x + 2 s; 1 s timestamps, lastCheck kept in whole seconds) | %d / %d of %d | 0 / 0 |\n", s.Gaps.TooShort, s.Gaps.TooLong, s.Gaps.N)
		fmt.Fprintf(w, "| manifest GETs in the window | %d | 0: %s |\n", s.Window["GET manifest"], benchproc.Met(s.Window["GET manifest"] == 0))
		fmt.Fprintf(w, "| blob GETs in the window | %d | 0: %s |\n", s.Window["GET blob"], benchproc.Met(s.Window["GET blob"] == 0))
		fmt.Fprintf(w, "| controller RSS max (whole run) | %.1f MiB | <= 256 MiB: %s |\n", benchproc.MiB(s.RSSMax), benchproc.Met(s.RSSMax <= 256<<20))
		fmt.Fprintf(w, "| controller RSS max in the window | %.1f MiB | |\n", benchproc.MiB(s.RSSMaxWindow))
		fmt.Fprintf(w, "| controller RSS at window start / final | %.1f / %.1f MiB | <= 256 MiB: %s |\n", benchproc.MiB(s.RSSAtStart), benchproc.MiB(s.RSSFinal), benchproc.Met(s.RSSFinal <= 256<<20))
		fmt.Fprintf(w, "| controller CPU in the window | %.3f cores | |\n", s.CPU.Controller)
		api := (s.MetricsAtEnd["rest_client_requests_total"] - s.MetricsAtStart["rest_client_requests_total"]) / s.MeasureSeconds
		checks := (s.MetricsAtEnd["tagger_checks_total"] - s.MetricsAtStart["tagger_checks_total"]) / s.MeasureSeconds
		fmt.Fprintf(w, "| controller Kubernetes API requests/s in the window | %.1f | |\n", api)
		fmt.Fprintf(w, "| controller checks/s in the window (tagger_checks_total) | %.1f | %.1f (Tags / interval) |\n", checks, float64(s.Tags)/c.interval.Seconds())
		fmt.Fprintf(w, "| Tag workqueue depth at window start / end | %.0f / %.0f | |\n", s.MetricsAtStart["workqueue_depth"], s.MetricsAtEnd["workqueue_depth"])
		fmt.Fprintf(w, "| machine busy in the window | %.2f of %d cores | |\n", s.CPU.Machine, runtimeCPUs())
		fmt.Fprintf(w, "\nload average %s -> %s\n", s.Loadavg[0], s.Loadavg[1])
		fmt.Fprintf(w, "controller metrics at window start: %s\n", fmtMetrics(s.MetricsAtStart))
		fmt.Fprintf(w, "controller metrics at end:          %s\n", fmtMetrics(s.MetricsAtEnd))
	}
}

func fmtMetrics(m map[string]float64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%.6g ", k, m[k])
	}
	return strings.TrimSpace(b.String())
}
