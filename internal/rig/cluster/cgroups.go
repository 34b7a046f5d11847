package cluster

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cgroupRoot is the kubelet's cgroupRoot: a cgroup of its own in every
// hierarchy, so pods of concurrent clusters never share QoS cgroups and Stop
// can remove everything the kubelet and runc made.
type cgroupRoot struct{ Name string }

// hierarchies lists the mounted cgroup (v1) and cgroup2 hierarchies.
func cgroupHierarchies() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var hs []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := s.Text()
		i := strings.Index(line, " - ")
		if i < 0 {
			continue
		}
		post := strings.Fields(line[i+3:])
		pre := strings.Fields(line[:i])
		if len(post) > 0 && len(pre) > 4 && (post[0] == "cgroup" || post[0] == "cgroup2") {
			hs = append(hs, unescapeMount(pre[4]))
		}
	}
	return hs
}

func (r cgroupRoot) create() error {
	for _, h := range cgroupHierarchies() {
		if err := os.Mkdir(filepath.Join(h, r.Name), 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("create cgroup %s in %s: %w", r.Name, h, err)
		}
	}
	return nil
}

// paths lists the cgroup directories under the root in every hierarchy,
// deepest first.
func (r cgroupRoot) paths() []string {
	if r.Name == "" {
		return nil
	}
	var dirs []string
	for _, h := range cgroupHierarchies() {
		root := filepath.Join(h, r.Name)
		var walk func(string)
		walk = func(d string) {
			entries, err := os.ReadDir(d)
			if err != nil {
				return
			}
			for _, e := range entries {
				if e.IsDir() {
					walk(filepath.Join(d, e.Name()))
				}
			}
			dirs = append(dirs, d)
		}
		walk(root)
	}
	return dirs
}

// remove kills whatever still runs in the cluster's cgroups (pod processes
// whose shim is gone) and removes them.
func (r cgroupRoot) remove() error {
	dirs := r.paths()
	for _, d := range dirs {
		b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	var errs []error
	for _, d := range dirs {
		var err error
		for range 50 { // a killed process leaves its cgroup a moment later
			if err = syscall.Rmdir(d); err == nil || errors.Is(err, syscall.ENOENT) {
				err = nil
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}
