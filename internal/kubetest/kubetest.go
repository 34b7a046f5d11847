// Package kubetest runs a real kube-apiserver and etcd (envtest, with the
// binaries hack/testbin.sh builds) with tagger's CRDs, and optionally the
// controller in-process, for tests, benchmarks and the demo.
package kubetest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/internal/containerdtest"
	"github.com/tagger-project/tagger/internal/testbin"
	"github.com/tagger-project/tagger/pkg/controller"
	"github.com/tagger-project/tagger/pkg/logging"
	"github.com/tagger-project/tagger/pkg/node"
)

// RepoRoot is the repository's top directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// BuildCommands builds the named commands (./cmd/<name>) into dir with the
// race detector on, as the suite itself runs (the packages then come from
// the suite's own build cache), and returns dir.
func BuildCommands(t testing.TB, dir string, names ...string) string {
	t.Helper()
	args := []string{"build", "-race", "-o", dir + string(filepath.Separator)}
	for _, n := range names {
		args = append(args, "./cmd/"+n)
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return dir
}

// Cluster is a running apiserver with the CRDs from deploy/crds.
type Cluster struct {
	Config *rest.Config
	// Client reads and writes tagger and core types.
	Client client.Client
	// KubeConfig is an admin kubeconfig for processes (the controller binary, the plugin).
	KubeConfig []byte
	// Log is the logger the in-process controller uses (warn, info with -v).
	Log *logrus.Logger

	env            *envtest.Environment
	stopController func() error
}

// Start starts an apiserver and etcd from binDir.
func Start(binDir string) (*Cluster, error) {
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(RepoRoot(), "deploy", "crds")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: binDir,
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("start envtest: %w", err)
	}
	c := &Cluster{Config: cfg, KubeConfig: env.KubeConfig, env: env}
	scheme, err := v1alpha1.NewScheme()
	if err == nil {
		c.Client, err = client.New(cfg, client.Options{Scheme: scheme})
	}
	level := "warn"
	if testing.Testing() && testing.Verbose() {
		level = "info"
	}
	if err == nil {
		c.Log, err = logging.New(os.Stderr, "text", level)
	}
	if err != nil {
		_ = env.Stop()
		return nil, err
	}
	return c, nil
}

// ControllerOptions are the controller options tests start from: no
// listeners, no leader election, local registries over plain HTTP.
func ControllerOptions() controller.Options {
	o := controller.DefaultOptions()
	o.MetricsAddr, o.HealthAddr, o.WebhookAddr = "0", "0", "0"
	o.LeaderElect = false
	o.PlainHTTPRegistries = []string{"127.0.0.1:*"}
	o.UpstreamTimeout = 5 * time.Second
	return o
}

// RunController runs the controller in-process until Stop. controller-runtime
// allows one controller of a name per process: call it once per test binary.
func (c *Cluster) RunController(o controller.Options) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- controller.Run(ctx, c.Config, o, c.Log) }()
	c.stopController = func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			return errors.New("controller did not stop within 30s")
		}
	}
}

// T is what RunNodeAgent needs of a test: testing.TB, or
// registrytest.Program outside one (the demo).
type T interface {
	Helper()
	Fatalf(format string, args ...any)
	Errorf(format string, args ...any)
	Cleanup(func())
}

// RunNodeAgent runs a node agent in-process for ctd's containerd until the
// test ends: mirror on an ephemeral loopback port, no metrics or health
// listeners, no local-image convergence, cached content from the bundled
// registry at registryURL, local registries over plain HTTP.
func (c *Cluster) RunNodeAgent(t T, ctd *containerdtest.Containerd, registryURL string) *node.Agent {
	t.Helper()
	o := node.DefaultOptions()
	o.Listen = "127.0.0.1:0"
	o.MetricsAddr, o.HealthAddr = "0", "0"
	o.HostsDir, o.ContainerdConfig, o.CRIEndpoint = ctd.HostsDir(), ctd.ConfigPath(), ""
	o.RegistryURL = registryURL
	o.PlainHTTPRegistries = []string{"127.0.0.1:*"}
	agent, err := node.New(c.Config, o, c.Log)
	if err != nil {
		t.Fatalf("node agent: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- agent.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("node agent: %v", err)
		}
	})
	return agent
}

// Stop stops the controller, if running, then the apiserver and etcd.
func (c *Cluster) Stop() error {
	var errs []error
	if c.stopController != nil {
		if err := c.stopController(); err != nil {
			errs = append(errs, fmt.Errorf("controller: %w", err))
		}
	}
	if err := c.env.Stop(); err != nil {
		errs = append(errs, fmt.Errorf("stop envtest: %w", err))
	}
	return errors.Join(errs...)
}

// Shared is one Cluster with the controller for all tests of a package,
// started by the first test that asks and stopped from TestMain:
//
//	var shared kubetest.Shared
//	func TestMain(m *testing.M) { os.Exit(shared.Stop(m.Run())) }
type Shared struct {
	// Options adjusts ControllerOptions before the controller starts.
	Options func(*controller.Options)

	once sync.Once
	err  error
	c    *Cluster
}

// Get returns the shared cluster, starting it on first use. It needs the
// rig binaries (testbin.Require: a failure under CI=true, a skip otherwise).
func (s *Shared) Get(t testing.TB) *Cluster {
	t.Helper()
	dir := testbin.Require(t, "kube-apiserver", "etcd", "registry")
	s.once.Do(func() {
		if s.c, s.err = Start(dir); s.err != nil {
			return
		}
		o := ControllerOptions()
		if s.Options != nil {
			s.Options(&o)
		}
		s.c.RunController(o)
	})
	if s.err != nil {
		t.Fatal(s.err)
	}
	return s.c
}

// Stop stops the cluster if it was started and returns the exit code for
// TestMain: code, or 1 when stopping failed.
func (s *Shared) Stop(code int) int {
	if s.c == nil {
		return code
	}
	if err := s.c.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "kubetest:", err)
		return 1
	}
	return code
}

// New starts a cluster (without the controller) for one test and stops it
// when the test ends.
func New(t testing.TB) *Cluster {
	t.Helper()
	c, err := Start(testbin.Require(t, "kube-apiserver", "etcd"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("kubetest: %v", err)
		}
	})
	return c
}
