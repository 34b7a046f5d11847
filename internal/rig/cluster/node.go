package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/tagger-project/tagger/internal/rig"
)

// NodeOptions configure one node of a multi-node cluster.
type NodeOptions struct {
	// Taints the kubelet registers the node with (--register-with-taints),
	// as a node pool's startup taints do.
	Taints []corev1.Taint
}

// Node is one node of a multi-node cluster: a network namespace (eth0 on
// the cluster bridge), a mount namespace in which the machine paths a
// DaemonSet's hostPath volumes name (/etc/containerd, /run/containerd,
// /var/lib/kubelet, ...) are this node's own directories, a cgroup root,
// and its own containerd, kubelet and kube-proxy.
type Node struct {
	c    *Cluster
	i    int
	name string
	opts NodeOptions

	dir     string // host path of the node's files
	run     string // short host path: containerd's state and socket
	netns   string // ip netns name
	mntns   string // file the mount namespace is bound to
	cgroups cgroupRoot

	mu      sync.Mutex
	kubelet *proc
	proxy   *proc
	ctd     *rig.Containerd
}

// nodeMounts are the machine paths each node sees as its own: source
// directory under the node's dir (or "run" for its run dir) -> path.
var nodeMounts = []struct{ src, dst string }{
	{"etc-containerd", "/etc/containerd"},
	{"run", "/run/containerd"},
	{"var-lib-kubelet", "/var/lib/kubelet"},
	{"var-log-containers", containerLogsDir},
	{"var-lib-cni", "/var/lib/cni"},
	{"run-mount", "/run/mount"},
}

// Name is the node's name.
func (n *Node) Name() string { return n.name }

// IP is the node's address (its InternalIP).
func (n *Node) IP() string { return n.c.rnet.nodeIP(n.i) }

// PodCIDR is the subnet the node's pods get addresses from.
func (n *Node) PodCIDR() string { return n.c.rnet.podCIDR(n.i) }

// HostsDir is, on the test machine, the directory the node sees as
// /etc/containerd/certs.d (containerd's config_path there).
func (n *Node) HostsDir() string { return filepath.Join(n.dir, "etc-containerd", "certs.d") }

// ContainerdConfigPath is, on the test machine, the node's
// /etc/containerd/config.toml.
func (n *Node) ContainerdConfigPath() string {
	return filepath.Join(n.dir, "etc-containerd", "config.toml")
}

// Containerd is the node's containerd; its socket works from the test
// process (CRI pulls run in the node, through its hosts.toml).
func (n *Node) Containerd() *rig.Containerd {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ctd
}

// PodLogsDir is the node's kubelet podLogsDir, on the test machine.
func (n *Node) PodLogsDir() string { return filepath.Join(n.dir, "pod-logs") }

// UsePlainHTTP declares the registry at host as plain HTTP on this node
// (see Cluster.UsePlainHTTP).
func (n *Node) UsePlainHTTP(host string) {
	n.c.t.Helper()
	writePlainHTTP(n.c.t, n.HostsDir(), host)
}

// launcher is the command prefix that runs a program inside the node.
func (n *Node) launcher() []string {
	return []string{lookPath("nsenter"), "--net=/run/netns/" + n.netns, "--mount=" + n.mntns, "--"}
}

// start brings the node up: namespaces (on the first start), containerd
// with the rig's images, the kubelet (until the node is Ready), kube-proxy.
func (n *Node) start(ctx context.Context) error {
	if _, err := os.Stat(n.mntns); err != nil {
		if err := n.createNamespaces(); err != nil {
			return fmt.Errorf("node %s: %w", n.name, err)
		}
	}
	if err := n.startContainerd(ctx); err != nil {
		return fmt.Errorf("node %s: %w", n.name, err)
	}
	if err := n.startKubelet(ctx); err != nil {
		return fmt.Errorf("node %s: %w", n.name, err)
	}
	if err := n.startProxy(ctx); err != nil {
		return fmt.Errorf("node %s: %w", n.name, err)
	}
	return nil
}

// createNamespaces makes the node's network namespace (eth0 on the
// cluster bridge, routes to the other nodes' pods and to Services, no
// default route), its mount namespace with the node's directories over the
// machine paths, and its cgroup root.
func (n *Node) createNamespaces() error {
	for _, m := range nodeMounts {
		src := n.mountSource(m.src)
		if err := os.MkdirAll(src, 0o755); err != nil {
			return err
		}
	}
	if err := n.createNetns(); err != nil {
		return err
	}
	if err := os.WriteFile(n.mntns, nil, 0o600); err != nil {
		return fmt.Errorf("mount namespace file: %w", err)
	}
	if err := run("unshare", "--mount="+n.mntns, "--propagation", "private", "true"); err != nil {
		return fmt.Errorf("mount namespace: %w", err)
	}
	for _, m := range nodeMounts {
		if err := run("nsenter", "--mount="+n.mntns, "--", lookPath("mount"), "--bind", n.mountSource(m.src), m.dst); err != nil {
			return fmt.Errorf("mount namespace: %w", err)
		}
	}
	return n.cgroups.create()
}

