package rig

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// cleanLeftovers removes what a stopped daemon can leave outside its root.
// The rig starts no containers, so normally there is nothing; but a test may
// use the socket with crictl, and a shim outlives containerd by design.
//   - Processes whose command line names the rig's socket directory are
//     shims (started with -address <our socket>) or clients of this daemon:
//     they are killed by pid, and so are the shims' children (container
//     init processes, which a killed shim would orphan). Shim sockets live in
//     socket_dir, inside the rig's directory, not in /run/containerd/s.
//
// Stop first deletes tasks through the daemon (removeTasks), which is the
// clean way; this is for a daemon that died or would not answer.
//   - Mounts under the rig's directories (overlayfs snapshots, shim rootfs)
//     are detached, deepest first, so the temp dirs can be removed.
func (c *Containerd) cleanLeftovers() {
	for _, pid := range c.leftoverPIDs() {
		c.t.Logf("rig containerd: killing leftover process %d of containerd %s", pid, c.sockPath())
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	for _, m := range mountsUnder(c.sockDir, c.root) {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			c.t.Errorf("rig containerd: unmount %s: %v", m, err)
		}
	}
}

func (c *Containerd) leftoverPIDs() []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	needle := []byte(c.sockDir + "/")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if bytes.Contains(cmdline, needle) {
			pids = append(pids, pid)
		}
	}
	// Children first: a shim's container init is reparented once the
	// shim dies, and then nothing points at it any more.
	var children []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, ok := parentPID(pid); ok && slices.Contains(pids, ppid) && !slices.Contains(pids, pid) {
			children = append(children, pid)
		}
	}
	return append(children, pids...)
}

// parentPID reads the parent pid from /proc/<pid>/stat.
func parentPID(pid int) (int, bool) {
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, false
	}
	// pid (comm) state ppid ...; comm may contain spaces and parentheses.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(f[1])
	return ppid, err == nil
}

// mountsUnder lists the mount points below any of dirs, deepest first.
func mountsUnder(dirs ...string) []string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for line := range strings.SplitSeq(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMountinfo(f[4])
		for _, d := range dirs {
			if strings.HasPrefix(mp, d+"/") {
				out = append(out, mp)
				break
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// unescapeMountinfo undoes the octal escapes (\040 for a space, ...) of
// /proc/self/mountinfo paths.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
