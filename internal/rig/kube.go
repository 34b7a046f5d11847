// The apiserver: NewKube runs a real kube-apiserver and etcd (envtest, with the
// binaries hack/testbin.sh builds) with tagger's CRDs, and optionally the
// controller and node agent in-process (internal/rig/inproc), for tests,
// benchmarks and the demo.

package rig

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/pkg/logging"
)

// RepoRoot is the repository's top directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Kube is a running apiserver with the CRDs from deploy/crds.
type Kube struct {
	Config *rest.Config
	// Client reads and writes tagger and core types.
	Client client.Client
	// KubeConfig is an admin kubeconfig for processes (the controller binary, the plugin).
	KubeConfig []byte
	// Log is the logger the in-process controller uses (warn, info with -v).
	Log *logrus.Logger

	env   *envtest.Environment
	stops []func() error
}

// StartKube starts an apiserver and etcd from binDir.
func StartKube(binDir string) (*Kube, error) {
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(RepoRoot(), "deploy", "crds")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: binDir,
		// envtest's default (20s) is too short for a kube-apiserver starting
		// on a 2-core machine while make test runs cluster suites and an
		// image build beside it: seen failing in CI.
		ControlPlaneStartTimeout: 2 * time.Minute,
		ControlPlaneStopTimeout:  time.Minute,
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("start envtest: %w", err)
	}
	c := &Kube{Config: cfg, KubeConfig: env.KubeConfig, env: env}
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

// ServiceAccountSigningKey is the path of the PEM key the apiserver signs
// ServiceAccount tokens with, for tests that forge one it must refuse (an
// expired token: TokenRequest will not issue one).
func (c *Kube) ServiceAccountSigningKey() string {
	return filepath.Join(c.env.ControlPlane.APIServer.CertDir, "sa-signer.key")
}

// Go runs run in the background until Stop, which cancels its context
// and waits for it to return (at most 30s): the in-process controller of
// internal/rig/inproc runs this way, so it stops before the apiserver.
func (c *Kube) Go(name string, run func(ctx context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	c.stops = append(c.stops, func() error {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			return nil
		case <-time.After(30 * time.Second):
			return fmt.Errorf("%s did not stop within 30s", name)
		}
	})
}

// Stop stops what Go started, newest first, then the apiserver and etcd.
func (c *Kube) Stop() error {
	var errs []error
	for i := len(c.stops) - 1; i >= 0; i-- {
		errs = append(errs, c.stops[i]())
	}
	if err := c.env.Stop(); err != nil {
		errs = append(errs, fmt.Errorf("stop envtest: %w", err))
	}
	return errors.Join(errs...)
}

// NewKube starts an apiserver (without the controller) for one test and stops it
// when the test ends.
func NewKube(t testing.TB) *Kube {
	t.Helper()
	c, err := StartKube(RequireBins(t, "kube-apiserver", "etcd"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("rig kube: %v", err)
		}
	})
	return c
}
