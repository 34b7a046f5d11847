package cluster

import (
	"os"
	"os/exec"
	"path/filepath"
)

// findHostTools locates the Debian-provided pieces (hack/ci-deps.sh
// installs them): runc, the CNI plugins, ip and iptables.
func (c *Cluster) findHostTools() {
	t := c.t
	t.Helper()
	c.runc = c.opts.Runc
	if c.runc == "" {
		c.runc = lookPath("runc")
	}
	if c.runc == "" {
		stopTest(t, "clustertest: no runc: run hack/ci-deps.sh (Debian's runc)")
	}
	c.cniBinDir = c.opts.CNIBinDir
	if c.cniBinDir == "" {
		for _, d := range []string{"/usr/lib/cni", "/opt/cni/bin"} {
			if hasCNIPlugins(d) {
				c.cniBinDir = d
				break
			}
		}
	}
	if !hasCNIPlugins(c.cniBinDir) {
		stopTest(t, "clustertest: no bridge, host-local and loopback CNI plugins in /usr/lib/cni or /opt/cni/bin: run hack/ci-deps.sh (containernetworking-plugins)")
	}
	if lookPath("ip") == "" {
		stopTest(t, "clustertest: no ip command (deletes the pod bridge): run hack/ci-deps.sh (iproute2)")
	}
	if lookPath("iptables") == "" {
		stopTest(t, "clustertest: no iptables (the kubelet makes chains with it, Stop removes them): run hack/ci-deps.sh")
	}
}

func hasCNIPlugins(dir string) bool {
	if dir == "" {
		return false
	}
	for _, p := range []string{"bridge", "host-local", "loopback"} {
		if !isExecutable(filepath.Join(dir, p)) {
			return false
		}
	}
	return true
}

// lookPath finds a command on PATH or in the sbin directories a test's PATH
// may lack.
func lookPath(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		if p := filepath.Join(d, name); isExecutable(p) {
			return p
		}
	}
	return ""
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}
