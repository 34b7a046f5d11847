// Package cluster runs a real single-node Kubernetes cluster for tests:
// etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd
// with runc and a CNI bridge, and a kubelet, all built from source by
// hack/testbin.sh (target kube-full) and all on loopback. It is the place to
// prove what only a kubelet shows: pull policies, the imageID a kubelet
// reports, DaemonSet pods of the node agent.
//
// The cluster needs root, the testbin binaries and a few Debian packages
// (hack/ci-deps.sh). When they are missing a test skips, or fails under
// CI=true (rig.RequireBins semantics). Settings follow the ones verified on
// this machine kind (docs/local-cluster.md): cgroup v1 allowed,
// cgroupfs, containerd with restrict_oom_score_adj, the kubelet on
// 127.0.0.1. The node has no InternalIP, so the apiserver cannot proxy
// logs or exec: read logs with ContainerLog.
//
// Stop leaves the machine as it found it: no processes, mounts, network
// namespaces, bridge, cgroups, kubelet iptables chains or changed sysctls.
// Clusters may run concurrently (each has its own ports, directories,
// bridge, subnet and cgroup root); the machine-wide kubelet chains and
// sysctls are restored by the last one to stop, and a cluster whose test
// process died is cleaned up by the next one to start.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/tagger-project/tagger/internal/rig"
)

// Options configure a Cluster. The zero value is a working cluster.
type Options struct {
	// HostsDir is containerd's CRI registry config_path: the directory of
	// <host>/hosts.toml files the node agent under test writes. Default: a
	// new directory in the test's temp dir.
	HostsDir string
	// PauseImage is the name the rig imports its pause image under (a static
	// Go program that waits for SIGTERM, built by the test) and pins as
	// containerd's sandbox image. Nothing ever pulls it. Default
	// DefaultPauseImage.
	PauseImage string
	// ImagePullCredentialsVerificationPolicy is the kubelet's
	// imagePullCredentialsVerificationPolicy (NeverVerify,
	// NeverVerifyPreloadedImages, NeverVerifyAllowlistedImages,
	// AlwaysVerify). Empty leaves the kubelet's default, which is what users
	// run; a test that needs another policy says so here.
	ImagePullCredentialsVerificationPolicy string
	// NodeName is the node's name (--hostname-override). Default "clustertest-node".
	NodeName string
	// KubeletConfig holds extra KubeletConfiguration fields, set over the
	// rig's own (e.g. {"serializeImagePulls": false}), except address, port,
	// the runtime endpoints, cgroupRoot and podLogsDir, which the rig keeps.
	KubeletConfig map[string]any
	// Runc is the runc binary containerd's runc shim runs. Default: runc
	// from PATH or /usr/sbin (Debian's 1.1.5 works here, see hack/ci-deps.sh).
	Runc string
	// Nodes, when above zero, makes a multi-node cluster: that many nodes,
	// each in network, mount and cgroup namespaces of its own, with
	// kube-proxy on every node, CoreDNS behind the cluster DNS Service and
	// a default StorageClass of hostPath volumes (see docs/local-cluster.md).
	// AddNode adds more. Zero is the single node on loopback.
	Nodes int
	// CNIBinDir holds the bridge, host-local and loopback CNI plugins.
	// Default /usr/lib/cni (Debian's containernetworking-plugins), else /opt/cni/bin.
	CNIBinDir string
}

// DefaultPauseImage is the pause image name when Options.PauseImage is empty.
// The .test domain is reserved: should anything try to pull it, the pull
// fails fast instead of leaving the machine.
const DefaultPauseImage = "tagger.test/clustertest/pause:1"

// Binaries every cluster needs from the testbin directory.
var requiredBins = []string{
	"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet",
	"containerd", "containerd-shim-runc-v2", "ctr",
}

const (
	startTimeout = 3 * time.Minute
	stopGrace    = 15 * time.Second
)

// Cluster is a running single-node cluster. Its files live in a test temp
// dir; its sockets in a short directory under /run (unix socket paths are
// limited to 108 bytes).
type Cluster struct {
	t    testing.TB
	opts Options
	id   string

	dir, runDir, logDir string
	bin                 string // testbin directory
	runc, cniBinDir     string
	hostsDir            string

	pki         *pki
	kubeconfigs map[string]string // component -> kubeconfig path

	etcdPort, etcdPeerPort, apiserverPort, kubeletPort int

	net     cniNetwork
	cgroups cgroupRoot

	mu                                                     sync.Mutex
	etcd, apiserver, controllerManager, scheduler, kubelet *proc
	ctd                                                    *rig.Containerd

	// Multi-node clusters only.
	rnet       rigNet
	nodes      []*Node
	nodeImages []nodeImage
	plainHTTP  []string // UsePlainHTTP hosts, declared on every node

	config *rest.Config
	client kubernetes.Interface

	claimed      bool // registered on the machine (claimHost)
	stopOnce     sync.Once
	hostRestored *hostSnapshot // what Stop restored the machine to, when it was the last kubelet
}

