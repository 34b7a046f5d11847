package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tagger-project/tagger/pkg/pins"
	"github.com/tagger-project/tagger/pkg/registryclient"
)

// fakeResolver records how many calls are in flight per repository and in
// all, and answers what answer says (a descriptor by default).
type fakeResolver struct {
	// hold, when set, is called inside every call, before it answers.
	hold   func(ref pins.Reference)
	answer func(ref pins.Reference) error

	mu         sync.Mutex
	calls      int
	inFlight   map[string]int
	maxPerRepo map[string]int
	total      int
	maxTotal   int
}

func newFake() *fakeResolver {
	return &fakeResolver{inFlight: map[string]int{}, maxPerRepo: map[string]int{}}
}

func (f *fakeResolver) enter(ref pins.Reference) error {
	f.mu.Lock()
	f.calls++
	f.inFlight[ref.Name()]++
	f.maxPerRepo[ref.Name()] = max(f.maxPerRepo[ref.Name()], f.inFlight[ref.Name()])
	f.total++
	f.maxTotal = max(f.maxTotal, f.total)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inFlight[ref.Name()]--
		f.total--
		f.mu.Unlock()
	}()
	if f.hold != nil {
		f.hold(ref)
	}
	if f.answer != nil {
		return f.answer(ref)
	}
	return nil
}

func (f *fakeResolver) Resolve(_ context.Context, ref pins.Reference, _ registryclient.Credentials) (registryclient.Descriptor, error) {
	if err := f.enter(ref); err != nil {
		return registryclient.Descriptor{}, err
	}
	return registryclient.Descriptor{Digest: digest.FromString(ref.String()), MediaType: registryclient.MediaTypeOCIManifest, Size: 1}, nil
}

func (f *fakeResolver) Platforms(_ context.Context, ref pins.Reference, _ registryclient.Descriptor, _ registryclient.Credentials) ([]string, error) {
	if err := f.enter(ref); err != nil {
		return nil, err
	}
	return []string{"linux/amd64"}, nil
}

