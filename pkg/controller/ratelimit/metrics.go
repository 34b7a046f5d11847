package ratelimit

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are labelled by registry host only: repositories are as many as
// there are images, far too many for label values.
type metrics struct {
	waiting     *prometheus.GaugeVec
	rateLimited *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		waiting: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tagger_upstream_requests_waiting",
			Help: "Upstream calls waiting for their repository's turn or their registry's rate limit.",
		}, []string{"registry"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tagger_upstream_rate_limited_total",
			Help: "Answers of 429 or 503 with Retry-After from a registry; each holds the registry's checks back until then.",
		}, []string{"registry"}),
	}
	if reg != nil {
		m.waiting = register(reg, m.waiting)
		m.rateLimited = register(reg, m.rateLimited)
	}
	return m
}

// register registers c, or returns the collector already registered under
// its name, so several Limiters can share one Registerer.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	panic("checklimit: register metrics: " + err.Error())
}