func (n *Node) mountSource(name string) string {
	if name == "run" {
		return n.run
	}
	return filepath.Join(n.dir, name)
}

func (n *Node) createNetns() error {
	rn := n.c.rnet
	veth := fmt.Sprintf("tgv%s%d", n.c.id, n.i)
	ns := []string{"ip", "-n", n.netns}
	steps := [][]string{
		{"ip", "netns", "add", n.netns},
		{"ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", n.netns},
		{"ip", "link", "set", veth, "master", rn.Bridge, "up"},
		append(ns, "link", "set", "lo", "up"),
		append(ns, "addr", "add", n.IP()+"/24", "dev", "eth0"),
		append(ns, "link", "set", "eth0", "up"),
		// Services: the route only has to exist for the kernel to get to
		// kube-proxy's DNAT in OUTPUT (host-network pods use it).
		append(ns, "route", "add", rn.serviceCIDR(), "dev", "eth0"),
		// The machine answers pods (the apiserver behind the kubernetes
		// Service, test registries) through their node.
		{"ip", "route", "add", n.PodCIDR(), "via", n.IP(), "dev", rn.Bridge},
	}
	for _, s := range steps {
		if err := run(s[0], s[1:]...); err != nil {
			return err
		}
	}
	// Pod routes both ways with every node made before this one (nodes
	// get their namespaces in order).
	for _, o := range n.c.Nodes() {
		if o.i >= n.i {
			continue
		}
		if err := run("ip", "-n", n.netns, "route", "add", o.PodCIDR(), "via", o.IP()); err != nil {
			return err
		}
		if err := run("ip", "-n", o.netns, "route", "add", n.PodCIDR(), "via", n.IP()); err != nil {
			return err
		}
	}
	return nil
}

// startContainerd starts the node's containerd inside the node, its config
// at the node's /etc/containerd/config.toml (where the node agent reads
// it), config_path /etc/containerd/certs.d, its socket at the node's
// /run/containerd/containerd.sock; then imports the pause and CoreDNS images.
func (n *Node) startContainerd(ctx context.Context) error {
	n.mu.Lock()
	ctd := n.ctd
	n.mu.Unlock()
	if ctd != nil {
		if err := ctd.Start(); err != nil {
			return fmt.Errorf("containerd: %w", err)
		}
		return nil
	}
	cniConf, err := writeCNIConfig(filepath.Join(n.dir, "net.d"), filepath.Join(n.dir, "cni-ipam"),
		cniNetwork{Name: "clustertest-" + n.c.id, Bridge: "cni0", Subnet: n.PodCIDR()})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(n.HostsDir(), 0o755); err != nil {
		return err
	}
	ctd, err = rig.StartContainerd(n.c.t, n.c.bin, rig.ContainerdOptions{
		HostsDir:    n.HostsDir(),
		ConfigPath:  "/etc/containerd/certs.d",
		ConfigFile:  n.ContainerdConfigPath(),
		Launcher:    n.launcher(),
		Snapshotter: rig.SnapshotterOverlayfs,
		StateDir:    n.run,
		Root:        filepath.Join(n.dir, "containerd-root"),
		ManualStop:  true,
		Pods: &rig.ContainerdPods{
			Runc:         n.c.runc,
			CNIBinDir:    n.c.cniBinDir,
			CNIConfDir:   cniConf,
			SandboxImage: n.c.opts.PauseImage,
		},
	})
	n.mu.Lock()
	n.ctd = ctd
	n.mu.Unlock()
	if err != nil {
		return fmt.Errorf("containerd: %w", err)
	}
	for _, img := range n.c.nodeImages {
		if err := importImage(ctx, n.c.env(), filepath.Join(n.c.bin, "ctr"), filepath.Join(n.run, "containerd.sock"), img.archive, img.ref); err != nil {
			return err
		}
	}
	return nil
}

// startKubelet starts the node's kubelet inside the node and waits for it
// to report the node Ready.
func (n *Node) startKubelet(ctx context.Context) error {
	started := time.Now()
	kdir := filepath.Join(n.dir, "kubelet")
	if err := os.MkdirAll(kdir, 0o755); err != nil {
		return err
	}
	rn := n.c.rnet
	if err := os.WriteFile(filepath.Join(n.dir, "resolv.conf"), []byte("# the rig's nodes have no DNS of their own\noptions ndots:1\n"), 0o644); err != nil {
		return err
	}
	cfgPath := filepath.Join(kdir, "config.json")
	if err := writeJSON(cfgPath, n.c.kubeletConfig(kubeletSettings{
		address:         n.IP(),
		port:            10250,
		endpoint:        "unix://" + filepath.Join(n.run, "containerd.sock"),
		cgroupRoot:      n.cgroups.Name,
		podLogsDir:      n.PodLogsDir(),
		volumePluginDir: filepath.Join(kdir, "volume-plugins"),
		clusterDNS:      rn.dnsIP(),
		resolvConf:      filepath.Join(n.dir, "resolv.conf"),
	})); err != nil {
		return err
	}
	args := append(n.launcher()[1:], filepath.Join(n.c.bin, "kubelet"),
		"--config="+cfgPath,
		"--kubeconfig="+n.c.kubeconfigs["node-"+n.name],
		"--hostname-override="+n.name,
		"--node-ip="+n.IP(),
		"--root-dir=/var/lib/kubelet",
		"--cert-dir="+filepath.Join(kdir, "pki"),
	)
	if t := taintsFlag(n.opts.Taints); t != "" {
		args = append(args, "--register-with-taints="+t)
	}
	p, err := startProc(n.c.logDir, "kubelet-"+n.name, n.launcher()[0], args, n.c.env(), n.c.dir)
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.kubelet = p
	n.mu.Unlock()
	return n.c.waitNodeReady(ctx, n.name, p, 10250, started)
}

