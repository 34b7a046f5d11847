package node

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/pkg/node/readyfile"
	"github.com/tagger-project/tagger/pkg/pins"
)

// How the agent hands a node over to the next agent without a moment in
// which containerd gets an unpinned answer (docs/design.md, "Node agent
// lifecycle"):
//
//   - A stopped agent leaves its hosts.toml files in place; the next one takes
//     them over (hoststoml rewrites only what changed).
//   - The chart rolls the DaemonSet with maxSurge 1, maxUnavailable 0: the new
//     pod starts next to the old one. Both bind the mirror (and metrics and
//     health) ports with SO_REUSEPORT, so both serve at once.
//   - The new agent binds its mirror only after its Tag cache synced and its
//     pin table holds every pin, so whichever agent the kernel hands a
//     connection to answers with the same pins.
//   - Readiness is per process: the agent writes ReadyFile in its own
//     container and the kubelet runs `node-agent ready-check` (exec); a TCP
//     probe could be answered by the other pod through the shared port.
//   - The old agent, told to stop, reports not ready, stops writing
//     hosts.toml, keeps serving for ShutdownDelay, then closes its listener.
//     Linux resets the connections still queued on a closing SO_REUSEPORT
//     listener unless net.ipv4.tcp_migrate_req=1 (per network namespace: the
//     node's, as the agent runs with hostNetwork), which migrates them to the
//     other listener. The node sets it (docs/install.md); the agent reports it.

// loadPins rebuilds the pin table from the cached Tags and stores it.
func (a *Agent) loadPins(ctx context.Context) (*pins.Snapshot, bool) {
	var list v1alpha1.TagList
	if err := a.cache.List(ctx, &list); err != nil {
		a.log.WithError(err).Warn("list Tags from cache")
		return nil, false
	}
	snap := pins.BuildSnapshot(list.Items)
	a.table.Store(snap)
	a.pinsGauge.Set(float64(snap.Len()))
	return snap, true
}

// serveMirror binds the mirror's listener, unless New did (an ephemeral
// port), and serves it; errors of the server arrive on errc.
func (a *Agent) serveMirror(errc chan<- error) error {
	if a.mirrorLn == nil {
		ln, err := listenShared(a.o.Listen)
		if err != nil {
			return fmt.Errorf("mirror listen on %s: %w", a.o.Listen, err)
		}
		a.mirrorLn = ln
	}
	a.conns = &connTracker{conns: map[net.Conn]http.ConnState{}}
	a.mirrorSrv.ConnState = a.conns.track
	a.serving.Store(true)
	go func() {
		if err := serve(a.mirrorSrv, a.mirrorLn, "mirror"); err != nil && !a.draining.Load() {
			errc <- err
		}
	}()
	on, err := migrateReq()
	log := a.log.WithField("listen", a.mirrorLn.Addr().String())
	switch {
	case err != nil:
		log.WithError(err).Warn("cannot tell whether net.ipv4.tcp_migrate_req is set")
	case !on:
		log.Warn("net.ipv4.tcp_migrate_req is 0 on this node: when this agent stops during an upgrade, connections queued on its listener are reset instead of moving to the next agent (containerd then falls back upstream for that pull); see docs/install.md")
	}
	return nil
}

// reportReady writes the readiness file every few seconds (its mtime is
// the liveness signal) until ctx ends.
func (a *Agent) reportReady(ctx context.Context) {
	if a.o.ReadyFile == "" {
		return
	}
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		if a.draining.Load() {
			return
		}
		if err := readyfile.Set(a.o.ReadyFile, a.NotReady()); err != nil {
			a.log.WithError(err).Warn("write ready file")
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// drain runs when the agent is told to stop: not ready at once, no more
// hosts.toml writes (the caller's loop has ended), the mirror keeps serving
// for ShutdownDelay.
func (a *Agent) drain() {
	a.draining.Store(true)
	if a.o.ReadyFile != "" {
		if err := readyfile.Clear(a.o.ReadyFile); err != nil {
			a.log.WithError(err).Warn("clear ready file")
		}
	}
	a.log.WithField("delay", a.o.ShutdownDelay).Info("stopping: hosts.toml stays for the next agent; the mirror serves until the delay ends")
	time.Sleep(a.o.ShutdownDelay)
}

// shutdown closes the listeners and waits (at most 5s) for requests in flight.
func (a *Agent) shutdown() {
	a.draining.Store(true)
	if a.serving.Load() {
		a.closeMirror(5 * time.Second)
	}
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	for _, s := range a.servers {
		_ = s.srv.Shutdown(sctx)
	}
}

// closeMirror stops the mirror without dropping a request. http.Server's
// Shutdown would not do: a connection it accepted whose request it reads
// after Shutdown began is closed unanswered, and containerd would take that
// error to the next host, the upstream. Instead: responses stop offering
// keep-alive, the listener closes (the kernel moves connections still queued
// on it to the next agent's listener, given tcp_migrate_req), and every
// connection already accepted gets its answer before the server closes.
func (a *Agent) closeMirror(timeout time.Duration) {
	a.mirrorSrv.SetKeepAlivesEnabled(false)
	_ = a.mirrorLn.Close()
	deadline := time.Now().Add(timeout)
	for a.conns.busy() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := a.conns.busy(); n > 0 {
		a.log.WithField("connections", n).Warn("closing the mirror with requests unanswered")
	}
	_ = a.mirrorSrv.Close()
}

// connTracker counts the mirror's connections that have a request to answer.
type connTracker struct {
	mu    sync.Mutex
	conns map[net.Conn]http.ConnState
}

func (c *connTracker) track(conn net.Conn, st http.ConnState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch st {
	case http.StateNew, http.StateActive:
		c.conns[conn] = st
	default: // idle (nothing owed), hijacked or closed
		delete(c.conns, conn)
	}
}

func (c *connTracker) busy() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.conns)
}
