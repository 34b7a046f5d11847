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
	log     logrus.FieldLogger
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
		log: log,
	}
	reg.MustRegister(g.cleared)
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
	for {
		if _, err := g.remover.Remove(ctx); err == nil {
			g.cleared.Set(1)
			return
		} else if ctx.Err() == nil {
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
