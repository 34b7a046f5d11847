package hooks

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// result is how a delivery was answered, the "result" label of
// tagger_webhooks_total.
type result string

const (
	resultAccepted         result = "accepted" // 202, and 200 for a delivery with nothing to check
	resultUnauthorized     result = "unauthorized"
	resultBadRequest       result = "bad_request"
	resultNotFound         result = "not_found"
	resultTooLarge         result = "too_large"
	resultUnsupportedMedia result = "unsupported_media_type"
	resultMethodNotAllowed result = "method_not_allowed"
	// resultReplayed: an authenticated delivery seen before (200, nothing
	// checked).
	resultReplayed result = "replayed"
	resultError    result = "error"
)

// providerUnknown labels deliveries to a path that names no provider, so a
// scanner cannot grow the label set.
const providerUnknown = "unknown"

// Results of an annotation patch, the "result" label of
// tagger_webhook_check_requests_total.
const (
	patchRequested = "requested" // the annotation was set
	patchGone      = "gone"      // the Tag was deleted meanwhile
	patchError     = "error"     // the patch failed (retried up to maxPatchAttempts)
)

// Results of a Docker Hub callback.
const (
	callbackSent    = "sent"    // the callback answered 2xx
	callbackFailed  = "failed"  // transport error or non-2xx
	callbackRefused = "refused" // callback_url not https on an allowed host
	callbackDropped = "dropped" // too many callbacks in flight
)

type metrics struct {
	webhooks  *prometheus.CounterVec
	checks    *prometheus.CounterVec
	pending   prometheus.Gauge
	callbacks *prometheus.CounterVec
	// logsSuppressed counts warnings about unauthenticated deliveries not
	// logged because of the rate limit.
	logsSuppressed prometheus.Counter
}

// newMetrics creates the metrics and registers them on reg when not nil:
//   - tagger_webhooks_total{provider,result}: deliveries by how they were answered
//   - tagger_webhook_check_requests_total{provider,result}: annotation patches
//   - tagger_webhook_pending_checks: Tags waiting for their coalescing window
//   - tagger_webhook_callbacks_total{result}: Docker Hub callbacks
//   - tagger_webhook_log_suppressed_total: unauthorized-delivery warnings
//     held back by the log rate limit (every delivery is still counted in
//     tagger_webhooks_total)
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		webhooks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tagger_webhooks_total",
			Help: "Registry webhook deliveries by provider and result (accepted, replayed, unauthorized, bad_request, not_found, too_large, unsupported_media_type, method_not_allowed, error).",
		}, []string{"provider", "result"}),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tagger_webhook_check_requests_total",
			Help: "Checks requested by webhooks (tagger.dev/check annotation patches) by provider and result (requested, gone, error).",
		}, []string{"provider", "result"}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tagger_webhook_pending_checks",
			Help: "Tags with a webhook check waiting for its coalescing window.",
		}),
		callbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tagger_webhook_callbacks_total",
			Help: "Docker Hub callbacks by result (sent, failed, refused, dropped).",
		}, []string{"result"}),
		logsSuppressed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tagger_webhook_log_suppressed_total",
			Help: "Warnings about unauthenticated webhook deliveries not logged because of the log rate limit (5, then one per 10s).",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.webhooks, m.checks, m.pending, m.callbacks, m.logsSuppressed} {
			if err := reg.Register(c); err != nil {
				var are prometheus.AlreadyRegisteredError
				if errors.As(err, &are) {
					return nil, fmt.Errorf("register webhook metrics: %w (one Server per registry)", err)
				}
				return nil, fmt.Errorf("register webhook metrics: %w", err)
			}
		}
	}
	return m, nil
}
