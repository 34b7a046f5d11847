package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// teardown stops everything and cleans up, in docs/local-cluster.md's order, and
// returns every error on the way (it does not stop at the first).
func (c *Cluster) teardown() []error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	stop := func(p *proc) {
		if p == nil {
			return
		}
		killed, err := p.stop(stopGrace)
		add(err)
		if killed {
			c.t.Logf("clustertest: %s (pid %d) needed SIGKILL", p.name, p.Pid())
		}
	}
	c.mu.Lock()
	kubelet, ctd := c.kubelet, c.ctd
	controlPlane := []*proc{c.scheduler, c.controllerManager, c.apiserver, c.etcd}
	c.mu.Unlock()

	// A multi-node cluster's nodes first: each kubelet, its pods, containerd.
	errs = append(errs, c.teardownNodes()...)
	// The kubelet first, or it restarts the pods we remove.
	stop(kubelet)
	if ctd != nil && ctd.Running() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		add(removeAllPods(ctx, c.ContainerdSocket()))
		cancel()
	}
	if ctd != nil {
		ctd.Stop() // reports its own errors to the test
	}
	for _, p := range controlPlane {
		stop(p)
	}
	errs = append(errs, c.cleanMachine()...)
	errs = append(errs, c.cleanMulti(c.nodeRecords())...)
	if c.claimed {
		restored, herrs := c.releaseHost()
		errs = append(errs, herrs...)
		c.hostRestored = restored
	}
	return errs
}

// cleanMachine removes what the cluster's processes leave once they are
// stopped (or dead): shims that outlived containerd, pod processes, cgroups,
// mounts, the run dir with the network namespaces, the bridge, libcni's
// cache entries and the kubelet's log symlinks.
func (c *Cluster) cleanMachine() []error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	if killed, err := c.killShims(); err != nil {
		add(err)
	} else if len(killed) > 0 && c.t != nil {
		c.t.Logf("clustertest: killed %d containerd shim(s) that outlived their pods: %v", len(killed), killed)
	}
	// Anything still in the cluster's cgroups is a pod process whose shim
	// did not stop it.
	add(c.cgroups.remove())
	add(unmountUnder(c.dir, c.runDir))
	if c.runDir != "" {
		// Sockets, runc state and the (now unmounted) network namespace files.
		add(os.RemoveAll(c.runDir))
	}
	add(c.deleteBridge())
	add(c.removeCNICache())
	add(c.removeLogSymlinks())
	return errs
}

// shimPIDs lists the runc shims serving this cluster's containerd.
func (c *Cluster) shimPIDs() []int {
	var pids []int
	sock := c.ContainerdSocket()
	forEachProcess(func(pid int, argv []string) {
		if len(argv) == 0 || !strings.HasPrefix(lastElem(argv[0]), "containerd-shim") {
			return
		}
		for _, a := range argv {
			if a == sock || strings.HasPrefix(a, c.runDir+"/") {
				pids = append(pids, pid)
				return
			}
		}
	})
	return pids
}

// killShims kills shims that outlived containerd (all their pods were removed,
// so they should have exited) and returns their pids.
func (c *Cluster) killShims() ([]int, error) {
	if c.runDir == "" {
		return nil, nil
	}
	pids := c.shimPIDs()
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && len(c.shimPIDs()) > 0 {
		time.Sleep(50 * time.Millisecond)
	}
	if left := c.shimPIDs(); len(left) > 0 {
		return pids, fmt.Errorf("containerd shims %v still running after SIGKILL", left)
	}
	return pids, nil
}

// leftovers lists what a stopped cluster left on the machine: none of it
// should exist.
func (c *Cluster) leftovers() []string {
	var left []string
	c.mu.Lock()
	procs := []*proc{c.etcd, c.apiserver, c.controllerManager, c.scheduler, c.kubelet}
	ctd := c.ctd
	c.mu.Unlock()
	if ctd != nil && ctd.Running() {
		left = append(left, "containerd "+ctd.Address())
	}
	for _, p := range procs {
		if p != nil && !p.exited() {
			left = append(left, fmt.Sprintf("process %s (pid %d)", p.name, p.Pid()))
		}
	}
	forEachProcess(func(pid int, argv []string) {
		cmd := strings.Join(argv, " ")
		if (c.runDir != "" && strings.Contains(cmd, c.runDir)) || (c.dir != "" && strings.Contains(cmd, c.dir)) {
			left = append(left, fmt.Sprintf("process %d: %s", pid, cmd))
		}
	})
	for _, m := range mountsUnder(c.dir, c.runDir) {
		left = append(left, "mount "+m)
	}
	if c.runDir != "" {
		if _, err := os.Stat(c.runDir); err == nil {
			left = append(left, "directory "+c.runDir)
		}
	}
	if c.net.Bridge != "" {
		if _, err := os.Stat("/sys/class/net/" + c.net.Bridge); err == nil {
			left = append(left, "bridge "+c.net.Bridge)
		}
	}
	left = append(left, c.rnet.hostSideLeftovers()...)
	for _, n := range c.Nodes() {
		if _, err := os.Stat("/run/netns/" + n.netns); err == nil {
			left = append(left, "network namespace "+n.netns)
		}
		for _, d := range n.cgroups.paths() {
			left = append(left, "cgroup "+d)
		}
		for _, p := range []*proc{n.kubelet, n.proxy} {
			if p != nil && !p.exited() {
				left = append(left, fmt.Sprintf("process %s (pid %d)", p.name, p.Pid()))
			}
		}
	}
	for _, d := range c.cgroups.paths() {
		left = append(left, "cgroup "+d)
	}
	if c.net.Name != "" {
		if files, _ := globCNICache(c.net.Name); len(files) > 0 {
			left = append(left, "CNI cache "+strings.Join(files, " "))
		}
	}
	if s := c.hostRestored; s != nil {
		for _, ch := range kubeletChainsPresent() {
			left = append(left, "iptables chain "+ch)
		}
		for k, v := range s.Sysctls {
			if cur, err := readSysctl(k); err == nil && cur != v {
				left = append(left, fmt.Sprintf("sysctl %s=%s (was %s)", k, cur, v))
			}
		}
		for _, p := range machinePaths {
			if _, err := os.Lstat(p); err == nil && !s.Existed[p] {
				left = append(left, "path "+p)
			}
		}
	}
	return left
}

func lastElem(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[i+1:]
	}
	return p
}

// removeLogSymlinks deletes the kubelet's /var/log/containers links into
// this cluster's podLogsDir (that directory is fixed in the kubelet).
func (c *Cluster) removeLogSymlinks() error {
	links, _ := filepath.Glob(filepath.Join(containerLogsDir, "*.log"))
	var errs []error
	for _, l := range links {
		if target, err := os.Readlink(l); err == nil && strings.HasPrefix(target, c.PodLogsDir()+"/") {
			if err := os.Remove(l); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
