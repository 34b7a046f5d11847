// Package webhooks tests pkg/hooks end to end: a real kube-apiserver and etcd
// (envtest, CRDs from deploy/crds), the real controller (controller.Run
// in-process), real distribution registries as upstreams, and the webhook
// server on a loopback port reading Tags from its own manager's cache.
package webhooks

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/internal/rig/inproc"
	"github.com/tagger-project/tagger/pkg/hooks"
)

// shared is one apiserver and one controller for the package's tests.
var shared inproc.Shared

// cluster adds, once, a webhook manager whose cache has hooks.ImageIndex
// (the controller's manager is internal to controller.Run).
var cluster struct {
	once   sync.Once
	err    error
	c      client.Client // direct: what the tests read and write
	cached client.Client // the webhook manager's cache-backed client
	log    *logrus.Logger
	cancel context.CancelFunc
	done   chan error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if cluster.cancel != nil {
		cluster.cancel()
		if err := <-cluster.done; err != nil {
			fmt.Fprintln(os.Stderr, "webhook manager:", err)
			code = 1
		}
	}
	os.Exit(shared.Stop(code))
}

// startCluster starts (once) the apiserver, the controller and the webhook
// manager, and returns a direct client.
func startCluster(t *testing.T) client.Client {
	t.Helper()
	kc := shared.Get(t)
	cluster.once.Do(func() { cluster.err = bootWebhookManager(kc) })
	if cluster.err != nil {
		t.Fatal(cluster.err)
	}
	return cluster.c
}

func bootWebhookManager(kc *rig.Kube) error {
	cluster.c, cluster.log = kc.Client, kc.Log
	scheme, err := v1alpha1.NewScheme()
	if err != nil {
		return err
	}
	mgr, err := ctrl.NewManager(kc.Config, manager.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		return fmt.Errorf("webhook manager: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := hooks.IndexTags(ctx, mgr); err != nil {
		cancel()
		return err
	}
	cluster.cancel, cluster.done = cancel, make(chan error, 1)
	go func() { cluster.done <- mgr.Start(ctx) }()
	syncCtx, cancelSync := context.WithTimeout(ctx, time.Minute)
	defer cancelSync()
	if !mgr.GetCache().WaitForCacheSync(syncCtx) {
		return fmt.Errorf("webhook manager cache did not sync")
	}
	cluster.cached = mgr.GetClient()
	return nil
}

// hookServer is a hooks.Server on a loopback port, its worker running.
type hookServer struct {
	url string

	mu     sync.Mutex
	checks []hooks.CheckRequest
}

// startHooks runs a webhook server with o (Client, Log, Metrics and
// OnCheckRequested are filled in) until the test ends.
func startHooks(t *testing.T, o hooks.Options) *hookServer {
	t.Helper()
	hs := &hookServer{}
	o.Client = cluster.cached
	o.Log = cluster.log
	o.Metrics = prometheus.NewRegistry()
	o.OnCheckRequested = func(cr hooks.CheckRequest) {
		hs.mu.Lock()
		defer hs.mu.Unlock()
		hs.checks = append(hs.checks, cr)
	}
	srv, err := hooks.New(o)
	if err != nil {
		t.Fatalf("hooks.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	web := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		web.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("hooks Run: %v", err)
		}
	})
	hs.url = web.URL
	return hs
}

// checksFor returns the checks requested for the Tag so far.
func (h *hookServer) checksFor(tag string) []hooks.CheckRequest {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []hooks.CheckRequest
	for _, c := range h.checks {
		if c.Tag == tag {
			out = append(out, c)
		}
	}
	return out
}
