package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// counts are answers per status class: 0 (closed without an answer or a
// transport error), 1xx..5xx.
type counts [6]int

// report collects what the probes saw.
type report struct {
	mu     sync.Mutex
	order  []string
	groups map[string]*counts
	fives  []string // the first few unexpected 5xx, for the report
	nFives int
	// protocol are the expected 5xx: Go's server answering 501/505 to a
	// malformed request before any handler, and /readyz saying not ready.
	protocol map[string]int
	slow     []timing
	idle     []timing
	elapsed  map[string]time.Duration
}

func (r *report) add(group string, status int, what string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.groups == nil {
		r.groups, r.elapsed = map[string]*counts{}, map[string]time.Duration{}
	}
	c := r.groups[group]
	if c == nil {
		c = &counts{}
		r.groups[group] = c
		r.order = append(r.order, group)
	}
	class := status / 100
	if class < 0 || class > 5 {
		class = 0
	}
	c[class]++
	switch {
	case class != 5:
	case expected5xx(status, what):
		if r.protocol == nil {
			r.protocol = map[string]int{}
		}
		r.protocol[fmt.Sprintf("%d %s", status, http.StatusText(status))]++
	default:
		r.nFives++
		if len(r.fives) < 20 {
			r.fives = append(r.fives, fmt.Sprintf("%s: %d for %.120q", group, status, what))
		}
	}
}

// expected5xx: a 501 (unknown transfer coding) or 505 (HTTP/9.9) that Go's
// server answers before any handler runs, which is right; and /readyz's
// 503, since the probe's node agent has no containerd whose config reads
// hosts.toml and says so.
func expected5xx(status int, what string) bool {
	switch {
	case status == http.StatusNotImplemented && strings.Contains(what, "Transfer-Encoding: gzip"):
		return true
	case status == http.StatusHTTPVersionNotSupported && strings.Contains(what, "HTTP/9.9"):
		return true
	case status == http.StatusServiceUnavailable && strings.Contains(what, " /readyz "):
		return true
	}
	return false
}

// runRaw sends each raw request on its own connection, 16 at a time.
func (r *report) runRaw(group, addr string, jobs []string) {
	start := time.Now()
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for _, j := range jobs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			status, _ := rawDo(addr, j)
			r.add(group, status, j)
		})
	}
	wg.Wait()
	r.mu.Lock()
	r.elapsed[group] += time.Since(start)
	r.mu.Unlock()
}

// burst sends n requests from workers keep-alive clients at once.
func (r *report) burst(ctx context.Context, group string, workers, n int, req func(int) (*http.Request, error)) {
	start := time.Now()
	tr := &http.Transport{MaxIdleConnsPerHost: workers, DisableCompression: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	next := make(chan int)
	go func() {
		defer close(next)
		for i := range n {
			select {
			case next <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				q, err := req(i)
				if err != nil {
					r.add(group, 0, err.Error())
					continue
				}
				resp, err := c.Do(q)
				if err != nil {
					r.add(group, 0, err.Error())
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				r.add(group, resp.StatusCode, q.Method+" "+q.URL.Path)
			}
		})
	}
	wg.Wait()
	r.mu.Lock()
	r.elapsed[group] += time.Since(start)
	r.mu.Unlock()
}

// usage is the process's resident memory and open files.
type usage struct {
	rssKiB, fds, goroutines int
}

func sample() usage {
	runtime.GC()
	u := usage{goroutines: runtime.NumGoroutine()}
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		u.fds = len(ents)
	}
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
				u.rssKiB, _ = strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			}
		}
	}
	return u
}

// settle waits (at most 60s) for the open files to come back near where
// they were, and samples.
func settle(before usage) usage {
	deadline := time.Now().Add(60 * time.Second)
	for {
		u := sample()
		if u.fds <= before.fds+5 || time.Now().After(deadline) {
			return u
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// maxRSSGrowthKiB bounds how much resident memory the probe may leave behind.
const maxRSSGrowthKiB = 128 << 10

func (r *report) print(w io.Writer, before, after usage, panics int64, resolveErr error) {
	fmt.Fprintf(w, "| target | requests | closed/no answer | 1xx | 2xx | 3xx | 4xx | 5xx | time |\n|---|---|---|---|---|---|---|---|---|\n")
	total := 0
	for _, g := range r.order {
		c := r.groups[g]
		n := 0
		for _, v := range c {
			n += v
		}
		total += n
		fmt.Fprintf(w, "| %s | %d | %d | %d | %d | %d | %d | %d | %s |\n", g, n, c[0], c[1], c[2], c[3], c[4], c[5], r.elapsed[g].Round(time.Millisecond))
	}
	fmt.Fprintf(w, "\n%d requests. Unexpected 5xx answers: %d. Panics: %d. Expected 5xx: %v (501/505: Go's server, before any handler, to a malformed request; 503: /readyz of an agent without containerd).\n",
		total, r.nFives, panics, r.protocol)
	for _, f := range r.fives {
		fmt.Fprintln(w, "  5xx:", f)
	}
	fmt.Fprintf(w, "\n| connections held | count | longest until the server closed it | still open after 90s |\n|---|---|---|---|\n")
	for _, t := range append(append([]timing{}, r.slow...), r.idle...) {
		fmt.Fprintf(w, "| %s | %d | %s | %d |\n", t.name, t.conns, t.max.Round(100*time.Millisecond), t.open)
	}
	fmt.Fprintf(w, "\n| process (controller, node agent, probe clients) | before | after |\n|---|---|---|\n")
	fmt.Fprintf(w, "| RSS | %d MiB | %d MiB |\n| open files | %d | %d |\n| goroutines | %d | %d |\n",
		before.rssKiB>>10, after.rssKiB>>10, before.fds, after.fds, before.goroutines, after.goroutines)
	if resolveErr != nil {
		fmt.Fprintf(w, "\nThe pinned tag does NOT resolve correctly afterwards: %v\n", resolveErr)
	} else {
		fmt.Fprintf(w, "\nAfterwards the pinned tag still resolves (HEAD, GET by tag and by digest, Accept none, */*, text/html) to the pinned digest, and the Tag still serves it.\n")
	}
}

func (r *report) verdict(before, after usage, panics int64, resolveErr error) error {
	var errs []error
	if r.nFives > 0 {
		errs = append(errs, fmt.Errorf("%d answers were unexpected 5xx", r.nFives))
	}
	if panics > 0 {
		errs = append(errs, fmt.Errorf("%d panics", panics))
	}
	if after.fds > before.fds+5 {
		errs = append(errs, fmt.Errorf("open files %d -> %d", before.fds, after.fds))
	}
	if after.rssKiB > before.rssKiB+maxRSSGrowthKiB {
		errs = append(errs, fmt.Errorf("RSS %d -> %d KiB", before.rssKiB, after.rssKiB))
	}
	for _, t := range append(append([]timing{}, r.slow...), r.idle...) {
		if t.open > 0 {
			errs = append(errs, fmt.Errorf("%s: %d connections still open after 90s", t.name, t.open))
		}
	}
	if resolveErr != nil {
		errs = append(errs, resolveErr)
	}
	return errors.Join(errs...)
}
