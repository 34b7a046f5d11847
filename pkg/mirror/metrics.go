package mirror

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// kind is the kind of request, the "kind" label.
type kind uint8

const (
	kindManifestTag kind = iota
	kindManifestDigest
	kindBlob
	kindPing
	kindOther
	numKinds
)

var kindNames = [numKinds]string{"manifest_tag", "manifest_digest", "blob", "ping", "other"}

// result is how a request was answered, the "result" label.
type result uint8

const (
	// resultPinnedHit: pinned content was served (a pinned tag's manifest,
	// or content of a pinned repository from the bundled registry).
	resultPinnedHit result = iota
	// resultUnpinnedMiss: 404 at once because the tag or repository is not
	// pinned.
	resultUnpinnedMiss
	// resultUpstreamFallback404: the repository is pinned but the bundled
	// registry does not have that digest (or there is none): 404 so that
	// containerd fetches it upstream.
	resultUpstreamFallback404
	// resultError: the bundled registry (or the upstream fetcher) failed;
	// answered 404 for content by digest, 503 for a pinned tag's GET.
	resultError
	// resultOK: a ping.
	resultOK
	// resultBadRequest: invalid name, tag or digest (400), missing ns or a
	// path the mirror does not serve (404).
	resultBadRequest
	// resultMethodNotAllowed: anything but GET and HEAD (405).
	resultMethodNotAllowed
	// resultRangeNotSatisfiable: content of a pinned repository asked for
	// with a range that starts at or beyond its end (416).
	resultRangeNotSatisfiable
	numResults
)

var resultNames = [numResults]string{
	"pinned_hit", "unpinned_miss", "upstream_fallback_404", "error", "ok", "bad_request", "method_not_allowed",
	"range_not_satisfiable",
}

// Metrics are the mirror's Prometheus metrics. Every label combination is
// resolved once in NewMetrics, so counting a request costs no map lookup.
type Metrics struct {
	requests *prometheus.CounterVec
	bytes    prometheus.Counter
	duration *prometheus.HistogramVec

	cacheHits, cacheMisses prometheus.Counter
	cacheBytes             prometheus.Gauge

	reqs [numKinds][numResults]prometheus.Counter
	durs [numKinds]prometheus.Observer
}

// NewMetrics creates the mirror's metrics and registers them on reg (when
// reg is not nil):
//   - tagger_mirror_requests_total{kind,result}
//   - tagger_mirror_bytes_total: content bytes (manifests, blobs) sent to
//     containerd; error bodies are not counted
//   - tagger_mirror_request_duration_seconds{kind}
//   - tagger_mirror_manifest_cache_hits_total, ..._misses_total: lookups of
//     the manifest cache (a pinned tag's GET; a manifest GET or HEAD by
//     digest without Range), answered from memory or not
//   - tagger_mirror_manifest_cache_bytes: manifest bytes the cache holds
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tagger_mirror_requests_total",
			Help: "Requests to the node mirror by kind (manifest_tag, manifest_digest, blob, ping, other) and result.",
		}, []string{"kind", "result"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tagger_mirror_bytes_total",
			Help: "Manifest and blob bytes the node mirror sent to containerd.",
		}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tagger_mirror_request_duration_seconds",
			Help: "Time to answer a mirror request, including streaming the body.",
			// From 100µs (a HEAD answered from memory) to ~26s (a large blob).
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}, []string{"kind"}),
	}
	m.cacheHits = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tagger_mirror_manifest_cache_hits_total",
		Help: "Manifest requests the node mirror answered from its cache of verified manifests.",
	})
	m.cacheMisses = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tagger_mirror_manifest_cache_misses_total",
		Help: "Manifest requests the node mirror could not answer from its manifest cache (absent, or the request's Accept does not admit the cached media type).",
	})
	m.cacheBytes = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "tagger_mirror_manifest_cache_bytes",
		Help: "Manifest bytes held by the node mirror's manifest cache.",
	})
	for k := range numKinds {
		m.durs[k] = m.duration.WithLabelValues(kindNames[k])
		for r := range numResults {
			m.reqs[k][r] = m.requests.WithLabelValues(kindNames[k], resultNames[r])
		}
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.bytes, m.duration, m.cacheHits, m.cacheMisses, m.cacheBytes)
	}
	return m
}

// observe counts one answered request.
func (m *Metrics) observe(k kind, r result, start time.Time) {
	m.reqs[k][r].Inc()
	m.durs[k].Observe(time.Since(start).Seconds())
}

// addBytes counts content bytes sent.
func (m *Metrics) addBytes(n int64) {
	if n > 0 {
		m.bytes.Add(float64(n))
	}
}
