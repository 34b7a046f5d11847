package repull

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/tagger-project/tagger/pkg/pins"
)

// Options configure a Converger.
type Options struct {
	Images ImageService
	// Workers bounds the pulls in flight at once (default 2).
	Workers int
	// MinBackoff and MaxBackoff bound the retry delay of a failed convergence
	// (defaults 2s and 5m).
	MinBackoff, MaxBackoff time.Duration
	// PullTimeout bounds one pull (default 10m).
	PullTimeout time.Duration
	Metrics     *Metrics
	Log         logrus.FieldLogger
}

// Metrics of the converger.
type Metrics struct {
	pending prometheus.Gauge
	total   *prometheus.CounterVec
}

// NewMetrics registers the converger's metrics.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tagger_image_convergence_pending",
			Help: "Pinned tags whose local image record on this node does not yet point at the served digest.",
		}),
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tagger_image_convergence_total",
			Help: "Convergence attempts by result (converged, already, absent, error).",
		}, []string{"result"}),
	}
	reg.MustRegister(m.pending, m.total)
	return m
}

// Converger keeps the node's local records of pinned tags at the served digests.
type Converger struct {
	o       Options
	mu      sync.Mutex
	want    map[string]string // ref -> served digest
	done    map[string]string // ref -> digest last converged or found absent
	queue   chan string
	queued  map[string]bool
	attempt map[string]int
}

// NewConverger returns a converger; call Run to start its workers.
func NewConverger(o Options) *Converger {
	if o.Workers < 1 {
		o.Workers = 2
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 2 * time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 5 * time.Minute
	}
	if o.PullTimeout <= 0 {
		o.PullTimeout = 10 * time.Minute
	}
	if o.Log == nil {
		o.Log = logrus.StandardLogger()
	}
	return &Converger{
		o: o, want: map[string]string{}, done: map[string]string{},
		queue: make(chan string, 1024), queued: map[string]bool{}, attempt: map[string]int{},
	}
}

// Update takes the current pins. Refs whose served digest changed since the
// last update are queued; refs no longer pinned are forgotten. The first
// update also checks every pin, so a node agent restart converges too.
func (c *Converger) Update(ps []pins.Pin) {
	c.mu.Lock()
	defer c.mu.Unlock()
	next := make(map[string]string, len(ps))
	for _, p := range ps {
		next[p.Ref.String()] = p.Digest
	}
	for ref := range c.want {
		if _, ok := next[ref]; !ok {
			delete(c.done, ref)
			delete(c.attempt, ref)
		}
	}
	c.want = next
	for ref, d := range next {
		if c.done[ref] != d {
			c.enqueueLocked(ref)
		}
	}
	c.setPendingLocked()
}

func (c *Converger) enqueueLocked(ref string) {
	if c.queued[ref] {
		return
	}
	select {
	case c.queue <- ref:
		c.queued[ref] = true
	default:
		// Queue full: a later Update or retry brings it back.
	}
}

func (c *Converger) setPendingLocked() {
	if c.o.Metrics == nil {
		return
	}
	n := 0
	for ref, d := range c.want {
		if c.done[ref] != d {
			n++
		}
	}
	c.o.Metrics.pending.Set(float64(n))
}

// Run runs the workers until ctx is done.
func (c *Converger) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for range c.o.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case ref := <-c.queue:
					c.process(ctx, ref)
				}
			}
		}()
	}
	wg.Wait()
}

// Pending returns the refs not yet converged (for readiness detail and tests).
func (c *Converger) Pending() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for ref, d := range c.want {
		if c.done[ref] != d {
			out = append(out, ref)
		}
	}
	return out
}

func (c *Converger) process(ctx context.Context, ref string) {
	c.mu.Lock()
	delete(c.queued, ref)
	want, ok := c.want[ref]
	c.mu.Unlock()
	if !ok {
		return
	}
	result, err := c.converge(ctx, ref, want)
	c.count(result)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.want[ref] != want {
		return // the pin moved meanwhile; Update queued it again
	}
	if err == nil {
		c.done[ref] = want
		delete(c.attempt, ref)
		c.setPendingLocked()
		return
	}
	c.attempt[ref]++
	wait := c.backoff(c.attempt[ref])
	c.o.Log.WithError(err).WithFields(logrus.Fields{"image": ref, "digest": want, "retryIn": wait}).Warn("local image record not converged")
	time.AfterFunc(wait, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.want[ref] == want && c.done[ref] != want && ctx.Err() == nil {
			c.enqueueLocked(ref)
		}
	})
}

func (c *Converger) backoff(attempt int) time.Duration {
	d := c.o.MinBackoff
	for i := 1; i < attempt && d < c.o.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, c.o.MaxBackoff)
}

// converge re-pulls ref when the node has it recorded at another digest.
// A node without the image needs nothing: its first pull goes through the mirror.
func (c *Converger) converge(ctx context.Context, ref, want string) (string, error) {
	digests, present, err := c.o.Images.RepoDigests(ctx, ref)
	if err != nil {
		return "error", err
	}
	if !present {
		return "absent", nil
	}
	if hasDigest(digests, want) {
		return "already", nil
	}
	pctx, cancel := context.WithTimeout(ctx, c.o.PullTimeout)
	defer cancel()
	if err := c.o.Images.Pull(pctx, ref); err != nil {
		return "error", err
	}
	// Verify: the pull must have landed the pinned digest (it would not if
	// the mirror was bypassed).
	digests, _, err = c.o.Images.RepoDigests(ctx, ref)
	if err != nil {
		return "error", err
	}
	if !hasDigest(digests, want) {
		return "error", &mismatchError{ref: ref, want: want, got: digests}
	}
	c.o.Log.WithFields(logrus.Fields{"image": ref, "digest": want}).Info("local image record converged to the served digest")
	return "converged", nil
}

func (c *Converger) count(result string) {
	if c.o.Metrics != nil {
		c.o.Metrics.total.WithLabelValues(result).Inc()
	}
}

type mismatchError struct {
	ref, want string
	got       []string
}

func (e *mismatchError) Error() string {
	return "pull of " + e.ref + " recorded " + strings.Join(e.got, ",") + ", not the served " + e.want + " (is containerd reading the node agent's hosts.toml?)"
}

func hasDigest(repoDigests []string, want string) bool {
	for _, rd := range repoDigests {
		if i := strings.LastIndexByte(rd, '@'); i >= 0 && rd[i+1:] == want {
			return true
		}
	}
	return false
}
