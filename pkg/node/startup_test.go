package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/pkg/node/hostsprobe"
	"github.com/tagger-project/tagger/pkg/node/startuptaint"
)

const (
	gateNode     = "gate-node"
	pinnedHost   = "registry.example:5000"
	pinnedDigest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

// containerd configs: one that makes containerd read hosts.toml from dir,
// one (version 2, no config_path) that makes it ignore them.
func containerdConfig(t *testing.T, hostsDir string, reads bool) string {
	t.Helper()
	body := "version = 2\n"
	if reads {
		body = "version = 3\n[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = \"" + hostsDir + "\"\n"
	}
	p := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// startAgent runs an agent for gateNode until the returned stop is called
// (or the test ends); cri "" means no CRI, so no live probe.
func startAgent(t *testing.T, kube *rig.Kube, hostsDir, config, cri string) (*Agent, func()) {
	t.Helper()
	o := DefaultOptions()
	o.Listen, o.MetricsAddr, o.HealthAddr = "127.0.0.1:0", "0", "0"
	o.HostsDir, o.ContainerdConfig, o.CRIEndpoint = hostsDir, config, cri
	o.RegistryURL = "http://127.0.0.1:1"
	o.StartupTaint, o.NodeName = startuptaint.DefaultKey, gateNode
	a, err := New(kube.Config, o, kube.Log)
	if err != nil {
		t.Fatalf("node agent: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("node agent: %v", err)
		}
	}
	t.Cleanup(stop)
	return a, stop
}

func createTaintedNode(t *testing.T, kube *rig.Kube) {
	t.Helper()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: gateNode}, Spec: corev1.NodeSpec{Taints: []corev1.Taint{
		{Key: "dedicated", Value: "infra", Effect: corev1.TaintEffectNoSchedule},
		{Key: startuptaint.DefaultKey, Effect: corev1.TaintEffectNoSchedule},
	}}}
	if err := kube.Client.Create(t.Context(), node); err != nil {
		t.Fatal(err)
	}
}

func nodeTaints(t *testing.T, kube *rig.Kube) []string {
	t.Helper()
	var n corev1.Node
	if err := kube.Client.Get(context.Background(), client.ObjectKey{Name: gateNode}, &n); err != nil {
		t.Fatalf("get node: %v", err)
	}
	var keys []string
	for _, tt := range n.Spec.Taints {
		keys = append(keys, tt.Key)
	}
	return keys
}

// The gate against a real apiserver: an agent whose containerd would ignore
// hosts.toml has synced its pins and written hosts.toml, yet the taint
// stays; the next agent, on a node whose containerd reads them, removes it,
// and only it, after writing hosts.toml.
func TestStartupGate(t *testing.T) {
	kube := rig.NewKube(t)
	ctx := t.Context()
	createTaintedNode(t, kube)
	tag := rig.NewTag("app", pinnedHost+"/team/app:v1")
	rig.CreateTag(t, kube.Client, tag)
	tag.Status.ServedGeneration, tag.Status.ServedDigest = 1, pinnedDigest
	tag.Status.Generations = []v1alpha1.Generation{{Generation: 1, Image: tag.Spec.Image, Digest: pinnedDigest, FirstSeen: metav1.Now()}}
	if err := kube.Client.Status().Update(ctx, tag); err != nil {
		t.Fatalf("serve generation 1: %v", err)
	}
	hostsDir := t.TempDir()
	hostsFile := filepath.Join(hostsDir, pinnedHost, "hosts.toml")

	bad, stopBad := startAgent(t, kube, hostsDir, containerdConfig(t, hostsDir, false), "")
	rig.WaitFor(t, 30*time.Second, "agent synced the pin and wrote hosts.toml", func() (bool, string) {
		p := bad.NotReady()
		_, err := os.Stat(hostsFile)
		return err == nil && bad.Pins().Len() == 1 && len(p) == 1 && strings.HasPrefix(p[0], "containerd ignores hosts.toml"),
			fmt.Sprintf("%d pins, %s: %v, not ready: %d reasons", bad.Pins().Len(), hostsFile, err, len(p))
	})
	// The gate would open in the same rebuild that wrote hosts.toml; give a
	// wrong removal two seconds to show.
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if !slices.Contains(nodeTaints(t, kube), startuptaint.DefaultKey) {
			t.Fatal("startup taint removed although containerd would ignore hosts.toml")
		}
	}
	if v := testutil.ToFloat64(bad.gate.cleared); v != 0 {
		t.Errorf("tagger_startup_taint_cleared = %v on a gated node", v)
	}
	stopBad()

	good, _ := startAgent(t, kube, hostsDir, containerdConfig(t, hostsDir, true), "")
	rig.WaitFor(t, 30*time.Second, "startup taint removed", func() (bool, string) {
		keys := nodeTaints(t, kube)
		return !slices.Contains(keys, startuptaint.DefaultKey), strings.Join(keys, ",")
	})
	if p := good.NotReady(); len(p) != 0 {
		t.Errorf("taint removed while the agent reports %v", p)
	}
	if _, err := os.Stat(hostsFile); err != nil {
		t.Errorf("taint removed without hosts.toml for the pin: %v", err)
	}
	if keys := nodeTaints(t, kube); !slices.Contains(keys, "dedicated") {
		t.Errorf("other taints lost: %v", keys)
	}
	rig.WaitFor(t, 10*time.Second, "tagger_startup_taint_cleared = 1", func() (bool, string) {
		v := testutil.ToFloat64(good.gate.cleared)
		return v == 1, ""
	})
}