// New starts a cluster and waits until its node is Ready and the default
// ServiceAccount exists (pods are refused before that). The cluster stops
// when the test ends; Stop stops it earlier.
func New(t testing.TB, o Options) *Cluster {
	t.Helper()
	rig.RequireRoot(t)
	c := &Cluster{t: t, opts: o, id: randomHex(4)}
	bins := requiredBins
	if o.Nodes > 0 {
		bins = append(append([]string(nil), requiredBins...), multiBins...)
	}
	c.bin = rig.RequireBins(t, bins...)
	c.findHostTools()

	if c.opts.NodeName == "" {
		c.opts.NodeName = "clustertest-node"
	}
	if c.opts.PauseImage == "" {
		c.opts.PauseImage = DefaultPauseImage
	}
	c.dir = t.TempDir()
	c.logDir = filepath.Join(c.dir, "logs")
	c.hostsDir = o.HostsDir
	if c.hostsDir == "" {
		c.hostsDir = filepath.Join(c.dir, "certs.d")
	}
	for _, d := range []string{c.logDir, c.hostsDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatalf("clustertest: %v", err)
		}
	}
	runDir, err := os.MkdirTemp("/run", "tagger-ct-")
	if err != nil {
		t.Fatalf("clustertest: create run dir: %v", err)
	}
	c.runDir = runDir
	t.Cleanup(c.Stop)

	began := time.Now()
	start := c.start
	if o.Nodes > 0 {
		start = c.startMulti
	}
	if err := start(); err != nil {
		// Stop, a cleanup, prints the tail of every component's log.
		t.Fatalf("clustertest: start: %v", err)
	}
	t.Logf("clustertest: %d node(s) Ready in %v (logs in %s)", max(1, o.Nodes), time.Since(began).Round(100*time.Millisecond), c.logDir)
	return c
}

func (c *Cluster) start() error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := c.writePKI(); err != nil {
		return err
	}
	if err := c.claimHost(); err != nil {
		return err
	}
	if err := c.startEtcd(ctx); err != nil {
		return err
	}
	// containerd does not need the control plane: start it now so its start
	// overlaps the apiserver's.
	ctdErr := make(chan error, 1)
	go func() { ctdErr <- c.startContainerd(ctx) }()
	apiErr := c.startAPIServer(ctx)
	if err := <-ctdErr; err != nil {
		return err
	}
	if apiErr != nil {
		return apiErr
	}
	if err := c.startControllers(); err != nil {
		return err
	}
	if err := c.startKubelet(ctx); err != nil {
		return err
	}
	return c.waitDefaultServiceAccount(ctx)
}

// Config is a rest.Config for the cluster admin (system:masters).
func (c *Cluster) Config() *rest.Config { return rest.CopyConfig(c.config) }

// Client is a clientset authenticated as the cluster admin.
func (c *Cluster) Client() kubernetes.Interface { return c.client }

// KubeconfigPath is a kubeconfig file for the cluster admin (for helm, kubectl).
func (c *Cluster) KubeconfigPath() string { return c.kubeconfigs["admin"] }

// ContainerdSocket is the path of containerd's gRPC socket (CRI and the
// containerd API); use "unix://"+ContainerdSocket() as a CRI endpoint.
func (c *Cluster) ContainerdSocket() string { return filepath.Join(c.runDir, "containerd.sock") }

// HostsDir is containerd's CRI registry config_path.
func (c *Cluster) HostsDir() string { return c.hostsDir }

// ContainerdConfigPath is the containerd config file the cluster runs with
// (the node agent's config check reads it).
func (c *Cluster) ContainerdConfigPath() string {
	return filepath.Join(c.runDir, "config.toml")
}

// NodeName is the name of the cluster's one node.
func (c *Cluster) NodeName() string { return c.opts.NodeName }

// PodLogsDir is the kubelet's podLogsDir. The apiserver cannot proxy logs
// (the node has no InternalIP on loopback): read them here, or with ContainerLog.
func (c *Cluster) PodLogsDir() string { return filepath.Join(c.dir, "pod-logs") }

// PauseImage is the sandbox image name containerd pins.
func (c *Cluster) PauseImage() string { return c.opts.PauseImage }

// Dir is the cluster's working directory (logs, data, the kubelet's root dir).
func (c *Cluster) Dir() string { return c.dir }

