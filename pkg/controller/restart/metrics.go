package restart

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

var rolloutWorkloads = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "tagger_rollout_workloads_total",
	Help: "Workloads using a Tag's image seen by rollout restart waves, by kind and result (restarted, skipped, failed).",
}, []string{"kind", "result"})

func init() {
	metrics.Registry.MustRegister(rolloutWorkloads)
}
