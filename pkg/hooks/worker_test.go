package hooks

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
)

// TestCoalescing: 50 deliveries for one Tag inside the window are one patch;
// a delivery after the flush is a new one.
func TestCoalescing(t *testing.T) {
	var patches atomic.Int32
	funcs := interceptor.Funcs{Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, p client.Patch, opts ...client.PatchOption) error {
		patches.Add(1)
		return c.Patch(ctx, obj, p, opts...)
	}}
	window := time.Second
	r := newRig(t, rigOptions{tags: defaultTags(), interceptor: &funcs, opts: Options{Coalesce: window}})
	reqs := goodRequests()
	start := time.Now()
	var wg sync.WaitGroup
	for i := range 50 {
		// Docker Hub and generic alternate: both name Tags, only "nginx" and
		// "tool" are involved, each coalesced on its own.
		req := reqs[ProviderDockerHub]
		if i%2 == 1 {
			req = reqs[ProviderGeneric]
		}
		wg.Go(func() {
			if resp := r.do(req); resp.status != http.StatusAccepted {
				t.Errorf("delivery %d: %d %s", i, resp.status, resp.raw)
			}
		})
	}
	wg.Wait()
	if sent := time.Since(start); sent > window {
		t.Fatalf("50 deliveries took %v, longer than the %v window: coalescing cannot be told apart", sent, window)
	}
	got := map[string]int{}
	for range 2 {
		got[r.waitCheck(5*time.Second).Tag]++
	}
	time.Sleep(window)
	if n := patches.Load(); n != 2 || got["nginx"] != 1 || got["tool"] != 1 || r.checkCount() != 2 {
		t.Fatalf("%d patches, checks %v, want one each for nginx and tool", n, got)
	}
	if waited := time.Since(start); waited < window {
		t.Fatalf("flushed after %v, before the %v window", waited, window)
	}

	// After the flush a new delivery is a new check with a new value.
	first := r.tag("nginx").Annotations[v1alpha1.CheckAnnotation]
	r.do(reqs[ProviderDockerHub])
	cr := r.waitCheck(5 * time.Second)
	if cr.Tag != "nginx" || cr.Value == first {
		t.Fatalf("second check %+v, previous value %q", cr, first)
	}
	if n := patches.Load(); n != 3 {
		t.Fatalf("%d patches, want 3", n)
	}
}

// TestPatchRetried: a failing patch is retried with backoff and counted.
func TestPatchRetried(t *testing.T) {
	var calls atomic.Int32
	funcs := interceptor.Funcs{Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, p client.Patch, opts ...client.PatchOption) error {
		if calls.Add(1) <= 2 {
			return errors.New("apiserver unavailable")
		}
		return c.Patch(ctx, obj, p, opts...)
	}}
	r := newRig(t, rigOptions{tags: defaultTags(), interceptor: &funcs, opts: Options{Coalesce: 10 * time.Millisecond}})
	if resp := r.do(goodRequests()[ProviderGeneric]); resp.status != http.StatusAccepted {
		t.Fatalf("%d %s", resp.status, resp.raw)
	}
	cr := r.waitCheck(5 * time.Second)
	if cr.Tag != "tool" || calls.Load() != 3 {
		t.Fatalf("check %+v after %d patch calls, want tool after 3", cr, calls.Load())
	}
	if n := testutil.ToFloat64(r.srv.metrics.checks.WithLabelValues(ProviderGeneric, patchError)); n != 2 {
		t.Fatalf("error count %v, want 2", n)
	}
}

// TestPatchGivesUp: a patch that keeps failing is dropped after
// maxPatchAttempts; the queue does not grow.
func TestPatchGivesUp(t *testing.T) {
	var calls atomic.Int32
	funcs := interceptor.Funcs{Patch: func(context.Context, client.WithWatch, client.Object, client.Patch, ...client.PatchOption) error {
		calls.Add(1)
		return errors.New("forbidden")
	}}
	r := newRig(t, rigOptions{tags: defaultTags(), interceptor: &funcs, opts: Options{Coalesce: time.Millisecond}})
	r.do(goodRequests()[ProviderGeneric])
	deadline := time.Now().Add(10 * time.Second)
	for calls.Load() < maxPatchAttempts && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	if n := calls.Load(); n != maxPatchAttempts || r.srv.queue.len() != 0 {
		t.Fatalf("%d patch calls, %d pending; want %d and 0", n, r.srv.queue.len(), maxPatchAttempts)
	}
}

