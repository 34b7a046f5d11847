package check

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
)

// The counters are labelled by registry host, never by repository or Tag:
// hosts are few, repositories as many as images. The per-Tag gauges carry
// the Tag's name (one series each, deleted with the Tag), which is what an
// alert needs to name the Tag to look at.
var (
	checksTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tagger_checks_total",
		Help: "Upstream tag checks by registry host and result (Unchanged, NewGeneration, Failed).",
	}, []string{"registry", "result"})
	checkDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tagger_check_duration_seconds",
		Help:    "Duration of upstream tag checks (HEAD resolve, plus the platform read for a new digest), by registry host.",
		Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
	}, []string{"registry"})
	generationsTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tagger_generations_total",
		Help: "Generations recorded across all Tags.",
	})
	lastSuccess = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tagger_tag_last_successful_check_timestamp_seconds",
		Help: "Unix time of the Tag's last successful upstream check (from status.lastCheck; after a controller restart during failures, the time the failures began).",
	}, []string{"tag"})
	tagCondition = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tagger_tag_condition",
		Help: "1 when the Tag's condition (Ready, Resolved, Conflict) is True, 0 when it is False or Unknown.",
	}, []string{"tag", "condition"})
)

func init() {
	metrics.Registry.MustRegister(checksTotal, checkDuration, generationsTotal, lastSuccess, tagCondition)
}

// successSet holds the Tags whose last-success gauge this process has set,
// so that a failed check keeps it rather than move it to an estimate.
var successSet sync.Map

// tagConditions are the conditions this controller owns, exported per Tag.
var tagConditions = []string{v1alpha1.ConditionReady, v1alpha1.ConditionResolved, v1alpha1.ConditionConflict}

// recordTag sets the Tag's gauges from the status this pass computed.
func recordTag(tag *v1alpha1.Tag) {
	for _, c := range tagConditions {
		v := 0.0
		if meta.IsStatusConditionTrue(tag.Status.Conditions, c) {
			v = 1
		}
		tagCondition.WithLabelValues(tag.Name, c).Set(v)
	}
	if t, ok := lastSuccessTime(tag); ok {
		lastSuccess.WithLabelValues(tag.Name).Set(float64(t))
		successSet.Store(tag.Name, struct{}{})
	}
}

// lastSuccessTime is when the Tag's upstream was last resolved. The status
// keeps only the last check; when it failed, the Resolved condition turned
// False at the first failure, which is the latest the last success can have
// been (a gauge this process set itself is more exact and kept then).
func lastSuccessTime(tag *v1alpha1.Tag) (int64, bool) {
	lc := tag.Status.LastCheck
	if lc == nil {
		return 0, false
	}
	if lc.Result != v1alpha1.CheckFailed {
		return lc.Time.Unix(), true
	}
	if _, set := successSet.Load(tag.Name); set {
		return 0, false
	}
	c := meta.FindStatusCondition(tag.Status.Conditions, v1alpha1.ConditionResolved)
	if c == nil || len(tag.Status.Generations) == 0 {
		// Never resolved: no success to date; Ready=False says it.
		return 0, false
	}
	return c.LastTransitionTime.Unix(), true
}

// forgetTag drops a deleted Tag's series.
func forgetTag(name string) {
	successSet.Delete(name)
	lastSuccess.DeletePartialMatch(prometheus.Labels{"tag": name})
	tagCondition.DeletePartialMatch(prometheus.Labels{"tag": name})
}
