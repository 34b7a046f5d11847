package cache

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// The caching controller's queue itself is measured by controller-runtime
// (workqueue_depth, workqueue_longest_running_processor_seconds and
// controller_runtime_reconcile_* with controller="tag-cache").
var (
	cachedGenerations = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "tagger_cached_generations",
		Help: "Generations whose whole tree is in the bundled registry, across all Tags.",
	})
	copiesInFlight = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "tagger_cache_copies_in_flight",
		Help: "Generation copies into the bundled registry running now (at most --max-concurrent-caches).",
	})
)

func init() {
	metrics.Registry.MustRegister(cachedGenerations, copiesInFlight)
}