// TestTagDeletedBeforeFlush: the check of a Tag deleted between the
// notification and the patch is dropped quietly.
func TestTagDeletedBeforeFlush(t *testing.T) {
	r := newRig(t, rigOptions{tags: defaultTags(), noRun: true, opts: Options{Coalesce: 200 * time.Millisecond}})
	r.do(goodRequests()[ProviderGeneric])
	if err := r.c.Delete(context.Background(), r.tag("tool")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.srv.Run(ctx) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(5 * time.Second)
	gone := r.srv.metrics.checks.WithLabelValues(ProviderGeneric, patchGone)
	for testutil.ToFloat64(gone) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("deleted Tag's check not dropped")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := r.checkCount(); n != 0 {
		t.Fatalf("%d checks requested", n)
	}
}

// TestDrainOnShutdown: checks accepted but still in their window are
// requested when Run stops, not lost.
func TestDrainOnShutdown(t *testing.T) {
	r := newRig(t, rigOptions{tags: defaultTags(), noRun: true, opts: Options{Coalesce: time.Hour}})
	stop := r.run()
	r.do(goodRequests()[ProviderQuay])
	stop()
	if n := r.checkCount(); n != 1 || r.checks[0].Tag != "api" {
		t.Fatalf("checks %+v, want one for api", r.checks)
	}
}

// TestRunOnce: a second concurrent Run is refused.
func TestRunOnce(t *testing.T) {
	r := newRig(t, rigOptions{})
	deadline := time.Now().Add(5 * time.Second)
	for !r.srv.running.Load() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if err := r.srv.Run(context.Background()); err == nil {
		t.Fatal("second Run succeeded")
	}
}

func TestQueue(t *testing.T) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})
	q := newQueue(time.Second, g)
	t0 := time.Unix(1000, 0)
	// Leading edge: the first notification is due at once.
	q.add([]string{"a", "b"}, "quay", "p1", t0)
	q.add([]string{"a", "c"}, "generic", "p2", t0) // a joins its pending check
	due, _ := q.takeDue(t0, false)
	if len(due) != 3 || due[0].tag != "a" || due[0].provider != "quay" {
		t.Fatalf("leading edge: due %+v", due)
	}
	// The same payload again within the window (a redelivery, a burst of
	// copies) costs nothing more.
	for i := 1; i < 50; i++ {
		q.add([]string{"a"}, "quay", "p1", t0.Add(time.Duration(i)*10*time.Millisecond))
	}
	if q.len() != 0 {
		t.Fatalf("duplicates queued %d checks", q.len())
	}
	// Another payload within the window waits for its end: one trailing check.
	q.add([]string{"a"}, "quay", "p3", t0.Add(200*time.Millisecond))
	q.add([]string{"a"}, "quay", "p4", t0.Add(300*time.Millisecond))
	if due, next := q.takeDue(t0.Add(999*time.Millisecond), false); len(due) != 0 || !next.Equal(t0.Add(time.Second)) {
		t.Fatalf("early: %d due, next %v", len(due), next)
	}
	if due, _ := q.takeDue(t0.Add(time.Second), false); len(due) != 1 || due[0].payload != "p3" {
		t.Fatalf("trailing: due %+v", due)
	}
	if v := testutil.ToFloat64(g); v != 0 {
		t.Fatalf("pending gauge %v, want 0", v)
	}
	// After a quiet window a notification is due at once again.
	q.add([]string{"a"}, "quay", "p3", t0.Add(2500*time.Millisecond))
	if due, _ := q.takeDue(t0.Add(2500*time.Millisecond), false); len(due) != 1 {
		t.Fatalf("after the window: due %+v", due)
	}
	// A retry does not displace a newer pending check.
	q.add([]string{"b"}, "harbor", "p5", t0.Add(5*time.Second))
	q.retry(&item{tag: "b", provider: "quay"}, t0)
	all, _ := q.takeDue(time.Time{}, true)
	if len(all) != 1 || all[0].provider != "harbor" {
		t.Fatalf("retry replaced the newer check: %+v", all)
	}
}

func TestNextNanoIncreases(t *testing.T) {
	s := &Server{}
	prev := s.nextNano()
	for range 1000 {
		n := s.nextNano()
		if n <= prev {
			t.Fatalf("%d after %d", n, prev)
		}
		prev = n
	}
}