// RestartKubelet stops the kubelet and starts it again with the same
// configuration (its image pull records in the root dir survive, as on a
// real node), then waits until it has reported the node Ready again.
func (c *Cluster) RestartKubelet() {
	c.t.Helper()
	c.mu.Lock()
	k := c.kubelet
	c.mu.Unlock()
	if k != nil {
		if _, err := k.stop(stopGrace); err != nil {
			c.t.Fatalf("clustertest: stop kubelet: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	began := time.Now()
	if err := c.startKubelet(ctx); err != nil {
		c.t.Fatalf("clustertest: restart kubelet: %v", err)
	}
	c.t.Logf("clustertest: kubelet restarted, node Ready in %v", time.Since(began).Round(100*time.Millisecond))
}

func (c *Cluster) waitDefaultServiceAccount(ctx context.Context) error {
	err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		_, err := c.client.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, nil
	})
	if err != nil {
		return fmt.Errorf("wait for the default ServiceAccount: %w", err)
	}
	return nil
}

// waitNodeReady waits until node's kubelet (process p, serving on port) has
// posted a Ready condition after since.
func (c *Cluster) waitNodeReady(ctx context.Context, node string, p *proc, port int, since time.Time) error {
	since = since.Truncate(time.Second)
	var last string
	err := wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		if p.exited() {
			return false, p.exitError()
		}
		n, err := c.client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		// This kubelet's port (each start picks a new one) tells its status
		// from a previous kubelet's.
		if got := n.Status.DaemonEndpoints.KubeletEndpoint.Port; got != int32(port) {
			last = fmt.Sprintf("node reports kubelet port %d, not %d yet", got, port)
			return false, nil
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				last = fmt.Sprintf("Ready=%s (%s: %s)", cond.Status, cond.Reason, cond.Message)
				return cond.Status == corev1.ConditionTrue && !cond.LastHeartbeatTime.Time.Before(since), nil
			}
		}
		last = "no Ready condition yet"
		return false, nil
	})
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return fmt.Errorf("node %s not Ready: %s", node, last)
		}
		return err
	}
	return nil
}

// Stop stops the cluster in docs/local-cluster.md's order: kubelet first, then every
// pod through the CRI (so containerd stops its shims), containerd and the
// control plane by PID; then it unmounts what is left under the cluster's
// directories, deletes the network namespaces and the bridge, removes the
// cgroups, and (when no other kubelet runs on the machine) the kubelet's
// iptables chains and the sysctls the kubelet and the bridge changed. It
// reports anything it could not clean up as a test error. Stop is
// idempotent and also runs when the test ends.
func (c *Cluster) Stop() {
	c.stopOnce.Do(func() {
		began := time.Now()
		if c.t.Failed() {
			c.dumpLogs()
		}
		for _, err := range c.teardown() {
			c.t.Errorf("clustertest: stop: %v", err)
		}
		for _, l := range c.leftovers() {
			c.t.Errorf("clustertest: left behind after stop: %s", l)
		}
		c.t.Logf("clustertest: stopped in %v", time.Since(began).Round(100*time.Millisecond))
	})
}

// dumpLogs prints the tail of every component's log.
func (c *Cluster) dumpLogs() {
	c.mu.Lock()
	procs := []*proc{c.etcd, c.apiserver, c.controllerManager, c.scheduler, c.kubelet}
	ctd := c.ctd
	c.mu.Unlock()
	for _, p := range procs {
		if p != nil {
			c.t.Logf("clustertest: %s log %s (tail):\n%s", p.name, p.logPath, p.tail(6<<10))
		}
	}
	if ctd != nil {
		c.t.Logf("clustertest: containerd output (tail):\n%s", lastBytes(ctd.Output(), 6<<10))
	}
}

// lastBytes is the last n bytes of s.
func lastBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails
	return hex.EncodeToString(b)
}

// stopTest ends the test when a machine prerequisite is missing: it fails
// under CI (a skipped rig test would let a broken product land green) and
// skips elsewhere, as rig.RequireBins does.
func stopTest(t testing.TB, format string, args ...any) {
	t.Helper()
	if rig.InCI() {
		t.Fatalf(format+" (CI=true: rig tests fail instead of skipping)", args...)
	}
	t.Skipf(format, args...)
}

// env is the environment of every component: the test's, with the testbin
// directory first on PATH (containerd finds its shim there).
func (c *Cluster) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PATH=") {
			env = append(env, kv)
		}
	}
	return append(env, "PATH="+c.bin+string(os.PathListSeparator)+os.Getenv("PATH"))
}

// UsePlainHTTP writes <HostsDir>/<host>/hosts.toml declaring the registry
// at host ("127.0.0.1:port") as plain HTTP, as a test registry is; without
// it containerd speaks HTTPS to it. A node agent under test may later
// replace the file. On a multi-node cluster every node gets it, also nodes
// added later (before their containerd starts, as a node image would have it).
func (c *Cluster) UsePlainHTTP(host string) {
	c.t.Helper()
	if c.opts.Nodes > 0 {
		c.mu.Lock()
		c.plainHTTP = append(c.plainHTTP, host) // for nodes added later
		c.mu.Unlock()
		for _, n := range c.Nodes() {
			n.UsePlainHTTP(host)
		}
		return
	}
	writePlainHTTP(c.t, c.hostsDir, host)
}

func writePlainHTTP(t testing.TB, hostsDir, host string) {
	t.Helper()
	dir := filepath.Join(hostsDir, host)
	content := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", "http://"+host, "http://"+host)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("clustertest: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(content), 0o644); err != nil {
		t.Fatalf("clustertest: write hosts.toml for %s: %v", host, err)
	}
}
