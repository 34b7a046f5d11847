// Package ratelimit keeps the controller's upstream checks friendly as the
// number of Tags grows. It wraps the upstream Resolver so that
//
//   - at most one call is in flight per upstream repository (registry +
//     repository): the Tags app:v1 and app:v2 take turns;
//   - each registry is held to a token-bucket request rate;
//   - a registry that answered 429 or 503 with Retry-After is not called
//     again until then: calls fail at once with an error that carries the
//     remaining wait, so the reconciler records a RateLimited failure, keeps
//     the pin and backs off.
//
// Waits honour the caller's context. Registries that are not rate-limiting
// are never slowed by one that is.
package ratelimit

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/tagger-project/tagger/pkg/pins"
	"github.com/tagger-project/tagger/pkg/registryclient"
)

// Resolver is the upstream seam the Tag reconciler uses
// (tagcontroller.Resolver, restated here so this package does not import
// the controller): a HEAD resolve of a tag, and the platforms of a digest.
type Resolver interface {
	Resolve(ctx context.Context, ref pins.Reference, creds registryclient.Credentials) (registryclient.Descriptor, error)
	Platforms(ctx context.Context, ref pins.Reference, d registryclient.Descriptor, creds registryclient.Credentials) ([]string, error)
}

// DefaultRegistryQPS is the request rate per registry when Options leave it unset.
const DefaultRegistryQPS = 10

// Options configure a Limiter. The zero value is usable.
type Options struct {
	// RegistryQPS is the sustained rate of upstream requests allowed per
	// registry host (as in the reference: "docker.io", "quay.io");
	// <= 0 means DefaultRegistryQPS.
	RegistryQPS float64
	// Burst is how many requests a registry may get at once after a quiet
	// spell; <= 0 means one second's worth, ceil(RegistryQPS).
	Burst int
	// Metrics registers the limiter's metrics; nil registers none.
	// Limiters sharing a Registerer share the metrics.
	Metrics prometheus.Registerer
	// Now is the clock for Retry-After deadlines and token accounting;
	// default time.Now. Waits themselves use real timers.
	Now func() time.Time
}

// Limiter is a Resolver that orders, paces and, when a registry asks for
// it, holds back the calls of the Resolver it wraps. It is safe for
// concurrent use.
type Limiter struct {
	inner   Resolver
	qps     rate.Limit
	burst   int
	now     func() time.Time
	metrics *metrics

	mu         sync.Mutex
	repos      map[string]*repoSlot // registry/repository -> turn; removed when unused
	registries map[string]*registry // registry host -> bucket and block
}

// repoSlot is a repository's turn: a one-place semaphore, and how many
// calls hold or wait for it so the map entry can go when none do.
type repoSlot struct {
	turn  chan struct{}
	users int
}

type registry struct {
	bucket *rate.Limiter
	// blockedUntil is the end of the registry's latest Retry-After
	// (zero: not blocked), set from the answer that asked for it.
	blockedUntil time.Time
}

var _ Resolver = (*Limiter)(nil)

// New returns a Limiter in front of inner.
func New(inner Resolver, o Options) *Limiter {
	qps := o.RegistryQPS
	if qps <= 0 || math.IsNaN(qps) {
		qps = DefaultRegistryQPS
	}
	burst := o.Burst
	if burst <= 0 {
		burst = int(math.Min(math.Ceil(qps), math.MaxInt32))
	}
	now := o.Now
	if now == nil {
		now = time.Now
	}
	return &Limiter{
		inner:      inner,
		qps:        rate.Limit(qps),
		burst:      burst,
		now:        now,
		metrics:    newMetrics(o.Metrics),
		repos:      map[string]*repoSlot{},
		registries: map[string]*registry{},
	}
}

// Resolve resolves ref's tag through the wrapped Resolver when it is the
// repository's turn and the registry's rate allows it. It costs one request:
// the HEAD (the rare GET fallback of a registry that omits the digest
// header is not charged).
func (l *Limiter) Resolve(ctx context.Context, ref pins.Reference, creds registryclient.Credentials) (registryclient.Descriptor, error) {
	var d registryclient.Descriptor
	err := l.do(ctx, "resolve", ref.String(), ref, 1, func(ctx context.Context) error {
		var err error
		d, err = l.inner.Resolve(ctx, ref, creds)
		return err
	})
	return d, err
}

// Platforms reads the platforms of d through the wrapped Resolver, in turn
// and paced like Resolve. An index costs one request (the manifest); an
// image manifest two (the manifest and its config).
func (l *Limiter) Platforms(ctx context.Context, ref pins.Reference, d registryclient.Descriptor, creds registryclient.Credentials) ([]string, error) {
	cost := 2
	switch d.MediaType {
	case registryclient.MediaTypeOCIIndex, registryclient.MediaTypeDockerManifestList:
		cost = 1
	}
	var out []string
	err := l.do(ctx, "platforms", ref.Name()+"@"+d.Digest.String(), ref, cost, func(ctx context.Context) error {
		var err error
		out, err = l.inner.Platforms(ctx, ref, d, creds)
		return err
	})
	return out, err
}

