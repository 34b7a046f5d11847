// Package registryprobe tells whether the bundled registry answers: a
// GET /v2/ on a timer, exported as the tagger_bundled_registry_up gauge so
// an alert names an unreachable registry before copies and node agents
// start failing on it.
package registryprobe

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Probe checks the bundled registry every Interval. It runs on every
// controller replica, leader or not (NeedLeaderElection is false), so a
// standby replica reports too.
type Probe struct {
	// URL is the registry's base URL (http://host:port).
	URL string
	// Client makes the requests; its Timeout bounds one probe.
	Client *http.Client
	// Interval between probes; 30s when zero.
	Interval time.Duration
	Log      logrus.FieldLogger

	up prometheus.Gauge
}

// upGauge is registered once per process (tests run several controllers in
// one), on controller-runtime's registry like the other controller metrics.
var upGauge = prometheus.NewGauge(prometheus.GaugeOpts{
	Name: "tagger_bundled_registry_up",
	Help: "1 when the bundled registry answered the controller's last GET /v2/ (any status below 500, 401 included), else 0.",
})

func init() { metrics.Registry.MustRegister(upGauge) }

// New returns a probe of the registry at url.
func New(url string, log logrus.FieldLogger) *Probe {
	return newProbe(url, log, upGauge)
}

func newProbe(url string, log logrus.FieldLogger, up prometheus.Gauge) *Probe {
	return &Probe{
		URL:    strings.TrimRight(url, "/"),
		Client: &http.Client{Timeout: 5 * time.Second},
		Log:    log,
		up:     up,
	}
}

// NeedLeaderElection is false: every replica probes.
func (p *Probe) NeedLeaderElection() bool { return false }

// Start probes until ctx is done.
func (p *Probe) Start(ctx context.Context) error {
	interval := p.Interval
	if interval <= 0 {
		interval = 30 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	wasUp := true
	for {
		err := p.Once(ctx)
		if err != nil && wasUp && ctx.Err() == nil {
			p.Log.WithError(err).Warn("bundled registry unreachable")
		} else if err == nil && !wasUp {
			p.Log.WithField("registry", p.URL).Info("bundled registry reachable again")
		}
		wasUp = err == nil
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Once probes the registry one time and sets the gauge.
func (p *Probe) Once(ctx context.Context) error {
	err := p.get(ctx)
	if err != nil {
		p.up.Set(0)
		return err
	}
	p.up.Set(1)
	return nil
}

func (p *Probe) get(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+"/v2/", nil)
	if err != nil {
		return fmt.Errorf("probe bundled registry %s: %w", p.URL, err)
	}
	resp, err := p.Client.Do(req)
	if err != nil {
		return fmt.Errorf("probe bundled registry %s: %w", p.URL, err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode >= 500 {
		return fmt.Errorf("probe bundled registry %s: GET /v2/ answered %s", p.URL, resp.Status)
	}
	return nil
}
