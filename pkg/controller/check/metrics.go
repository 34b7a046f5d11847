package check

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

var (
	checksTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tagger_checks_total",
		Help: "Upstream tag checks by result (Unchanged, NewGeneration, Failed).",
	}, []string{"result"})
	checkDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "tagger_check_duration_seconds",
		Help:    "Duration of upstream tag checks (HEAD resolve, plus the platform read for a new digest).",
		Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
	})
	generationsTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tagger_generations_total",
		Help: "Generations recorded across all Tags.",
	})
)

func init() {
	metrics.Registry.MustRegister(checksTotal, checkDuration, generationsTotal)
}
