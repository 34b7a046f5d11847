// Package e2e proves the node side on real components: a real kube-apiserver
// and etcd (envtest) with the CRD, the controller, a distribution registry as
// the upstream and one as the bundled registry, a real containerd daemon
// whose CRI registry config_path is the node agent's hosts dir, the node
// agent, and pulls through containerd's CRI image service as kubelet does.
package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/internal/rig/inproc"
	"github.com/tagger-project/tagger/pkg/node"
)

// rig is one node's worth of real components for one test.
type env struct {
	t        *testing.T
	c        client.Client
	cfg      *rest.Config
	up       *rig.Registry // upstream
	bundled  *rig.Registry
	ctd      *rig.Containerd
	agentOpt node.Options
	agent    *node.Agent
	stop     context.CancelFunc
	done     chan error
	log      *logrus.Logger
}

type rigOptions struct {
	strict bool
	// prepare runs before the node agent first starts (e.g. to lay down a
	// pre-existing hosts.toml for the upstream's host).
	prepare func(r *env)
}

func newRig(t *testing.T, ro rigOptions) *env {
	t.Helper()
	rig.RequireRoot(t)
	rig.RequireBins(t, "containerd", "ctr", "containerd-shim-runc-v2")
	cfg, c, log := startCluster(t)
	r := &env{t: t, c: c, cfg: cfg, log: log}
	r.up = rig.NewRegistry(t, rig.RegistryOptions{})
	r.bundled = rig.NewRegistry(t, rig.RegistryOptions{})
	r.ctd = rig.NewContainerd(t, rig.ContainerdOptions{})

	r.agentOpt = node.DefaultOptions()
	r.agentOpt.Listen = "127.0.0.1:0"
	r.agentOpt.MetricsAddr, r.agentOpt.HealthAddr = "0", "0"
	r.agentOpt.HostsDir = r.ctd.HostsDir()
	r.agentOpt.ContainerdConfig = r.ctd.ConfigPath()
	r.agentOpt.CRIEndpoint = r.ctd.Socket()
	r.agentOpt.RegistryURL = r.bundled.URL()
	r.agentOpt.PlainHTTPRegistries = []string{"127.0.0.1:*"}
	if ro.strict {
		r.agentOpt.StrictRegistries = []string{r.up.Host()}
	}
	if ro.prepare != nil {
		ro.prepare(r)
	}
	r.startAgent()
	return r
}

// startAgent starts the node agent in-process and waits until it is ready.
func (r *env) startAgent() {
	r.t.Helper()
	a, err := node.New(r.cfg, r.agentOpt, r.log)
	if err != nil {
		r.t.Fatalf("node agent: %v", err)
	}
	// Keep the first port: hosts.toml names it, and a restart must agree.
	r.agentOpt.Listen = a.Addr("mirror")
	ctx, cancel := context.WithCancel(context.Background())
	r.agent, r.stop, r.done = a, cancel, make(chan error, 1)
	go func() { r.done <- a.Run(ctx) }()
	r.t.Cleanup(r.stopAgent)
	rig.WaitFor(r.t, time.Minute, "node agent ready", func() (bool, string) {
		p := a.NotReady()
		return len(p) == 0, fmt.Sprint(p)
	})
}

func (r *env) stopAgent() {
	if r.stop == nil {
		return
	}
	r.stop()
	if err := <-r.done; err != nil {
		r.t.Errorf("node agent: %v", err)
	}
	r.stop = nil
}

// waitServed waits until the Tag serves d and the node agent's table has it.
func (r *env) waitServed(name, image, d string) {
	r.t.Helper()
	rig.WaitFor(r.t, time.Minute, fmt.Sprintf("Tag %s served %s on the node", name, d), func() (bool, string) {
		var tag v1alpha1.Tag
		if err := r.c.Get(context.Background(), client.ObjectKey{Name: name}, &tag); err != nil {
			return false, err.Error()
		}
		ref := mustRef(r.t, image)
		p, ok := r.agent.Pins().Lookup(ref.Registry, ref.Repository, ref.Tag)
		// The table is stored before hosts.toml is written: wait for both.
		hostsToml, _ := os.ReadFile(filepath.Join(r.agentOpt.HostsDir, ref.Registry, "hosts.toml"))
		written := strings.HasPrefix(string(hostsToml), "# managed by tagger")
		// Let convergence settle so it does not race the test's own pulls.
		pending := r.agent.ConvergencePending()
		return tag.Status.ServedDigest == d && ok && p.Digest == d && written && len(pending) == 0,
			fmt.Sprintf("tag serves %q, node pin %+v (%v), hosts.toml written %v, convergence pending %v", tag.Status.ServedDigest, p, ok, written, pending)
	})
}

// recorded returns the digest containerd recorded for ref.
func (r *env) recorded(ref string) string {
	r.t.Helper()
	d, ok, err := r.ctd.ImageDigest(context.Background(), ref)
	if err != nil || !ok {
		r.t.Fatalf("containerd has no record of %s: present=%v err=%v", ref, ok, err)
	}
	return d
}

// pull pulls ref through the CRI on a node with a fresh record of it.
func (r *env) freshPull(ref string) string {
	r.t.Helper()
	ctx := context.Background()
	if err := r.ctd.RemoveAllImages(ctx); err != nil {
		r.t.Fatalf("clear images: %v", err)
	}
	if _, err := r.ctd.Pull(ctx, ref); err != nil {
		r.t.Fatalf("CRI pull %s: %v", ref, err)
	}
	return r.recorded(ref)
}

// shared is one apiserver and one controller for the package's tests
// (controller-runtime allows one controller of a name per process); each
// test has its own registries, containerd, node agent and Tag names.
var shared inproc.Shared

func TestMain(m *testing.M) { os.Exit(shared.Stop(m.Run())) }

func startCluster(t *testing.T) (*rest.Config, client.Client, *logrus.Logger) {
	t.Helper()
	kc := shared.Get(t)
	return kc.Config, kc.Client, kc.Log
}