// The live proof with a real containerd: an agent whose config file says
// containerd reads its hosts dir, while the running containerd reads
// another (a config edited but containerd not restarted), keeps the taint;
// the agent on containerd's real hosts dir proves it through a CRI pull of
// the probe image and removes the taint.
func TestStartupGateProbesContainerd(t *testing.T) {
	ctd := rig.NewContainerd(t, rig.ContainerdOptions{})
	kube := rig.NewKube(t)
	createTaintedNode(t, kube)

	elsewhere := t.TempDir()
	wrong, stopWrong := startAgent(t, kube, elsewhere, containerdConfig(t, elsewhere, true), ctd.Socket())
	rig.WaitFor(t, 60*time.Second, "a failed live probe", func() (bool, string) {
		n := testutil.ToFloat64(wrong.gate.probeFailed)
		return n >= 1, fmt.Sprintf("%v failures; not ready: %v", n, wrong.NotReady())
	})
	if len(wrong.NotReady()) != 0 {
		t.Fatalf("the config check should pass here: %v", wrong.NotReady())
	}
	if !slices.Contains(nodeTaints(t, kube), startuptaint.DefaultKey) {
		t.Fatal("startup taint removed although containerd never asked the mirror")
	}
	if _, err := os.Stat(filepath.Join(elsewhere, hostsprobe.Host, "hosts.toml")); err != nil {
		t.Errorf("probe hosts.toml not written: %v", err)
	}
	stopWrong()

	right, _ := startAgent(t, kube, ctd.HostsDir(), ctd.ConfigPath(), ctd.Socket())
	rig.WaitFor(t, 60*time.Second, "startup taint removed after the live probe", func() (bool, string) {
		keys := nodeTaints(t, kube)
		return !slices.Contains(keys, startuptaint.DefaultKey), fmt.Sprintf("taints %v, probe failures %v",
			keys, testutil.ToFloat64(right.gate.probeFailed))
	})
	// The next rebuild (any Tag change) drops the probe's hosts.toml.
	rig.CreateTag(t, kube.Client, rig.NewTag("trigger", "registry.example:5000/team/other:v1"))
	probeDir := filepath.Join(ctd.HostsDir(), hostsprobe.Host)
	rig.WaitFor(t, 30*time.Second, "probe hosts.toml removed after the gate", func() (bool, string) {
		_, err := os.Stat(probeDir)
		return os.IsNotExist(err), fmt.Sprint(err)
	})
}

// On a node that never had the taint (the default-on chart on a cluster
// whose nodes do not register with it) the gate reads the Node and writes
// nothing.
func TestStartupGateUntaintedNode(t *testing.T) {
	kube := rig.NewKube(t)
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: gateNode}}
	if err := kube.Client.Create(t.Context(), node); err != nil {
		t.Fatal(err)
	}
	hostsDir := t.TempDir()
	a, _ := startAgent(t, kube, hostsDir, containerdConfig(t, hostsDir, true), "")
	rig.WaitFor(t, 30*time.Second, "tagger_startup_taint_cleared = 1", func() (bool, string) {
		return testutil.ToFloat64(a.gate.cleared) == 1, fmt.Sprint(a.NotReady())
	})
	var after corev1.Node
	if err := kube.Client.Get(t.Context(), client.ObjectKey{Name: gateNode}, &after); err != nil {
		t.Fatal(err)
	}
	if after.ResourceVersion != node.ResourceVersion {
		t.Errorf("untainted node written: resourceVersion %s -> %s", node.ResourceVersion, after.ResourceVersion)
	}
}
