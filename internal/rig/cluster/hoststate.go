package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// hostStateDir holds what clusters share on the machine: a registration
// per running cluster, and the sysctl values from before the first of them
// started, which the last one to stop restores.
const hostStateDir = "/run/tagger-clustertest"

// sysctls are the settings the kubelet (setupKernelTunables, unless
// protectKernelDefaults) and the CNI bridge (ip_forward, as the pods'
// gateway) change on the machine.
var sysctls = []string{
	"vm/overcommit_memory",
	"vm/panic_on_oom",
	"kernel/panic",
	"kernel/panic_on_oops",
	"kernel/keys/root_maxkeys",
	"kernel/keys/root_maxbytes",
	"net/ipv4/ip_forward",
}

// hostSnapshot is what was on the machine before the first cluster started.
type hostSnapshot struct {
	Sysctls map[string]string `json:"sysctls"`
	// Existed says which of machinePaths were there.
	Existed map[string]bool `json:"existed"`
}

// machinePaths are directories outside the cluster's own that its
// components create at fixed locations: the kubelet's device plugin socket
// dir (/var/lib/kubelet/device-plugins, not configurable) and log symlinks,
// libcni's result cache, libmount's utab dir (the kubelet runs mount(8)
// for tmpfs volumes), the default flex volume dir. The last cluster to stop
// removes those that did not exist before the first started.
// Multi-node clusters also create /etc/containerd and /run/containerd,
// empty directories their nodes bind their own over, and `ip netns`
// makes /run/netns (a mount point of its own).
var machinePaths = []string{"/var/lib/kubelet", containerLogsDir, "/var/lib/cni", "/run/mount", "/usr/libexec/kubernetes", "/etc/containerd", "/run/containerd", netnsDir}

const netnsDir = "/run/netns"

const containerLogsDir = "/var/log/containers"

