package mirror

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func counterValue(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	return testutil.ToFloat64(c)
}

// TestMetrics checks what each kind of request counts.
func TestMetrics(t *testing.T) {
	_, srv := newRegistry(t)
	reg := prometheus.NewPedanticRegistry()
	m := NewMetrics(reg)
	h, err := New(Options{Table: newTable(t, nginxPin, redisPin), RegistryURL: srv.URL, Upstream: newUpstream(), Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	blobD := blobDigest().String()
	reqs := []struct{ method, target string }{
		{"GET", "/v2/"},
		{"HEAD", "/v2/library/nginx/manifests/1.27?ns=docker.io"},
		{"HEAD", "/v2/library/nginx/manifests/1.27?ns=docker.io"},
		{"GET", "/v2/library/nginx/manifests/1.27?ns=docker.io"},
		{"HEAD", "/v2/library/nginx/manifests/1.28?ns=docker.io"},
		{"GET", "/v2/library/nginx/blobs/" + blobD + "?ns=docker.io"},
		{"GET", "/v2/library/nginx/blobs/sha256:" + strings.Repeat("1", 64) + "?ns=docker.io"},
		{"GET", "/v2/library/busybox/blobs/" + blobD + "?ns=docker.io"},
		{"GET", "/v2/library/nginx/manifests/" + nginxPin.digest().String() + "?ns=docker.io"},
		{"GET", "/v2/library/redis/manifests/" + redisPin.digest().String() + "?ns=docker.io"},
		{"PUT", "/v2/library/nginx/manifests/1.27?ns=docker.io"},
		{"GET", "/v2/Library/nginx/manifests/1.27?ns=docker.io"},
		{"GET", "/v2/library/nginx/manifests/1.27"},
		{"GET", "/v2/_catalog"},
	}
	for _, r := range reqs {
		do(h, r.method, r.target)
	}
	for _, tc := range []struct {
		kind, result string
		want         float64
	}{
		{"ping", "ok", 1},
		{"manifest_tag", "pinned_hit", 3},
		{"manifest_tag", "unpinned_miss", 1},
		{"manifest_tag", "method_not_allowed", 1},
		{"manifest_tag", "bad_request", 2},
		{"blob", "pinned_hit", 1},
		{"blob", "upstream_fallback_404", 1},
		{"blob", "unpinned_miss", 1},
		{"manifest_digest", "pinned_hit", 1},
		{"manifest_digest", "upstream_fallback_404", 1},
		{"other", "bad_request", 1},
		{"blob", "error", 0},
	} {
		if got := testutil.ToFloat64(m.requests.WithLabelValues(tc.kind, tc.result)); got != tc.want {
			t.Errorf("requests{kind=%s,result=%s} = %v, want %v", tc.kind, tc.result, got, tc.want)
		}
	}
	wantBytes := len(nginxPin.body)*2 + len(blob)
	if got := testutil.ToFloat64(m.bytes); got != float64(wantBytes) {
		t.Errorf("bytes = %v, want %d", got, wantBytes)
	}
	if n := testutil.CollectAndCount(m.duration); n != int(numKinds) {
		t.Errorf("duration series = %d, want %d", n, numKinds)
	}
	if got := testutil.CollectAndCount(m.requests); got != int(numKinds)*int(numResults) {
		t.Errorf("request series = %d, want every combination, %d", got, int(numKinds)*int(numResults))
	}
	// Registered, and valid for a pedantic registry.
	assertRegistered(t, reg, "tagger_mirror_requests_total", "tagger_mirror_bytes_total", "tagger_mirror_request_duration_seconds")
}

// assertRegistered gathers reg (which fails on invalid metrics for a
// pedantic registry) and checks every name is among the families.
func assertRegistered(t *testing.T, reg prometheus.Gatherer, want ...string) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range want {
		if !names[n] {
			t.Errorf("%s not registered", n)
		}
	}
}

// TestMetricsError: a bundled registry failure counts as an error.
func TestMetricsError(t *testing.T) {
	m := NewMetrics(nil)
	h, err := New(Options{Table: newTable(t, nginxPin), RegistryURL: "http://127.0.0.1:1", Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	if w := do(h, "GET", "/v2/library/nginx/blobs/"+blobDigest().String()+"?ns=docker.io"); w.Code != 404 {
		t.Fatalf("status %d", w.Code)
	}
	if w := do(h, "GET", "/v2/library/nginx/manifests/1.27?ns=docker.io"); w.Code != 503 {
		t.Fatalf("status %d", w.Code)
	}
	if got := testutil.ToFloat64(m.reqs[kindBlob][resultError]); got != 1 {
		t.Errorf("blob errors = %v", got)
	}
	if got := testutil.ToFloat64(m.reqs[kindManifestTag][resultError]); got != 1 {
		t.Errorf("manifest_tag errors = %v", got)
	}
}
