package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"

	"github.com/tagger-project/tagger/hack/bench/internal/benchproc"
)

func fmtBytes(b int64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d B", b)
}

// row is one line of the copy table.
type row struct {
	name                               string
	wall                               []float64
	cpu, up, bundled, busy, other, rss []float64
}

func report(w io.Writer, e *env, res *results) {
	c := e.c
	fmt.Fprintf(w, "\n# Bundled-registry copy benchmark (hack/bench/copy)\n\n")
	fmt.Fprintf(w, "machine: %v CPUs, %v; load average %v at start, %v at end; started %v\n",
		res.Machine["cpus"], res.Machine["go"], res.Machine["loadavg_start"], res.Machine["loadavg_end"], res.Machine["start"])
	a := e.imgA
	fmt.Fprintf(w, "image: %d layers of %s (%s of blobs, incompressible, gzip stored blocks), %s; second image %s shares %d layers, new layer %s\n",
		len(a.layers), fmtBytes(a.layers[0].desc.Size), fmtBytes(a.size()), a.digest, e.imgB.digest, len(a.layers)-1,
		fmtBytes(e.imgB.layers[len(e.imgB.layers)-1].desc.Size))
	copies := "its default"
	if c.maxCopies > 0 {
		copies = fmt.Sprint(c.maxCopies)
	}
	fmt.Fprintf(w, "tools: tagger = ./cmd/controller process (--max-concurrent-copies %s)", copies)
	for _, k := range []string{"skopeo", "crane"} {
		if v, ok := res.Config[k]; ok {
			fmt.Fprintf(w, "; %v", v)
		}
	}
	fmt.Fprintf(w, "\n")

	rows := map[string]*row{}
	var order []string
	add := func(name string, wall float64, t *trial) {
		r := rows[name]
		if r == nil {
			r = &row{name: name}
			rows[name] = r
			order = append(order, name)
		}
		r.wall = append(r.wall, wall)
		r.cpu = append(r.cpu, t.CopierCPU)
		r.up = append(r.up, t.UpstreamCPU)
		r.bundled = append(r.bundled, t.BundledCPU)
		r.busy = append(r.busy, t.MachineBusy)
		r.other = append(r.other, otherLoad(t))
		r.rss = append(r.rss, benchproc.MiB(t.RSSMax))
	}
	var variants []string
	for _, t := range res.Trials {
		if _, ok := taggerCopies(t.Tool, 0); ok {
			if !slices.Contains(variants, t.Tool) {
				variants = append(variants, t.Tool)
			}
			add(t.Tool+": Tag created -> Cached=True", t.Wall, t)
			add(t.Tool+": the copy (Copier.Copy)", t.Copy, t)
		} else {
			add(t.Tool, t.Wall, t)
		}
	}
	sort.SliceStable(order, func(i, j int) bool { return order[i] < order[j] })
	fmt.Fprintf(w, "\n## 1. Copy of the image into an empty bundled registry (median of %d rounds, order rotating)\n\n", c.rounds)
	fmt.Fprintf(w, "| tool | wall (median) | MB/s | each round | CPU s: copier / upstream / bundled | machine busy (cores) | other load (cores) | copier RSS max |\n")
	fmt.Fprintf(w, "|---|---:|---:|---|---|---:|---:|---:|\n")
	for _, name := range order {
		r := rows[name]
		var each []string
		for _, x := range r.wall {
			each = append(each, fmt.Sprintf("%.2f", x))
		}
		rss := slicesMax(r.rss)
		fmt.Fprintf(w, "| %s | %.2fs | %.0f | %s | %.2f / %.2f / %.2f | %.2f | %.2f | %.1f MiB |\n", name, benchproc.Median(r.wall),
			float64(a.size())/1e6/benchproc.Median(r.wall), strings.Join(each, ", "), benchproc.Median(r.cpu), benchproc.Median(r.up), benchproc.Median(r.bundled),
			benchproc.Median(r.busy), benchproc.Median(r.other), rss)
	}
	best, bestName := math.Inf(1), ""
	for _, k := range []string{"skopeo", "crane"} {
		if r := rows[k]; r != nil && benchproc.Median(r.wall) < best {
			best, bestName = benchproc.Median(r.wall), k
		}
	}
	if len(variants) > 0 && bestName != "" {
		fmt.Fprintln(w)
		for _, v := range variants {
			tr, cp := rows[v+": Tag created -> Cached=True"], rows[v+": the copy (Copier.Copy)"]
			r1, r2 := benchproc.Median(tr.wall)/best, benchproc.Median(cp.wall)/best
			fmt.Fprintf(w, "%s / the better tool (%s, %.2fs): Tag created -> Cached %.2fx, the copy alone %.2fx; target <= 1.0x: %s (Tag -> Cached), %s (copy)\n",
				v, bestName, best, r1, r2, benchproc.Met(r1 <= 1), benchproc.Met(r2 <= 1))
		}
		var rssMax, idle int64
		for _, t := range res.Trials {
			if _, ok := taggerCopies(t.Tool, 0); ok {
				rssMax = max(rssMax, t.RSSMax)
				idle = max(idle, t.RSSBefore)
			}
		}
		fmt.Fprintf(w, "controller RSS max during the copies (VmRSS every %v): %.1f MiB (idle before the Tag: up to %.1f MiB); target <= 128 MiB: %s\n",
			c.rssEvery, benchproc.MiB(rssMax), benchproc.MiB(idle), benchproc.Met(rssMax <= 128<<20))
	} else if len(order) > 0 {
		fmt.Fprintf(w, "\nNOTE: no ratio: tagger or both comparators were left out (-tools)\n")
	}
	fmt.Fprintf(w, "\nper trial (tagger: wall = Tag created -> Cached=True; reconcile = Tag created -> its finalizer seen; copy = Copier.Copy):\n\n| round | tool | wall | reconcile | copy | copier CPU | upstream CPU | bundled CPU | busy | RSS max (samples) | load before |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|\n")
	for _, t := range res.Trials {
		cp, rc := "-", "-"
		if t.Copy > 0 {
			cp = fmt.Sprintf("%.2fs", t.Copy)
		}
		if t.Reconcile > 0 {
			rc = fmt.Sprintf("%.2fs", t.Reconcile)
		}
		fmt.Fprintf(w, "| %d | %s | %.2fs | %s | %s | %.2fs | %.2fs | %.2fs | %.2f | %.1f MiB (%d) | %s |\n", t.Round, t.Tool, t.Wall, rc, cp,
			t.CopierCPU, t.UpstreamCPU, t.BundledCPU, t.MachineBusy, benchproc.MiB(t.RSSMax), t.RSSSamples, t.Loadavg)
	}
	for _, t := range res.Trials {
		if _, ok := taggerCopies(t.Tool, 0); ok && t.Bytes != a.size() {
			fmt.Fprintf(w, "\nNOTE: round %d: tagger_copy_bytes_total grew by %d, the image has %d blob bytes\n", t.Round, t.Bytes, a.size())
		}
	}

	if len(res.Second) > 0 {
		newLayer := e.imgB.layers[len(e.imgB.layers)-1].desc.Size
		want := newLayer + e.imgB.configD.Size + int64(len(e.imgB.manifest))
		fmt.Fprintf(w, "\n## 2. Second copy: an image sharing %d of its %d layers with one already in the bundled registry\n\n", len(a.layers)-1, len(a.layers))
		fmt.Fprintf(w, "new content: layer %d B + config %d B + manifest %d B = %d B (%s)\n\n", newLayer, e.imgB.configD.Size, len(e.imgB.manifest), want, fmtBytes(want))
		fmt.Fprintf(w, "| tool | first copy: bytes uploaded | **second copy: bytes uploaded** | / new content | second copy time | second copy requests (bytes) |\n|---|---:|---:|---:|---:|---|\n")
		for _, s := range res.Second {
			fmt.Fprintf(w, "| %s | %d (%s) | **%d (%s)** | %.4fx | %.2fs | %s |\n", s.Tool, s.FirstBytes, fmtBytes(s.FirstBytes),
				s.SecondBytes, fmtBytes(s.SecondBytes), float64(s.SecondBytes)/float64(want), s.SecondWall, s.SecondReqs)
		}
		for _, s := range res.Second {
			if s.Tool != "tagger" {
				continue
			}
			ok := s.SecondBytes >= newLayer && s.SecondBytes <= want+64<<10 && s.LogBytes == newLayer+e.imgB.configD.Size
			fmt.Fprintf(w, "\ntagger, second copy: copier log %d blobs uploaded (%d bytes), %d present, %d mounted; tagger_copy_bytes_total +%d; copy %.2fs, annotation -> generation 2 Cached %.2fs\n",
				s.BlobsUploaded, s.LogBytes, s.BlobsPresent, s.BlobsMounted, s.MetricBytes, s.SecondCopy, s.SecondWall)
			fmt.Fprintf(w, "target \"uploads only the new layer\" (and its config): %s\n", benchproc.Met(ok))
		}
	}
}

// otherLoad is the cores the machine spent on anything but the three
// processes of the copy during a trial: other engineers' work, mostly.
func otherLoad(t *trial) float64 {
	if t.Wall <= 0 {
		return 0
	}
	return max(0, t.MachineBusy-(t.CopierCPU+t.UpstreamCPU+t.BundledCPU)/t.Wall)
}

func slicesMax(xs []float64) float64 {
	m := math.Inf(-1)
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}