func (f *fakeResolver) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func ref(t *testing.T, s string) pins.Reference {
	t.Helper()
	r, err := pins.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// unpaced is a rate no test reaches, for tests about other things.
const unpaced = 1e9

// waitFor polls cond until it holds, failing the test after 10s. It only
// synchronizes with goroutines; no assertion depends on its timing.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestOneCallInFlightPerRepository(t *testing.T) {
	f := newFake()
	f.hold = func(pins.Reference) { time.Sleep(5 * time.Millisecond) }
	l := New(f, Options{RegistryQPS: unpaced, Burst: 1000})

	repos := []string{"example.com/team/app", "example.com/team/db", "other.example/app"}
	const tagsPerRepo = 6
	var wg sync.WaitGroup
	errs := make(chan error, len(repos)*tagsPerRepo*2)
	for _, repo := range repos {
		for i := range tagsPerRepo {
			r := ref(t, fmt.Sprintf("%s:v%d", repo, i))
			wg.Go(func() {
				d, err := l.Resolve(context.Background(), r, registryclient.Credentials{})
				if err != nil {
					errs <- err
					return
				}
				// A platform read shares the repository's turn with resolves.
				if _, err := l.Platforms(context.Background(), r, d, registryclient.Credentials{}); err != nil {
					errs <- err
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("call failed: %v", err)
	}

	if got, want := f.callCount(), len(repos)*tagsPerRepo*2; got != want {
		t.Errorf("inner calls = %d, want %d", got, want)
	}
	for _, repo := range repos {
		if got := f.maxPerRepo[repo]; got != 1 {
			t.Errorf("max calls in flight for %s = %d, want 1", repo, got)
		}
	}
	if f.maxTotal < 2 {
		t.Errorf("max calls in flight across repositories = %d, want > 1 (repositories must not wait for each other)", f.maxTotal)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.repos) != 0 {
		t.Errorf("%d repository turns left behind after all calls ended", len(l.repos))
	}
}

func TestRegistryRate(t *testing.T) {
	// A small real rate; only a lower bound on the elapsed time is checked.
	const qps = 40
	tests := []struct {
		name  string
		calls int
		call  func(l *Limiter, r pins.Reference) error
		cost  int // tokens per call
	}{
		{"resolve costs one request", 11, func(l *Limiter, r pins.Reference) error {
			_, err := l.Resolve(context.Background(), r, registryclient.Credentials{})
			return err
		}, 1},
		{"platforms of an image manifest cost two", 6, func(l *Limiter, r pins.Reference) error {
			_, err := l.Platforms(context.Background(), r, registryclient.Descriptor{MediaType: registryclient.MediaTypeOCIManifest}, registryclient.Credentials{})
			return err
		}, 2},
		{"platforms of an index cost one", 11, func(l *Limiter, r pins.Reference) error {
			_, err := l.Platforms(context.Background(), r, registryclient.Descriptor{MediaType: registryclient.MediaTypeOCIIndex}, registryclient.Credentials{})
			return err
		}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake()
			l := New(f, Options{RegistryQPS: qps, Burst: 1})
			start := time.Now()
			var wg sync.WaitGroup
			// Different repositories, so only the registry's rate orders them.
			for i := range tt.calls {
				r := ref(t, fmt.Sprintf("example.com/app%d:v1", i))
				wg.Go(func() {
					if err := tt.call(l, r); err != nil {
						t.Error(err)
					}
				})
			}
			wg.Wait()
			// With a burst of 1, n tokens need (n-1)/qps.
			tokens := tt.calls * tt.cost
			minElapsed := time.Duration(float64(tokens-1) / qps * float64(time.Second))
			if elapsed := time.Since(start); elapsed < minElapsed {
				t.Errorf("%d calls (%d requests) at %d/s took %v, want at least %v", tt.calls, tokens, qps, elapsed, minElapsed)
			}
		})
	}
}

func TestRegistryRateIsPerRegistry(t *testing.T) {
	f := newFake()
	// One request per ~3h: a second call to the same registry waits.
	l := New(f, Options{RegistryQPS: 1e-4, Burst: 1})
	ctx := context.Background()
	if _, err := l.Resolve(ctx, ref(t, "slow.example/app:v1"), registryclient.Credentials{}); err != nil {
		t.Fatal(err)
	}
	waitCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	waited := make(chan error, 1)
	go func() {
		_, err := l.Resolve(waitCtx, ref(t, "slow.example/other:v1"), registryclient.Credentials{})
		waited <- err
	}()
	waitFor(t, "the second call to wait for the rate", func() bool {
		return testutil.ToFloat64(l.metrics.waiting.WithLabelValues("slow.example")) == 1
	})
	// Another registry has its own bucket.
	if _, err := l.Resolve(ctx, ref(t, "fast.example/app:v1"), registryclient.Credentials{}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-waited:
		t.Fatalf("second call to slow.example returned (%v) before its token", err)
	default:
	}
	cancel()
	if err := <-waited; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait returned %v, want context.Canceled", err)
	}
	if f.callCount() != 2 {
		t.Errorf("inner calls = %d, want 2", f.callCount())
	}
}

func TestRetryAfterBlocksTheRegistry(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)}
	f := newFake()
	var answer sync.Map // registry -> error to answer once
	f.answer = func(r pins.Reference) error {
		if v, ok := answer.LoadAndDelete(r.Registry); ok {
			return v.(error)
		}
		return nil
	}
	reg := prometheus.NewRegistry()
	l := New(f, Options{RegistryQPS: unpaced, Burst: 1000, Metrics: reg, Now: clock.Now})
	ctx := context.Background()
	hub := ref(t, "docker.io/library/nginx:1.27")
	hubOther := ref(t, "docker.io/library/redis:7")
	quay := ref(t, "quay.io/team/app:v1")
	resolve := func(r pins.Reference) error {
		_, err := l.Resolve(ctx, r, registryclient.Credentials{})
		return err
	}

	limited := &registryclient.Error{Op: "resolve", Ref: hub.String(), StatusCode: http.StatusTooManyRequests, RetryAfter: 30 * time.Second, Err: errors.New("HEAD ...: 429 Too Many Requests")}
	answer.Store("docker.io", limited)
	if err := resolve(hub); !errors.Is(err, limited) {
		t.Fatalf("the 429 itself: got %v, want it passed through", err)
	}
	calls := f.callCount()

	// Every repository of the registry is held back, without a request.
	clock.Add(10 * time.Second)
	err := resolve(hubOther)
	if f.callCount() != calls {
		t.Fatalf("a call was sent to docker.io during its Retry-After")
	}
	wait, ok := registryclient.RetryAfter(err)
	if !ok || wait != 20*time.Second {
		t.Fatalf("upstream.RetryAfter(%v) = %v, %v; want 20s, true", err, wait, ok)
	}
	var rl *RateLimitedError
	if !errors.As(err, &rl) || rl.Registry != "docker.io" {
		t.Fatalf("error %v does not wrap a RateLimitedError for docker.io", err)
	}
	wantMsg := "resolve docker.io/library/redis:7: registry docker.io is rate-limiting us until 2026-11-27T10:00:30Z"
	if !strings.HasPrefix(err.Error(), wantMsg) {
		t.Errorf("message %q, want it to start with %q", err, wantMsg)
	}
	if registryclient.IsNotFound(err) || registryclient.IsUnauthorized(err) {
		t.Errorf("a held-back call must read as rate-limited, not as %v", err)
	}
	_, err = l.Platforms(ctx, hub, registryclient.Descriptor{Digest: digest.FromString("x")}, registryclient.Credentials{})
	if _, ok := registryclient.RetryAfter(err); !ok || f.callCount() != calls {
		t.Fatalf("Platforms during Retry-After: %v (inner calls %d, want %d)", err, f.callCount(), calls)
	}

	// Other registries are not affected.
	if err := resolve(quay); err != nil {
		t.Fatalf("quay.io during docker.io's Retry-After: %v", err)
	}
	calls = f.callCount()

	// A shorter Retry-After does not cut a longer one short (here: a 503
	// from quay.io does not touch docker.io, and docker.io's stays).
	answer.Store("quay.io", &registryclient.Error{Op: "resolve", Ref: quay.String(), StatusCode: http.StatusServiceUnavailable, RetryAfter: time.Second, Err: errors.New("503")})
	if err := resolve(quay); err == nil {
		t.Fatal("want quay.io's 503")
	}
	clock.Add(2 * time.Second)
	if err := resolve(quay); err != nil {
		t.Fatalf("quay.io after its 1s Retry-After: %v", err)
	}
	if err := resolve(hub); err == nil {
		t.Fatal("docker.io served before its Retry-After passed")
	}

	// Once the wait is over, calls go through again.
	clock.Add(18 * time.Second) // 10:00:30
	calls = f.callCount()
	if err := resolve(hubOther); err != nil {
		t.Fatalf("docker.io after its Retry-After: %v", err)
	}
	if f.callCount() != calls+1 {
		t.Fatalf("inner calls = %d, want %d", f.callCount(), calls+1)
	}

	// A 429 without Retry-After is passed through and blocks nothing.
	answer.Store("docker.io", &registryclient.Error{Op: "resolve", Ref: hub.String(), StatusCode: http.StatusTooManyRequests, Err: errors.New("429")})
	if err := resolve(hub); err == nil {
		t.Fatal("want the 429")
	}
	if err := resolve(hub); err != nil {
		t.Fatalf("after a 429 without Retry-After: %v", err)
	}

	if got := testutil.ToFloat64(l.metrics.rateLimited.WithLabelValues("docker.io")); got != 1 {
		t.Errorf("tagger_upstream_rate_limited_total{registry=docker.io} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(l.metrics.rateLimited.WithLabelValues("quay.io")); got != 1 {
		t.Errorf("tagger_upstream_rate_limited_total{registry=quay.io} = %v, want 1", got)
	}
	if n, err := testutil.GatherAndCount(reg, "tagger_upstream_rate_limited_total", "tagger_upstream_requests_waiting"); err != nil || n == 0 {
		t.Errorf("metrics not registered with Options.Metrics: %d series, %v", n, err)
	}
}

func TestQueuedCallsSeeANewRetryAfter(t *testing.T) {
	f := newFake()
	gate := make(chan struct{})
	entered := make(chan struct{}, 1)
	var first sync.Once
	f.hold = func(pins.Reference) {
		first.Do(func() { entered <- struct{}{}; <-gate })
	}
	f.answer = func(pins.Reference) error {
		return &registryclient.Error{Op: "resolve", StatusCode: http.StatusTooManyRequests, RetryAfter: time.Minute, Err: errors.New("429")}
	}
	l := New(f, Options{RegistryQPS: unpaced, Burst: 1000})
	r := ref(t, "docker.io/library/nginx:1.27")

	firstErr := make(chan error, 1)
	go func() {
		_, err := l.Resolve(context.Background(), r, registryclient.Credentials{})
		firstErr <- err
	}()
	<-entered
	second := make(chan error, 1)
	go func() {
		_, err := l.Resolve(context.Background(), ref(t, "docker.io/library/nginx:1.28"), registryclient.Credentials{})
		second <- err
	}()
	waitFor(t, "the second call to queue for the repository", func() bool {
		return testutil.ToFloat64(l.metrics.waiting.WithLabelValues("docker.io")) == 1
	})
	close(gate)
	<-firstErr
	err := <-second
	var rl *RateLimitedError
	if !errors.As(err, &rl) {
		t.Fatalf("queued call got %v, want the registry's Retry-After", err)
	}
	if f.callCount() != 1 {
		t.Fatalf("inner calls = %d, want 1: the queued call must not be sent", f.callCount())
	}
}

func TestContextCancelledWhileWaiting(t *testing.T) {
	t.Run("for the repository's turn", func(t *testing.T) {
		f := newFake()
		gate := make(chan struct{})
		entered := make(chan struct{}, 1)
		f.hold = func(r pins.Reference) {
			if r.Tag == "hold" {
				entered <- struct{}{}
				<-gate
			}
		}
		l := New(f, Options{RegistryQPS: unpaced, Burst: 1000})
		holding := make(chan error, 1)
		go func() {
			_, err := l.Resolve(context.Background(), ref(t, "example.com/app:hold"), registryclient.Credentials{})
			holding <- err
		}()
		<-entered

		ctx, cancel := context.WithCancel(context.Background())
		waiting := make(chan error, 1)
		go func() {
			_, err := l.Resolve(ctx, ref(t, "example.com/app:v2"), registryclient.Credentials{})
			waiting <- err
		}()
		waitFor(t, "the call to queue", func() bool {
			return testutil.ToFloat64(l.metrics.waiting.WithLabelValues("example.com")) == 1
		})
		cancel()
		err := <-waiting
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled wait returned %v, want context.Canceled", err)
		}
		if !strings.Contains(err.Error(), "resolve example.com/app:v2: wait for a turn at example.com/app") {
			t.Errorf("message %q does not say what was waited for", err)
		}
		if got := testutil.ToFloat64(l.metrics.waiting.WithLabelValues("example.com")); got != 0 {
			t.Errorf("waiting gauge = %v after the wait was given up, want 0", got)
		}

		// The turn is handed on normally afterwards.
		close(gate)
		if err := <-holding; err != nil {
			t.Fatal(err)
		}
		if _, err := l.Resolve(context.Background(), ref(t, "example.com/app:v3"), registryclient.Credentials{}); err != nil {
			t.Fatal(err)
		}
		if f.callCount() != 2 {
			t.Errorf("inner calls = %d, want 2 (the cancelled call must not be sent)", f.callCount())
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		if len(l.repos) != 0 {
			t.Errorf("%d repository turns left behind", len(l.repos))
		}
	})

	t.Run("for the registry's rate", func(t *testing.T) {
		f := newFake()
		l := New(f, Options{RegistryQPS: 1e-4, Burst: 1})
		if _, err := l.Resolve(context.Background(), ref(t, "example.com/a:v1"), registryclient.Credentials{}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		waiting := make(chan error, 1)
		go func() {
			_, err := l.Resolve(ctx, ref(t, "example.com/b:v1"), registryclient.Credentials{})
			waiting <- err
		}()
		waitFor(t, "the call to wait for a token", func() bool {
			return testutil.ToFloat64(l.metrics.waiting.WithLabelValues("example.com")) == 1
		})
		cancel()
		if err := <-waiting; !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled wait returned %v, want context.Canceled", err)
		}

		// A deadline the rate cannot meet fails at once instead of waiting.
		dctx, dcancel := context.WithTimeout(context.Background(), time.Hour)
		defer dcancel()
		_, err := l.Resolve(dctx, ref(t, "example.com/c:v1"), registryclient.Credentials{})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("wait past the deadline returned %v, want context.DeadlineExceeded", err)
		}
		if f.callCount() != 1 {
			t.Errorf("inner calls = %d, want 1", f.callCount())
		}
	})

	t.Run("already cancelled", func(t *testing.T) {
		f := newFake()
		l := New(f, Options{})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := l.Resolve(ctx, ref(t, "example.com/a:v1"), registryclient.Credentials{}); !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
		if f.callCount() != 0 {
			t.Errorf("inner calls = %d, want 0", f.callCount())
		}
	})
}

func TestDefaults(t *testing.T) {
	l := New(newFake(), Options{})
	if l.qps != DefaultRegistryQPS || l.burst != DefaultRegistryQPS {
		t.Errorf("defaults: qps %v burst %d, want %v and %v", l.qps, l.burst, DefaultRegistryQPS, DefaultRegistryQPS)
	}
	l = New(newFake(), Options{RegistryQPS: 2.5})
	if l.burst != 3 {
		t.Errorf("burst for 2.5/s = %d, want 3", l.burst)
	}
	// Limiters sharing a Registerer share the metrics instead of panicking.
	reg := prometheus.NewRegistry()
	a := New(newFake(), Options{Metrics: reg})
	b := New(newFake(), Options{Metrics: reg})
	if a.metrics.waiting != b.metrics.waiting {
		t.Error("second Limiter on the same Registerer did not reuse the registered gauge")
	}
}