func taintsFlag(ts []corev1.Taint) string {
	var parts []string
	for _, t := range ts {
		parts = append(parts, fmt.Sprintf("%s=%s:%s", t.Key, t.Value, t.Effect))
	}
	return strings.Join(parts, ",")
}

// startProxy starts kube-proxy (iptables mode) inside the node and waits
// until its healthz says it has programmed the Services.
func (n *Node) startProxy(ctx context.Context) error {
	rn := n.c.rnet
	args := append(n.launcher()[1:], filepath.Join(n.c.bin, "kube-proxy"),
		"--kubeconfig="+n.c.kubeconfigs["kube-proxy"],
		"--hostname-override="+n.name,
		"--proxy-mode=iptables",
		"--cluster-cidr="+rn.cidr(),
		// Machine-wide conntrack settings are not a test's to change.
		"--conntrack-max-per-core=0",
		"--conntrack-tcp-timeout-established=0",
		"--conntrack-tcp-timeout-close-wait=0",
		"--healthz-bind-address="+n.IP()+":10256",
		"--metrics-bind-address="+n.IP()+":10249",
	)
	p, err := startProc(n.c.logDir, "kube-proxy-"+n.name, n.launcher()[0], args, n.c.env(), n.c.dir)
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.proxy = p
	n.mu.Unlock()
	return waitHTTP(ctx, p, "http://"+n.IP()+":10256/healthz", nil)
}

// Stop takes the node down as a power-off would: kubelet, every pod,
// containerd and kube-proxy stop; its files and namespaces stay, so Start
// brings the same node back.
func (n *Node) Stop() {
	n.c.t.Helper()
	for _, err := range n.stop() {
		n.c.t.Errorf("clustertest: stop node %s: %v", n.name, err)
	}
}

func (n *Node) stop() []error {
	var errs []error
	n.mu.Lock()
	kubelet, proxy, ctd := n.kubelet, n.proxy, n.ctd
	n.kubelet, n.proxy = nil, nil
	n.mu.Unlock()
	if kubelet != nil {
		if _, err := kubelet.stop(stopGrace); err != nil {
			errs = append(errs, err)
		}
	}
	if ctd != nil && ctd.Running() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if err := removeAllPods(ctx, filepath.Join(n.run, "containerd.sock")); err != nil {
			errs = append(errs, err)
		}
		cancel()
		ctd.Stop()
	}
	if proxy != nil {
		if _, err := proxy.stop(stopGrace); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// Start brings a stopped node back and waits until it is Ready.
func (n *Node) Start() {
	n.c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := n.start(ctx); err != nil {
		n.c.t.Fatalf("clustertest: start node %s: %v", n.name, err)
	}
}

// RestartContainerd restarts the node's containerd as a service manager
// would: running containers stay.
func (n *Node) RestartContainerd() {
	n.c.t.Helper()
	if err := n.Containerd().Restart(); err != nil {
		n.c.t.Fatalf("clustertest: restart containerd on %s: %v", n.name, err)
	}
}

// Kill sends SIGKILL to every process in the node whose program is named
// name (e.g. "node-agent") and returns their pids.
func (n *Node) Kill(name string) []int {
	var pids []int
	forEachProcess(func(pid int, argv []string) {
		if len(argv) > 0 && filepath.Base(argv[0]) == name && n.holds(pid) {
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				pids = append(pids, pid)
			}
		}
	})
	return pids
}

// holds reports whether process pid runs in the node's network namespace.
func (n *Node) holds(pid int) bool {
	want, err := os.Stat("/run/netns/" + n.netns)
	if err != nil {
		return false
	}
	got, err := os.Stat("/proc/" + strconv.Itoa(pid) + "/ns/net")
	return err == nil && os.SameFile(want, got)
}

// destroy removes what createNamespaces made; the node's processes must
// be stopped.
func (n *Node) destroy() []error {
	var errs []error
	if err := n.cgroups.remove(); err != nil {
		errs = append(errs, err)
	}
	if n.mntns != "" {
		if err := syscall.Unmount(n.mntns, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", n.mntns, err))
		}
	}
	if _, err := os.Stat("/run/netns/" + n.netns); err == nil {
		if err := run("ip", "netns", "delete", n.netns); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}
