package registryprobe

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sirupsen/logrus"

	"github.com/tagger-project/tagger/internal/rig"
)

// A real registry: up while it runs (its /v2/ answers 200), down once it
// is stopped (connection refused).
func TestProbeRealRegistry(t *testing.T) {
	reg := rig.NewRegistry(t, rig.RegistryOptions{})
	p := newProbe(reg.URL()+"/", logrus.New(), newGauge())
	ctx := context.Background()
	if err := p.Once(ctx); err != nil {
		t.Fatalf("probe of a running registry: %v", err)
	}
	if got := testutil.ToFloat64(p.up); got != 1 {
		t.Fatalf("tagger_bundled_registry_up = %v with the registry running, want 1", got)
	}
	reg.Stop()
	if err := p.Once(ctx); err == nil {
		t.Fatal("probe of a stopped registry succeeded")
	}
	if got := testutil.ToFloat64(p.up); got != 0 {
		t.Fatalf("tagger_bundled_registry_up = %v with the registry stopped, want 0", got)
	}
}

// What counts as answering: a 401 (a registry with auth) is up, a 5xx (the
// registry's storage health check failing) is down.
func TestProbeStatus(t *testing.T) {
	for _, c := range []struct {
		status int
		up     float64
	}{{200, 1}, {401, 1}, {503, 0}} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/v2/" {
				t.Errorf("probe asked for %s, want /v2/", r.URL.Path)
			}
			w.WriteHeader(c.status)
		}))
		p := newProbe(srv.URL, logrus.New(), newGauge())
		_ = p.Once(context.Background())
		srv.Close()
		if got := testutil.ToFloat64(p.up); got != c.up {
			t.Errorf("answer %d: tagger_bundled_registry_up = %v, want %v", c.status, got, c.up)
		}
	}
}

// newGauge is a gauge of the test's own, so tests do not share the
// process's.
func newGauge() prometheus.Gauge {
	return prometheus.NewGauge(prometheus.GaugeOpts{Name: "tagger_bundled_registry_up", Help: "test"})
}
