package imagecopy

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Blob results, the "result" label of tagger_copy_blobs_total.
const (
	resultUploaded = "uploaded"
	resultPresent  = "present"
	resultMounted  = "mounted"
	resultFailed   = "failed"
)

// Metrics are the copier's Prometheus metrics. A nil *Metrics counts nothing.
type Metrics struct {
	bytes    prometheus.Counter
	duration *prometheus.HistogramVec
	blobs    *prometheus.CounterVec
}

// NewMetrics creates the copier's metrics and registers them on reg (when
// reg is not nil):
//   - tagger_copy_bytes_total: blob bytes uploaded into the bundled registry
//   - tagger_copy_duration_seconds{result=ok|error}: time of one Copy
//   - tagger_copy_blobs_total{result=uploaded|present|mounted|failed}
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tagger_copy_bytes_total",
			Help: "Blob bytes uploaded from upstream registries into the bundled registry.",
		}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tagger_copy_duration_seconds",
			Help: "Time to copy one generation's tree into the bundled registry.",
			// From 10ms (everything present) to ~45min (a huge image).
			Buckets: prometheus.ExponentialBuckets(0.01, 3, 12),
		}, []string{"result"}),
		blobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tagger_copy_blobs_total",
			Help: "Blobs handled by copies, by result: uploaded, present (already there), mounted (from another cache repository), failed.",
		}, []string{"result"}),
	}
	for _, r := range []string{resultUploaded, resultPresent, resultMounted, resultFailed} {
		m.blobs.WithLabelValues(r)
	}
	for _, r := range []string{"ok", "error"} {
		m.duration.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.bytes, m.duration, m.blobs)
	}
	return m
}

func (m *Metrics) blob(result string, uploaded int64) {
	if m == nil {
		return
	}
	m.blobs.WithLabelValues(result).Inc()
	if uploaded > 0 {
		m.bytes.Add(float64(uploaded))
	}
}

func (m *Metrics) copied(d time.Duration, err error) {
	if m == nil {
		return
	}
	r := "ok"
	if err != nil {
		r = "error"
	}
	m.duration.WithLabelValues(r).Observe(d.Seconds())
}
