package cluster

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// cniNetwork is the node's pod network: a bridge with its own name and a
// /24 no address of this machine is in.
type cniNetwork struct {
	Name   string // CNI network name, also the prefix of libcni's cache files
	Bridge string
	Subnet string
}

// pickNetwork names the cluster's bridge and picks a /24 in 10.200.0.0/13
// that no address or route of the machine overlaps.
func pickNetwork(id string) (cniNetwork, error) {
	used := machineNets()
	for range 100 {
		_, cand, _ := net.ParseCIDR(fmt.Sprintf("10.%d.%d.0/24", 200+rand.IntN(8), rand.IntN(256)))
		if !overlapsAny(cand, used) {
			return cniNetwork{Name: "clustertest-" + id, Bridge: "ctbr-" + id, Subnet: cand.String()}, nil
		}
	}
	return cniNetwork{}, errors.New("pick a pod subnet: every candidate overlaps this machine's networks")
}

// machineNets lists the machine's interface networks and route destinations.
func machineNets() []*net.IPNet {
	var used []*net.IPNet
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				used = append(used, n)
			}
		}
	}
	return append(used, routes()...)
}

// overlapsAny reports whether cand and any of used share addresses.
func overlapsAny(cand *net.IPNet, used []*net.IPNet) bool {
	for _, u := range used {
		if u.Contains(cand.IP) || cand.Contains(u.IP) {
			return true
		}
	}
	return false
}

// routes reads the IPv4 routing table's destinations.
func routes() []*net.IPNet {
	f, err := os.Open("/proc/net/route")
	if err != nil {
		return nil
	}
	defer f.Close()
	var nets []*net.IPNet
	s := bufio.NewScanner(f)
	s.Scan() // header
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) < 8 {
			continue
		}
		dst, err1 := strconv.ParseUint(f[1], 16, 32)
		mask, err2 := strconv.ParseUint(f[7], 16, 32)
		if err1 != nil || err2 != nil || mask == 0 {
			continue // the default route overlaps everything by definition
		}
		le := func(v uint64) net.IP { return net.IPv4(byte(v), byte(v>>8), byte(v>>16), byte(v>>24)) }
		nets = append(nets, &net.IPNet{IP: le(dst).To4(), Mask: net.IPMask(le(mask).To4())})
	}
	return nets
}

// deleteBridge removes the veths still attached to the cluster's bridge
// and the bridge.
func (c *Cluster) deleteBridge() error {
	if c.net.Bridge == "" {
		return nil
	}
	if _, err := os.Stat(filepath.Join("/sys/class/net", c.net.Bridge)); err != nil {
		return nil
	}
	return deleteBridge(c.net.Bridge)
}

// deleteBridge removes the veths attached to bridge br, then br.
func deleteBridge(br string) error {
	ip := lookPath("ip")
	var errs []error
	ports, _ := os.ReadDir(filepath.Join("/sys/class/net", br, "brif"))
	for _, p := range ports {
		if out, err := exec.Command(ip, "link", "delete", p.Name()).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ip link delete %s: %v: %s", p.Name(), err, out))
		}
	}
	if out, err := exec.Command(ip, "link", "delete", br).CombinedOutput(); err != nil {
		errs = append(errs, fmt.Errorf("ip link delete %s: %v: %s", br, err, out))
	}
	return errors.Join(errs...)
}

// removeCNICache deletes libcni's result cache entries for the cluster's
// network (libcni keeps them in /var/lib/cni whatever containerd's dirs).
func (c *Cluster) removeCNICache() error {
	if c.net.Name == "" {
		return nil
	}
	files, _ := globCNICache(c.net.Name)
	var errs []error
	for _, f := range files {
		if err := os.Remove(f); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// globCNICache lists libcni's cache files of the cluster's network,
// "<network>-<sandbox id>-eth0", and of containerd's loopback network for
// the same sandboxes, "cni-loopback-<sandbox id>-lo".
func globCNICache(network string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(cniResultsDir, network+"-*"))
	if err != nil {
		return nil, err
	}
	var all []string
	for _, f := range files {
		all = append(all, f)
		id := strings.TrimPrefix(filepath.Base(f), network+"-")
		if i := strings.LastIndexByte(id, '-'); i > 0 {
			lo := filepath.Join(cniResultsDir, "cni-loopback-"+id[:i]+"-lo")
			if _, err := os.Lstat(lo); err == nil {
				all = append(all, lo)
			}
		}
	}
	return all, nil
}

const cniResultsDir = "/var/lib/cni/results"
