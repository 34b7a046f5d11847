package repull

import (
	"context"
	"errors"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tagger-project/tagger/pkg/pins"
)

// fakeImages is an in-memory image store whose pulls land whatever "upstream"
// says a ref resolves to.
type fakeImages struct {
	mu        sync.Mutex
	records   map[string]string // ref -> digest
	resolves  map[string]string // ref -> digest a pull lands
	failPulls int
	pulls     []string
	inFlight  int
	maxFlight int
	gate      chan struct{}
}

func (f *fakeImages) RepoDigests(_ context.Context, ref string) ([]string, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.records[ref]
	if !ok {
		return nil, false, nil
	}
	return []string{"repo@" + d}, true, nil
}

func (f *fakeImages) Pull(_ context.Context, ref string) error {
	f.mu.Lock()
	f.inFlight++
	f.maxFlight = max(f.maxFlight, f.inFlight)
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		<-gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.inFlight--
	f.pulls = append(f.pulls, ref)
	if f.failPulls > 0 {
		f.failPulls--
		return errors.New("pull failed")
	}
	f.records[ref] = f.resolves[ref]
	return nil
}

func pin(img, d string) pins.Pin {
	ref, err := pins.ParseReference(img)
	if err != nil {
		panic(err)
	}
	return pins.Pin{Ref: ref, Digest: d}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestConvergeOnlyStaleRecords(t *testing.T) {
	f := &fakeImages{
		records:  map[string]string{"docker.io/library/a:1": "sha256:old", "docker.io/library/b:1": "sha256:b"},
		resolves: map[string]string{"docker.io/library/a:1": "sha256:new"},
	}
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	c := NewConverger(Options{Images: f, Metrics: m, MinBackoff: time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.Run(ctx)

	c.Update([]pins.Pin{pin("a:1", "sha256:new"), pin("b:1", "sha256:b"), pin("c:1", "sha256:c")})
	waitUntil(t, "convergence", func() bool { return len(c.Pending()) == 0 })
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.pulls) != 1 || f.pulls[0] != "docker.io/library/a:1" || f.records["docker.io/library/a:1"] != "sha256:new" {
		t.Fatalf("pulls %v records %v: want only a:1 re-pulled to sha256:new", f.pulls, f.records)
	}
	if _, ok := f.records["docker.io/library/c:1"]; ok {
		t.Fatal("absent image was pulled")
	}
	if got := testutil.ToFloat64(m.total.WithLabelValues("converged")); got != 1 {
		t.Fatalf("converged count = %v", got)
	}
	if got := testutil.ToFloat64(m.pending); got != 0 {
		t.Fatalf("pending gauge = %v", got)
	}
}

func TestConvergeRetriesWithBackoff(t *testing.T) {
	f := &fakeImages{
		records:   map[string]string{"docker.io/library/a:1": "sha256:old"},
		resolves:  map[string]string{"docker.io/library/a:1": "sha256:new"},
		failPulls: 2,
	}
	c := NewConverger(Options{Images: f, MinBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.Run(ctx)
	c.Update([]pins.Pin{pin("a:1", "sha256:new")})
	waitUntil(t, "convergence after failures", func() bool { return len(c.Pending()) == 0 })
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.pulls) != 3 {
		t.Fatalf("pulls = %d, want 3 (two failures then success)", len(f.pulls))
	}
}

func TestConvergeDetectsBypassedMirror(t *testing.T) {
	// The pull lands another digest (the mirror was not asked): not converged, retried.
	f := &fakeImages{
		records:  map[string]string{"docker.io/library/a:1": "sha256:old"},
		resolves: map[string]string{"docker.io/library/a:1": "sha256:upstream"},
	}
	c := NewConverger(Options{Images: f, MinBackoff: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.Run(ctx)
	c.Update([]pins.Pin{pin("a:1", "sha256:pinned")})
	waitUntil(t, "one pull", func() bool { f.mu.Lock(); defer f.mu.Unlock(); return len(f.pulls) == 1 })
	if p := c.Pending(); len(p) != 1 {
		t.Fatalf("pending = %v, want the bypassed ref", p)
	}
}

func TestConvergeBoundsConcurrency(t *testing.T) {
	f := &fakeImages{records: map[string]string{}, resolves: map[string]string{}, gate: make(chan struct{})}
	var ps []pins.Pin
	for _, n := range []string{"a", "b", "c", "d", "e", "f"} {
		ref := "docker.io/library/" + n + ":1"
		f.records[ref], f.resolves[ref] = "sha256:old", "sha256:new"
		ps = append(ps, pin(n+":1", "sha256:new"))
	}
	c := NewConverger(Options{Images: f, Workers: 2})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.Run(ctx)
	c.Update(ps)
	waitUntil(t, "two pulls in flight", func() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.inFlight == 2 })
	close(f.gate)
	waitUntil(t, "all converged", func() bool { return len(c.Pending()) == 0 })
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.maxFlight != 2 {
		t.Fatalf("max pulls in flight = %d, want 2", f.maxFlight)
	}
	sort.Strings(f.pulls)
	if len(f.pulls) != 6 {
		t.Fatalf("pulls = %v", f.pulls)
	}
}
