// The containerd launcher: NewContainerd runs a real containerd daemon (the binary
// hack/testbin.sh builds) for tests and pulls images through its CRI image
// service, the path kubelet's pulls take, so a test can observe what a node
// really records for a tag.
//
// The daemon serves as an image store only: it has no CNI configuration and
// the rig starts no containers. Its configuration keeps it self-contained
// (root, state, sockets, shim sockets, CNI, netns and runc state dirs all
// live in the test's temp dirs, and the plugins that write to host paths such
// as /opt/containerd or /var/run/nri are disabled), so several can run side
// by side with other rigs on one machine. containerd_config.go explains each setting.

package rig

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containerd/platforms"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Snapshotters the rig knows how to configure.
const (
	// SnapshotterNative copies each layer into a plain directory: no mounts,
	// so it works in every sandbox and leaves nothing mounted behind. It is
	// the default, since the rig only pulls and never runs what it pulled.
	SnapshotterNative = "native"
	// SnapshotterOverlayfs is what real nodes use. It needs overlay mounts
	// (they work on this machine kind, but not in every sandbox).
	SnapshotterOverlayfs = "overlayfs"
)

// ContainerdNamespace is the containerd namespace of the CRI plugin (kubelet's images).
const ContainerdNamespace = "k8s.io"

// ContainerdOptions configure a Containerd. The zero value is a daemon with a fresh,
// empty hosts directory and the native snapshotter.
type ContainerdOptions struct {
	// HostsDir is the CRI registry config_path: containerd reads
	// <HostsDir>/<host[:port]>/hosts.toml on every pull. One directory only
	// (see config). Default: a new temp dir.
	HostsDir string
	// Snapshotter is SnapshotterNative (default) or SnapshotterOverlayfs.
	Snapshotter string
	// LogLevel is containerd's log level; default "info". "debug" also logs
	// which hosts directory each pull loaded and every registry request.
	LogLevel string

	// ConfigPath, when set, is written as the registry config_path verbatim
	// instead of HostsDir (which stays the directory tests write to). It is
	// for reproducing node configurations, e.g. the stock path list
	// HostsDir+":/etc/docker/certs.d", which containerd 2.x's default
	// transfer-service pull does not split, so that no hosts.toml is read.
	ConfigPath string
	// UseLocalImagePull sets use_local_image_pull = true: CRI pulls go
	// through containerd's client-side pull instead of the transfer
	// service, as on nodes that fall back to it.
	UseLocalImagePull bool

	// Pods, when set, configures the CRI runtime to run pods for a kubelet
	// (internal/rig/cluster); without it the daemon is an image store only.
	Pods *ContainerdPods
	// StateDir, when set, is the short directory (unix socket paths are
	// limited to 108 bytes) for the socket, state, shim sockets, runc state
	// and config; the caller owns it. Default: a new directory under /tmp.
	StateDir string
	// Root, when set, is the daemon's root. Default: a test temp dir.
	Root string
	// ConfigFile, when set, is where the daemon's config is written (e.g. a
	// node's /etc/containerd/config.toml, which the node agent reads).
	// Default: config.toml in the state dir.
	ConfigFile string
	// Launcher, when set, is a command prefix the daemon runs under, e.g.
	// nsenter into a cluster node's network and mount namespaces. It must
	// exec the daemon (not fork it), so the pid the rig watches is
	// containerd's.
	Launcher []string
	// ManualStop leaves stopping to the caller instead of a test cleanup,
	// for callers with an order of their own (the cluster stops its kubelet
	// and removes its pods first).
	ManualStop bool
}

// ContainerdPods is what the CRI runtime needs to run pods. The settings
// docs/local-cluster.md explains come with it: restrict_oom_score_adj, runc
// with cgroupfs, one CNI conflist, the pinned sandbox image.
type ContainerdPods struct {
	// Runc is the runc binary the runc shim runs.
	Runc string
	// CNIBinDir holds the CNI plugins; CNIConfDir the network's conflist.
	CNIBinDir, CNIConfDir string
	// SandboxImage is the pause image containerd pins (it is never pulled).
	SandboxImage string
}

const (
	containerdStartTimeout = 30 * time.Second
	containerdStopTimeout  = 10 * time.Second
	containerdProbeTimeout = 2 * time.Second
	containerdOutputMax    = 256 << 10
)