// do runs call when it is ref's repository's turn and cost tokens of its
// registry's bucket are available, unless the registry asked us to wait.
// op and name only label errors.
func (l *Limiter) do(ctx context.Context, op, name string, ref pins.Reference, cost int, call func(context.Context) error) error {
	reg := l.registry(ref.Registry)
	if err := l.blocked(op, name, ref.Registry, reg); err != nil {
		return err
	}

	waiting := l.metrics.waiting.WithLabelValues(ref.Registry)
	waiting.Inc()
	release, err := l.takeTurn(ctx, ref.Name())
	if err == nil {
		if err = l.waitTokens(ctx, reg.bucket, cost); err != nil {
			release()
		}
	}
	waiting.Dec()
	if err != nil {
		return &registryclient.Error{Op: op, Ref: name, Err: fmt.Errorf("wait for a turn at %s: %w", ref.Name(), err)}
	}
	defer release()

	// The registry may have asked for a pause while we queued.
	if err := l.blocked(op, name, ref.Registry, reg); err != nil {
		return err
	}
	err = call(ctx)
	if wait, ok := registryclient.RetryAfter(err); ok {
		l.block(ref.Registry, reg, wait)
	}
	return err
}

// registry returns the state of a registry host, creating it on first use.
// Entries are kept: there are as few as there are registries in use.
func (l *Limiter) registry(host string) *registry {
	l.mu.Lock()
	defer l.mu.Unlock()
	r, ok := l.registries[host]
	if !ok {
		r = &registry{bucket: rate.NewLimiter(l.qps, l.burst)}
		l.registries[host] = r
	}
	return r
}

// blocked returns the error for a call not sent because the registry's
// Retry-After has not passed, or nil.
func (l *Limiter) blocked(op, name, host string, r *registry) error {
	now := l.now()
	l.mu.Lock()
	until := r.blockedUntil
	l.mu.Unlock()
	if !until.After(now) {
		return nil
	}
	return &registryclient.Error{Op: op, Ref: name, RetryAfter: until.Sub(now), Err: &RateLimitedError{Registry: host, Until: until}}
}

// block holds the registry back for wait from now, unless an earlier
// answer already holds it back longer.
func (l *Limiter) block(host string, r *registry, wait time.Duration) {
	until := l.now().Add(wait)
	l.mu.Lock()
	if until.After(r.blockedUntil) {
		r.blockedUntil = until
	}
	l.mu.Unlock()
	l.metrics.rateLimited.WithLabelValues(host).Inc()
}

// takeTurn waits until no other call is in flight for the repository and
// returns the function that ends this call's turn.
func (l *Limiter) takeTurn(ctx context.Context, repo string) (release func(), err error) {
	l.mu.Lock()
	s, ok := l.repos[repo]
	if !ok {
		s = &repoSlot{turn: make(chan struct{}, 1)}
		l.repos[repo] = s
	}
	s.users++
	l.mu.Unlock()

	done := func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if s.users--; s.users == 0 {
			delete(l.repos, repo)
		}
	}
	// An expired context loses even when a turn is free at the same time.
	if err := ctx.Err(); err != nil {
		done()
		return nil, err
	}
	select {
	case s.turn <- struct{}{}:
		return func() { <-s.turn; done() }, nil
	case <-ctx.Done():
		done()
		return nil, ctx.Err()
	}
}

// waitTokens takes n tokens from the bucket, waiting for them as long as
// ctx allows; a wait given up returns its tokens.
func (l *Limiter) waitTokens(ctx context.Context, bucket *rate.Limiter, n int) error {
	now := l.now()
	var (
		rs    []*rate.Reservation
		delay time.Duration
	)
	cancel := func() {
		at := l.now()
		for i := len(rs) - 1; i >= 0; i-- {
			rs[i].CancelAt(at)
		}
	}
	// One token at a time, so a cost above the burst still fits.
	for range n {
		r := bucket.ReserveN(now, 1)
		if !r.OK() {
			cancel()
			return fmt.Errorf("registry rate limiter refused a reservation (burst %d)", bucket.Burst())
		}
		rs = append(rs, r)
		delay = max(delay, r.DelayFrom(now))
	}
	if delay <= 0 {
		return nil
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < delay {
		cancel()
		return fmt.Errorf("registry rate allows the next request in %v, after the deadline: %w", delay.Round(time.Millisecond), context.DeadlineExceeded)
	}
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		cancel()
		return ctx.Err()
	}
}
