// Package integration runs the controller against the real rig: a real
// kube-apiserver and etcd (envtest, binaries from hack/testbin.sh) with the
// CRD from deploy/crds, and real distribution registries as upstreams.
package integration

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/tagger-project/tagger/internal/testbin"
	"github.com/tagger-project/tagger/pkg/controllerd"
	"github.com/tagger-project/tagger/pkg/logging"
)

// cluster is one apiserver and one controller shared by the package's tests;
// each test uses its own Tag names and its own registry.
var cluster struct {
	once   sync.Once
	err    error
	env    *envtest.Environment
	cfg    *rest.Config
	c      client.Client
	cancel context.CancelFunc
	done   chan error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if cluster.cancel != nil {
		cluster.cancel()
		select {
		case err := <-cluster.done:
			if err != nil {
				fmt.Fprintln(os.Stderr, "controller:", err)
			}
		case <-time.After(30 * time.Second):
			fmt.Fprintln(os.Stderr, "controller did not stop within 30s")
			code = 1
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

// startCluster starts (once) the apiserver and the controller and returns a client.
func startCluster(t *testing.T) client.Client {
	t.Helper()
	dir := testbin.Require(t, "kube-apiserver", "etcd", "registry")
	cluster.once.Do(func() {
		env := &envtest.Environment{
			CRDDirectoryPaths:     []string{filepath.Join(repoRoot(), "deploy", "crds")},
			ErrorIfCRDPathMissing: true,
			BinaryAssetsDirectory: dir,
		}
		cfg, err := env.Start()
		if err != nil {
			cluster.err = fmt.Errorf("start envtest: %w", err)
			return
		}
		cluster.env, cluster.cfg = env, cfg
		scheme, err := controllerd.Scheme()
		if err != nil {
			cluster.err = err
			return
		}
		if cluster.c, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
			cluster.err = fmt.Errorf("client: %w", err)
			return
		}
		level := "warn"
		if testing.Verbose() {
			level = "info"
		}
		var w io.Writer = os.Stderr
		log, err := logging.New(w, "text", level)
		if err != nil {
			cluster.err = err
			return
		}
		o := controllerd.DefaultOptions()
		o.MetricsAddr, o.HealthAddr, o.WebhookAddr = "0", "0", "0"
		o.LeaderElect = false
		o.PlainHTTPRegistries = []string{"127.0.0.1:*"}
		o.UpstreamTimeout = 5 * time.Second
		ctx, cancel := context.WithCancel(context.Background())
		cluster.cancel, cluster.done = cancel, make(chan error, 1)
		go func() { cluster.done <- controllerd.Run(ctx, cfg, o, log) }()
	})
	if cluster.err != nil {
		t.Fatal(cluster.err)
	}
	return cluster.c
}

// eventually polls cond every 50ms until it holds or timeout passes; the
// last failure message is reported.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var msg string
	for {
		ok, m := cond()
		if ok {
			return
		}
		msg = m
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %s", timeout, what, msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