// Containerd is a containerd daemon started by New. Its root (content store,
// image metadata, snapshots) survives Stop/Start.
type Containerd struct {
	t           T
	bin, ctr    string
	binDir      string
	sockDir     string // short dir under /tmp: sockets and state
	root        string
	hostsDir    string
	configPathV string // config_path as written
	localPull   bool
	snapshotter string
	configPath  string
	platform    string
	pods        *ContainerdPods
	launcher    []string

	mu     sync.Mutex
	proc   *Process
	out    *TailBuffer // output of the current or last run
	logged *TailBuffer // the output already logged on failure
	conn   *grpc.ClientConn
	img    runtimeapi.ImageServiceClient
}

// NewContainerd starts a containerd daemon and waits until its CRI image
// service answers; it is stopped, and everything it left is removed, when
// the test ends. It needs root and the containerd, ctr and
// containerd-shim-runc-v2 binaries (RequireBins rules: skip locally, fail
// under CI=true).
func NewContainerd(t T, o ContainerdOptions) *Containerd {
	t.Helper()
	RequireRoot(t)
	c, err := StartContainerd(t, RequireBins(t, "containerd", "ctr", "containerd-shim-runc-v2"), o)
	if err != nil {
		t.Fatalf("rig containerd: %v", err)
	}
	return c
}

// StartContainerd is NewContainerd with the binaries in binDir, returning
// an error instead of failing t, so that it may run outside the test's
// goroutine (the cluster starts containerd beside its apiserver).
func StartContainerd(t T, binDir string, o ContainerdOptions) (*Containerd, error) {
	if o.Snapshotter == "" {
		o.Snapshotter = SnapshotterNative
	}
	if o.Snapshotter != SnapshotterNative && o.Snapshotter != SnapshotterOverlayfs {
		return nil, fmt.Errorf("unsupported snapshotter %q (want %q or %q)", o.Snapshotter, SnapshotterNative, SnapshotterOverlayfs)
	}
	if o.LogLevel == "" {
		o.LogLevel = "info"
	}
	hostsDir, err := containerdHostsDir(t, o.HostsDir)
	if err != nil {
		return nil, err
	}
	sockDir, err := containerdStateDir(t, o.StateDir)
	if err != nil {
		return nil, err
	}
	root := o.Root
	if root == "" {
		root = filepath.Join(t.TempDir(), "root")
	}
	c := &Containerd{
		t:           t,
		bin:         filepath.Join(binDir, "containerd"),
		ctr:         filepath.Join(binDir, "ctr"),
		binDir:      binDir,
		sockDir:     sockDir,
		root:        root,
		hostsDir:    hostsDir,
		configPathV: hostsDir,
		localPull:   o.UseLocalImagePull,
		snapshotter: o.Snapshotter,
		configPath:  filepath.Join(sockDir, "config.toml"),
		platform:    platforms.Format(platforms.Normalize(platforms.DefaultSpec())),
		pods:        o.Pods,
		launcher:    o.Launcher,
	}
	if o.ConfigFile != "" {
		c.configPath = o.ConfigFile
	}
	if o.ConfigPath != "" {
		c.configPathV = o.ConfigPath
	}
	if err := os.WriteFile(c.configPath, []byte(c.config(o.LogLevel)), 0o600); err != nil {
		return nil, fmt.Errorf("write config: %w", err)
	}
	if !o.ManualStop {
		// Registered after the temp dirs, so it runs before they are removed.
		t.Cleanup(c.stopAndLog)
	}
	if err := c.Start(); err != nil {
		return c, err
	}
	return c, nil
}

// stopAndLog stops the daemon and, when the test failed after someone
// stopped it earlier, logs its last output.
func (c *Containerd) stopAndLog() {
	c.Stop()
	if c.t.Failed() {
		c.mu.Lock()
		c.logOutput(c.out)
		c.mu.Unlock()
	}
}

// containerdHostsDir is the hosts directory to configure: dir, or a new
// temp dir. A path list is refused: containerd would take it as several
// directories (and the transfer service would not even split it), so the
// test would test the wrong thing; ContainerdOptions.ConfigPath reproduces
// path lists on purpose.
func containerdHostsDir(t T, dir string) (string, error) {
	if dir == "" {
		dir = filepath.Join(t.TempDir(), "certs.d")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", err
		}
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("hosts dir: %w", err)
	}
	if strings.ContainsRune(abs, os.PathListSeparator) {
		return "", fmt.Errorf("hosts dir %q contains %q", abs, os.PathListSeparator)
	}
	return abs, nil
}

// containerdStateDir is dir, or a new short directory under /tmp removed
// when the test ends: unix socket paths must stay under 108 bytes and the
// shim socket_dir under 42, and t.TempDir() paths embed the test name.
func containerdStateDir(t T, dir string) (string, error) {
	if dir != "" {
		return dir, os.MkdirAll(dir, 0o700)
	}
	dir, err := os.MkdirTemp("/tmp", "ctd")
	if err != nil {
		return "", err
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("rig containerd: remove %s: %v", dir, err)
		}
	})
	return dir, nil
}

