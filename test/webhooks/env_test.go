// Package webhooks tests pkg/hooks end to end: a real kube-apiserver and etcd
// (envtest, CRDs from deploy/crds), the real controller (controllerd.Run
// in-process), real distribution registries as upstreams, and the webhook
// server on a loopback port reading Tags from its own manager's cache.
package webhooks

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/tagger-project/tagger/internal/testbin"
	"github.com/tagger-project/tagger/pkg/controllerd"
	"github.com/tagger-project/tagger/pkg/hooks"
	"github.com/tagger-project/tagger/pkg/logging"
)

// cluster is one apiserver, one controller and one webhook manager (its
// cache has the hooks.ImageIndex) shared by the package's tests.
var cluster struct {
	once   sync.Once
	err    error
	env    *envtest.Environment
	cfg    *rest.Config
	c      client.Client // direct: what the tests read and write
	cached client.Client // the webhook manager's cache-backed client
	log    *logrus.Logger
	cancel context.CancelFunc
	done   []chan error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if cluster.cancel != nil {
		cluster.cancel()
		for _, done := range cluster.done {
			select {
			case err := <-done:
				if err != nil {
					fmt.Fprintln(os.Stderr, "stop:", err)
				}
			case <-time.After(30 * time.Second):
				fmt.Fprintln(os.Stderr, "controller or webhook manager did not stop within 30s")
				code = 1
			}
		}
	}
	if cluster.env != nil {
		if err := cluster.env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop envtest:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// startCluster starts (once) the apiserver, the controller and the webhook
// manager, and returns a direct client.
func startCluster(t *testing.T) client.Client {
	t.Helper()
	dir := testbin.Require(t, "kube-apiserver", "etcd", "registry")
	cluster.once.Do(func() { cluster.err = bootCluster(dir) })
	if cluster.err != nil {
		t.Fatal(cluster.err)
	}
	return cluster.c
}

func bootCluster(dir string) error {
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(repoRoot(), "deploy", "crds")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: dir,
	}
	cfg, err := env.Start()
	if err != nil {
		return fmt.Errorf("start envtest: %w", err)
	}
	cluster.env, cluster.cfg = env, cfg
	scheme, err := controllerd.Scheme()
	if err != nil {
		return err
	}
	if cluster.c, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	level := "warn"
	if testing.Verbose() {
		level = "info"
	}
	var w io.Writer = os.Stderr
	if cluster.log, err = logging.New(w, "text", level); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	cluster.cancel = cancel

	// The controller, exactly as test/integration runs it.
	o := controllerd.DefaultOptions()
	o.MetricsAddr, o.HealthAddr, o.WebhookAddr = "0", "0", "0"
	o.LeaderElect = false
	o.PlainHTTPRegistries = []string{"127.0.0.1:*"}
	o.UpstreamTimeout = 5 * time.Second
	ctrlDone := make(chan error, 1)
	cluster.done = append(cluster.done, ctrlDone)
	go func() { ctrlDone <- controllerd.Run(ctx, cfg, o, cluster.log) }()

	// The webhook side: a manager of its own (the controller's is internal
	// to controllerd.Run), so it registers the image index itself.
	mgr, err := ctrl.NewManager(cfg, manager.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		return fmt.Errorf("webhook manager: %w", err)
	}
	if err := hooks.IndexTags(ctx, mgr); err != nil {
		return err
	}
	mgrDone := make(chan error, 1)
	cluster.done = append(cluster.done, mgrDone)
	go func() { mgrDone <- mgr.Start(ctx) }()
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
