package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/tagger-project/tagger/internal/rig"
)

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
		setBenchAuth(req)
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
%sfunction done(summary, latency, requests)
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
		if err := os.WriteFile(path, fmt.Appendf(nil, wrkScript, m, acceptHeader, wrkAuthLine()), 0o644); err != nil {
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
		setBenchAuth(req)
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