// Socket is the daemon's gRPC endpoint, "unix:///tmp/ctd.../containerd.sock",
// as kubelet's --container-runtime-endpoint and crictl take it.
func (c *Containerd) Socket() string { return "unix://" + c.sockPath() }

// Address is the socket path, as ctr -a takes it.
func (c *Containerd) Address() string { return c.sockPath() }

// HostsDir is the registry config_path directory.
func (c *Containerd) HostsDir() string { return c.hostsDir }

// Root is the daemon's root directory (content store, metadata, snapshots).
func (c *Containerd) Root() string { return c.root }

// ConfigPath is the path of the daemon's config.toml.
func (c *Containerd) ConfigPath() string { return c.configPath }

// Platform is the platform containerd pulls for on this node, such as
// "linux/amd64" (normalized, as in an image index).
func (c *Containerd) Platform() string { return c.platform }

// Running reports whether the daemon is up.
func (c *Containerd) Running() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.proc != nil
}

// Output is the tail of the daemon's log (of the current or last run).
func (c *Containerd) Output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.out == nil {
		return ""
	}
	return c.out.String()
}

func (c *Containerd) sockPath() string { return filepath.Join(c.sockDir, "containerd.sock") }

// Start (re)starts a stopped daemon on the same root and configuration and
// waits until its CRI image service answers, which in containerd means the
// CRI plugin has also reloaded the images it had. Starting a running daemon
// does nothing.
func (c *Containerd) Start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc != nil {
		return nil
	}
	out := NewTailBuffer(containerdOutputMax)
	c.out = out
	argv := append(append([]string(nil), c.launcher...), c.bin, "--config", c.configPath)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = c.env()
	p, err := StartProcess(cmd, out)
	if err != nil {
		return fmt.Errorf("start %s: %w", c.bin, err)
	}

	conn, err := grpc.NewClient("unix://"+c.sockPath(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// The socket appears a moment after the process starts; keep the
		// reconnect backoff short so readiness is seen promptly.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.6, MaxDelay: 250 * time.Millisecond},
			MinConnectTimeout: time.Second,
		}),
	)
	if err != nil {
		c.kill(p)
		return fmt.Errorf("dial %s: %w", c.sockPath(), err)
	}
	img := runtimeapi.NewImageServiceClient(conn)
	if err := waitContainerdReady(p, img); err != nil {
		_ = conn.Close()
		c.kill(p)
		c.cleanLeftovers()
		return fmt.Errorf("containerd (config %s): %w; output:\n%s", c.configPath, err, out.String())
	}
	c.proc, c.conn, c.img = p, conn, img
	return nil
}

// waitContainerdReady polls the CRI image service until it answers or the process
// exits. The CRI plugin answers "server is not initialized yet" until it has
// recovered its state, so a success also means earlier images are listed.
func waitContainerdReady(p *Process, img runtimeapi.ImageServiceClient) error {
	ctx, cancel := context.WithTimeout(context.Background(), containerdStartTimeout)
	defer cancel()
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		pctx, pcancel := context.WithTimeout(ctx, containerdProbeTimeout)
		_, err := img.ImageFsInfo(pctx, &runtimeapi.ImageFsInfoRequest{})
		pcancel()
		if err == nil {
			return nil
		}
		if status.Code(err) == codes.Unimplemented {
			// containerd is serving, but without the CRI service: a
			// plugin it needs failed to load, which will not change.
			return fmt.Errorf("the CRI image service is not registered (the CRI plugin failed to load: look for \"failed to load plugin\"): %v", err)
		}
		lastErr = err
		select {
		case <-p.Done():
			return fmt.Errorf("exited (%v) before the CRI image service answered", p.Err())
		case <-ctx.Done():
			return fmt.Errorf("CRI image service not answering after %v: %v", containerdStartTimeout, lastErr)
		case <-tick.C:
		}
	}
}

