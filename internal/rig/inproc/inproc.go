// Package inproc runs tagger's controller and node agent in the test process
// against a rig.Kube. It is apart from package rig so that unit tests inside
// the controller's own packages can use the rig without an import cycle.
package inproc

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/pkg/controller"
	"github.com/tagger-project/tagger/pkg/node"
)

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

// RunController runs the controller in-process until k stops.
// controller-runtime allows one controller of a name per process: call it
// once per test binary.
func RunController(k *rig.Kube, o controller.Options) {
	k.Go("controller", func(ctx context.Context) error {
		return controller.Run(ctx, k.Config, o, k.Log)
	})
}

// RunNodeAgent runs a node agent in-process for ctd's containerd until the
// test ends: mirror on an ephemeral loopback port, no metrics or health
// listeners, no local-image convergence, cached content from the bundled
// registry at registryURL, local registries over plain HTTP.
func RunNodeAgent(t rig.T, k *rig.Kube, ctd *rig.Containerd, registryURL string) *node.Agent {
	t.Helper()
	return RunNodeAgentWith(t, k, ctd, func(o *node.Options) { o.RegistryURL = registryURL })
}

// RunNodeAgentWith is RunNodeAgent with adjust applied to the options
// (e.g. AuthRegistry.Agent for a bundled registry with authentication).
func RunNodeAgentWith(t rig.T, k *rig.Kube, ctd *rig.Containerd, adjust func(*node.Options)) *node.Agent {
	t.Helper()
	o := node.DefaultOptions()
	o.Listen = "127.0.0.1:0"
	o.MetricsAddr, o.HealthAddr = "0", "0"
	o.HostsDir, o.ContainerdConfig, o.CRIEndpoint = ctd.HostsDir(), ctd.ConfigPath(), ""
	o.PlainHTTPRegistries = []string{"127.0.0.1:*"}
	if adjust != nil {
		adjust(&o)
	}
	agent, err := node.New(k.Config, o, k.Log)
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

// Shared is one rig.Kube with the controller for all tests of a package,
// started by the first test that asks and stopped from TestMain:
//
//	var shared inproc.Shared
//	func TestMain(m *testing.M) { os.Exit(shared.Stop(m.Run())) }
type Shared struct {
	// Options adjusts ControllerOptions before the controller starts.
	Options func(*controller.Options)

	once sync.Once
	err  error
	k    *rig.Kube
}

// Get returns the shared apiserver, starting it and the controller on first
// use. It needs the rig binaries (rig.RequireBins: a failure under CI=true,
// a skip otherwise).
func (s *Shared) Get(t testing.TB) *rig.Kube {
	t.Helper()
	dir := rig.RequireBins(t, "kube-apiserver", "etcd", "registry")
	s.once.Do(func() {
		if s.k, s.err = rig.StartKube(dir); s.err != nil {
			return
		}
		o := ControllerOptions()
		if s.Options != nil {
			s.Options(&o)
		}
		RunController(s.k, o)
	})
	if s.err != nil {
		t.Fatal(s.err)
	}
	return s.k
}

// Stop stops the apiserver and controller if they were started and returns
// the exit code for TestMain: code, or 1 when stopping failed.
func (s *Shared) Stop(code int) int {
	if s.k == nil {
		return code
	}
	if err := s.k.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "inproc:", err)
		return 1
	}
	return code
}