// withHostLock runs fn holding an exclusive flock on the shared state dir,
// so two clusters starting or stopping at once do not race.
func withHostLock(fn func() error) error {
	if err := os.MkdirAll(filepath.Join(hostStateDir, "clusters"), 0o755); err != nil {
		return fmt.Errorf("host state dir: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(hostStateDir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("host state lock: %w", err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("host state lock: %w", err)
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return fn()
}

// registration is what a running cluster records in hostStateDir, enough
// for a later cluster to clean up after it if its test process died
// without stopping it (a test timeout kills the components, through
// Pdeathsig, but not the shims, pods, mounts and bridge).
type registration struct {
	PID    int        `json:"pid"`
	Dir    string     `json:"dir"`
	RunDir string     `json:"runDir"`
	Net    cniNetwork `json:"net"`
	Cgroup string     `json:"cgroup"`
	// Multi-node clusters: the network and the nodes.
	Rnet  rigNet       `json:"rnet,omitempty"`
	Nodes []nodeRecord `json:"nodes,omitempty"`
}

// claimHost picks the cluster's pod network and cgroup root, registers the
// cluster on the machine (taking the sysctl snapshot when it is the first,
// cleaning up after clusters whose test process died) and creates the
// cgroup root.
func (c *Cluster) claimHost() error {
	var err error
	if c.opts.Nodes > 0 {
		c.rnet, err = pickRigNet(c.id)
	} else {
		c.net, err = pickNetwork(c.id)
		c.cgroups = cgroupRoot{Name: "/tagger-ct-" + c.id}
	}
	if err != nil {
		return err
	}
	err = withHostLock(func() error {
		c.cleanStale()
		snap := filepath.Join(hostStateDir, "snapshot.json")
		if _, err := os.Stat(snap); errors.Is(err, os.ErrNotExist) {
			s := hostSnapshot{Sysctls: map[string]string{}, Existed: map[string]bool{}}
			for _, k := range sysctls {
				if v, err := readSysctl(k); err == nil {
					s.Sysctls[k] = v
				}
			}
			for _, p := range machinePaths {
				_, err := os.Lstat(p)
				s.Existed[p] = err == nil
			}
			b, _ := json.Marshal(s)
			if err := os.WriteFile(snap, b, 0o600); err != nil {
				return fmt.Errorf("write host snapshot: %w", err)
			}
		}
		c.claimed = true
		return c.writeRegistration()
	})
	if err != nil {
		return err
	}
	if c.cgroups.Name == "" {
		return nil
	}
	return c.cgroups.create()
}

// register updates the cluster's registration (a multi-node cluster's
// nodes change).
func (c *Cluster) register() error {
	return withHostLock(c.writeRegistration)
}

func (c *Cluster) writeRegistration() error {
	b, _ := json.Marshal(registration{PID: os.Getpid(), Dir: c.dir, RunDir: c.runDir, Net: c.net, Cgroup: c.cgroups.Name,
		Rnet: c.rnet, Nodes: c.nodeRecords()})
	return os.WriteFile(filepath.Join(hostStateDir, "clusters", c.id), b, 0o600)
}

// cleanStale cleans up after every registered cluster whose test process
// is gone, and unregisters it. It reports whether other live clusters remain.
// The caller holds the host lock.
func (c *Cluster) cleanStale() (othersAlive bool) {
	dir := filepath.Join(hostStateDir, "clusters")
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Name() == c.id {
			continue
		}
		path := filepath.Join(dir, e.Name())
		b, _ := os.ReadFile(path)
		var r registration
		if err := json.Unmarshal(b, &r); err == nil && processAlive(r.PID) {
			othersAlive = true
			continue
		}
		if r.RunDir != "" {
			stale := &Cluster{t: c.t, id: e.Name(), dir: r.Dir, runDir: r.RunDir, net: r.Net, cgroups: cgroupRoot{Name: r.Cgroup}, rnet: r.Rnet}
			errs := stale.cleanMulti(r.Nodes)
			errs = append(errs, stale.cleanMachine()...)
			for _, err := range errs {
				c.t.Logf("clustertest: cleaning up after dead cluster %s: %v", e.Name(), err)
			}
			c.t.Logf("clustertest: cleaned up after cluster %s, whose test process (pid %d) died without stopping it", e.Name(), r.PID)
		}
		_ = os.Remove(path)
	}
	return othersAlive
}

// releaseHost unregisters the cluster and, when no other cluster is
// registered and no other kubelet runs on the machine, removes the kubelet's
// iptables chains and restores the snapshot, which it returns (nil when it
// left the machine to the clusters still running).
func (c *Cluster) releaseHost() (restored *hostSnapshot, errs []error) {
	err := withHostLock(func() error {
		_ = os.Remove(filepath.Join(hostStateDir, "clusters", c.id))
		if c.cleanStale() {
			return nil // another cluster is still running: it restores
		}
		if pids := kubeletPIDs(); len(pids) > 0 {
			// Someone else's kubelet uses the chains and settings.
			return nil
		}
		for _, ipt := range []string{"iptables", "ip6tables"} {
			if err := removeKubeletChains(ipt); err != nil {
				errs = append(errs, err)
			}
		}
		snapPath := filepath.Join(hostStateDir, "snapshot.json")
		b, err := os.ReadFile(snapPath)
		if err != nil {
			return fmt.Errorf("read host snapshot: %w", err)
		}
		var s hostSnapshot
		if err := json.Unmarshal(b, &s); err != nil {
			return fmt.Errorf("read host snapshot: %w", err)
		}
		restored = &s
		for k, v := range s.Sysctls {
			if cur, err := readSysctl(k); err == nil && cur != v {
				if err := os.WriteFile(filepath.Join("/proc/sys", k), []byte(v), 0o644); err != nil {
					errs = append(errs, fmt.Errorf("restore sysctl %s=%s: %w", k, v, err))
				}
			}
		}
		for _, p := range machinePaths {
			if !s.Existed[p] {
				if err := removeMachinePath(p); err != nil {
					errs = append(errs, err)
				}
			}
		}
		return os.Remove(snapPath)
	})
	if err != nil {
		errs = append(errs, err)
	}
	return restored, errs
}

// removeMachinePath removes a machine path the clusters created. Only the
// kubelet's own /var/lib/kubelet goes whatever it holds (its device plugin
// socket and checkpoint); the others only when nothing but empty
// directories (and an empty utab) is left, so nobody else's files are lost.
func removeMachinePath(p string) error {
	if p == "/var/lib/kubelet" {
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("remove %s: %w", p, err)
		}
		return nil
	}
	if p == netnsDir {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			return fmt.Errorf("unmount %s: %w", p, err)
		}
	}
	if fi, err := os.Stat(filepath.Join(p, "utab")); err == nil && fi.Size() == 0 {
		_ = os.Remove(filepath.Join(p, "utab"))
	}
	removeEmptyDirs(p)
	return nil
}

// removeEmptyDirs removes dir and the directories below it, bottom up, as
// far as they are empty.
func removeEmptyDirs(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.IsDir() {
			removeEmptyDirs(filepath.Join(dir, e.Name()))
		}
	}
	_ = os.Remove(dir) // fails unless empty
}

func readSysctl(key string) (string, error) {
	b, err := os.ReadFile(filepath.Join("/proc/sys", key))
	return strings.TrimSpace(string(b)), err
}

func processAlive(pid int) bool {
	return pid > 0 && syscall.Kill(pid, 0) == nil
}

// kubeletPIDs lists the kubelet processes running on the machine.
func kubeletPIDs() []int {
	var pids []int
	forEachProcess(func(pid int, argv []string) {
		if len(argv) > 0 && filepath.Base(argv[0]) == "kubelet" {
			pids = append(pids, pid)
		}
	})
	return pids
}

// forEachProcess calls fn with every process's pid and command line.
func forEachProcess(fn func(pid int, argv []string)) {
	entries, _ := os.ReadDir("/proc")
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		fn(pid, strings.Split(strings.TrimRight(string(b), "\x00"), "\x00"))
	}
}