// Stop stops the daemon (SIGTERM, then SIGKILL after a timeout). It first
// deletes any task (container) through the daemon, and afterwards kills
// leftover shims and detaches mounts under the rig's directories. The root is kept; Start brings the
// daemon back with the same images. Stopping a stopped daemon does nothing.
func (c *Containerd) Stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.proc
	if p == nil {
		return
	}
	c.proc = nil
	select {
	case <-p.Done():
		c.t.Errorf("rig containerd: containerd exited before Stop: %v", p.Err())
	default:
		c.removeTasks()
	}
	if c.conn != nil {
		_ = c.conn.Close()
		c.conn, c.img = nil, nil
	}
	if !p.Terminate(containerdStopTimeout) {
		c.t.Errorf("rig containerd: containerd pid %d still running %v after SIGTERM; killing it", p.Pid(), containerdStopTimeout)
		c.kill(p)
	}
	c.cleanLeftovers()
	if c.t.Failed() {
		c.logOutput(p.Output())
	}
}

// logOutput logs a run's output once.
func (c *Containerd) logOutput(out *TailBuffer) {
	if out == nil || out == c.logged {
		return
	}
	c.logged = out
	c.t.Logf("rig containerd: containerd %s output (tail):\n%s", c.sockPath(), out.String())
}

// removeTasks deletes every task (running container) of the daemon through
// the daemon itself, in all namespaces, so their shims remove the processes,
// mounts, cgroups and runc state they made. The rig runs none; a test may
// have, with crictl or ctr.
func (c *Containerd) removeTasks() {
	ctx, cancel := context.WithTimeout(context.Background(), containerdStopTimeout)
	defer cancel()
	out, err := c.ctrIn(ctx, "default", "namespaces", "ls", "--quiet")
	if err != nil {
		c.t.Errorf("rig containerd: list namespaces before stopping: %v", err)
		return
	}
	for _, ns := range strings.Fields(string(out)) {
		ids, err := c.ctrIn(ctx, ns, "tasks", "ls", "--quiet")
		if err != nil {
			c.t.Errorf("rig containerd: list tasks of namespace %s before stopping: %v", ns, err)
			continue
		}
		for _, id := range strings.Fields(string(ids)) {
			c.t.Logf("rig containerd: deleting task %s/%s before stopping containerd", ns, id)
			if _, err := c.ctrIn(ctx, ns, "tasks", "delete", "--force", id); err != nil {
				c.t.Errorf("rig containerd: %v", err)
			}
		}
	}
}

func (c *Containerd) kill(p *Process) {
	if !p.Kill(containerdStopTimeout) {
		c.t.Errorf("rig containerd: containerd pid %d did not exit %v after SIGKILL", p.Pid(), containerdStopTimeout)
	}
}

// env is the test's environment with the testbin dir first on PATH (the
// daemon starts containerd-shim-runc-v2 from its PATH) and without
// variables that would redirect the daemon or its clients.
func (c *Containerd) env() []string {
	var env []string
	path := c.binDir
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		switch {
		case k == "PATH":
			if v != "" {
				path += string(os.PathListSeparator) + v
			}
		case strings.HasPrefix(k, "CONTAINERD_"), strings.HasPrefix(k, "OTEL_"):
		default:
			env = append(env, kv)
		}
	}
	return append(env, "PATH="+path, "OTEL_SDK_DISABLED=true")
}

// Ctr runs ctr against this daemon in the k8s.io namespace, e.g.
// c.Ctr(ctx, "images", "ls"), and returns its standard output.
func (c *Containerd) Ctr(ctx context.Context, args ...string) ([]byte, error) {
	return c.ctrIn(ctx, ContainerdNamespace, args...)
}

func (c *Containerd) ctrIn(ctx context.Context, ns string, args ...string) ([]byte, error) {
	all := append([]string{"--address", c.sockPath(), "--namespace", ns}, args...)
	cmd := exec.CommandContext(ctx, c.ctr, all...)
	cmd.Env = c.env()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// ImageService is the CRI image service client of the running daemon, for
// calls the helpers do not cover (pulls with credentials, verbose status).
// It is nil while the daemon is stopped and changes on every Start.
func (c *Containerd) ImageService() runtimeapi.ImageServiceClient {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.img
}

func (c *Containerd) images() (runtimeapi.ImageServiceClient, error) {
	if img := c.ImageService(); img != nil {
		return img, nil
	}
	return nil, errors.New("rig containerd: containerd is not running")
}

// Restart stops the daemon the way a service manager restarts it (SIGTERM,
// no task removal: running containers and their shims stay, as on a node
// whose containerd is restarted) and starts it again on the same root and
// configuration, waiting until its CRI image service answers.
func (c *Containerd) Restart() error {
	c.mu.Lock()
	p := c.proc
	c.proc = nil
	if c.conn != nil {
		_ = c.conn.Close()
		c.conn, c.img = nil, nil
	}
	c.mu.Unlock()
	if p != nil && !p.Terminate(containerdStopTimeout) {
		c.kill(p)
	}
	return c.Start()
}
