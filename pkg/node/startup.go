package node

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"

	"github.com/tagger-project/tagger/pkg/node/startuptaint"
)

// startupGate removes the node's startup taint once the agent is ready:
// pods may be scheduled on the node only when a pull of a pinned tag there
// gets the pin.
type startupGate struct {
	remover *startuptaint.Remover
	ready   chan struct{} // closed by the first ready rebuild
	cleared prometheus.Gauge
	// probeFailed counts live proofs that failed: containerd did not ask
	// the mirror for the probe image.
	probeFailed prometheus.Counter
	log         logrus.FieldLogger
	// confirm, when set, must pass before the taint goes: the live proof
	// that containerd reads the hosts dir.
	confirm func(context.Context) error
	// finished, when set, runs once the node has no startup taint.
	finished func()
}

func newStartupGate(cfg *rest.Config, o Options, reg prometheus.Registerer, log logrus.FieldLogger) (*startupGate, error) {
	if o.StartupTaint == "" {
		return nil, nil
	}
	if o.NodeName == "" {
		return nil, fmt.Errorf("startup taint %s: the node name is not set (--node-name or NODE_NAME)", o.StartupTaint)
	}
	core, err := corev1client.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("node client: %w", err)
	}
	g := &startupGate{
		remover: &startuptaint.Remover{Nodes: core.Nodes(), Node: o.NodeName, Key: o.StartupTaint, Log: log},
		ready:   make(chan struct{}),
		cleared: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tagger_startup_taint_cleared",
			Help: "1 once this node has no startup taint (the agent removed it, or it was never there), else 0."}),
		probeFailed: prometheus.NewCounter(prometheus.CounterOpts{Name: "tagger_startup_probe_failures_total",
			Help: "Startup probes in which containerd did not ask this agent's mirror for the probe image: it does not read the agent's hosts.toml files."}),
		log: log,
	}
	reg.MustRegister(g.cleared, g.probeFailed)
	return g, nil
}

// markReady opens the gate; later calls do nothing.
func (g *startupGate) markReady() {
	select {
	case <-g.ready:
	default:
		close(g.ready)
	}
}

// run waits for the agent to be ready, then removes the taint, retrying
// with a capped backoff until it is gone or ctx ends: the node stays closed
// to pods until then, which is the point.
func (g *startupGate) run(ctx context.Context) {
	select {
	case <-ctx.Done():
		return
	case <-g.ready:
	}
	delay := time.Second
	confirmed := g.confirm == nil
	for {
		err := g.step(ctx, &confirmed)
		if err == nil {
			g.cleared.Set(1)
			if g.finished != nil {
				g.finished()
			}
			return
		}
		if ctx.Err() == nil {
			g.log.WithError(err).WithField("retryIn", delay).Error("startup taint not removed: no pod is scheduled on this node until it is")
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, 30*time.Second)
	}
}

// step confirms containerd reads the hosts dir (once), then removes the
// taint. A node without the taint needs neither.
func (g *startupGate) step(ctx context.Context, confirmed *bool) error {
	if !*confirmed {
		present, err := g.remover.Present(ctx)
		if err != nil {
			return err
		}
		if !present {
			g.log.WithField("taint", g.remover.Key).Info("node has no startup taint")
			return nil
		}
		if err := g.confirm(ctx); err != nil {
			if ctx.Err() == nil {
				g.probeFailed.Inc()
			}
			return err
		}
		*confirmed = true
		g.log.Info("containerd asked the mirror for the probe image: it reads our hosts.toml files")
	}
	_, err := g.remover.Remove(ctx)
	return err
}

// confirmHostsRead is the startup gate's live proof: containerd, asked
// through the CRI to pull an image only our hosts.toml can route, asks the
// mirror for it.
func (a *Agent) confirmHostsRead(ctx context.Context) error {
	return a.probe.Check(ctx, a.cri, 20*time.Second)
}
