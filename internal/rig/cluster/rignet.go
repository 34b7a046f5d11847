package cluster

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strings"
)

// rigNet is the address plan of a multi-node cluster: one private /16 that
// no address or route of the machine overlaps, used for nothing else.
//
//	10.B.0.1/24       the host end: the cluster bridge (apiserver, test registries)
//	10.B.0.(10+i)     node i's eth0, in its own network namespace
//	10.B.(i+1).0/24   node i's pod CIDR (its CNI bridge inside the node)
//	10.B.240.0/20     the Service CIDR (10.B.240.1 kubernetes, 10.B.240.10 DNS)
//
// Nodes have no default route, so a packet for any other address is
// dropped in the node; the host's filter chain (forwardChain) also drops
// anything of the range that would leave through another interface.
type rigNet struct {
	Prefix string `json:"prefix"` // "10.B"
	Bridge string `json:"bridge"` // host bridge, also the forward chain's suffix
}

const maxNodes = 200

func (n rigNet) cidr() string        { return n.Prefix + ".0.0/16" }
func (n rigNet) hostIP() string      { return n.Prefix + ".0.1" }
func (n rigNet) nodeIP(i int) string { return fmt.Sprintf("%s.0.%d", n.Prefix, 10+i) }
func (n rigNet) podCIDR(i int) string {
	return fmt.Sprintf("%s.%d.0/24", n.Prefix, i+1)
}
func (n rigNet) serviceCIDR() string  { return n.Prefix + ".240.0/20" }
func (n rigNet) apiServiceIP() string { return n.Prefix + ".240.1" }
func (n rigNet) dnsIP() string        { return n.Prefix + ".240.10" }
func (n rigNet) chain() string        { return "TGCT-" + strings.TrimPrefix(n.Bridge, "tgct") }

// pickRigNet picks a /16 in 10.208.0.0/12 (single-node clusters pick /24s
// in 10.200.0.0/13, so the two never meet) that the machine does not use.
func pickRigNet(id string) (rigNet, error) {
	used := machineNets()
	for _, b := range rand.Perm(16) {
		_, cand, _ := net.ParseCIDR(fmt.Sprintf("10.%d.0.0/16", 208+b))
		if !overlapsAny(cand, used) {
			return rigNet{Prefix: fmt.Sprintf("10.%d", 208+b), Bridge: "tgct" + id}, nil
		}
	}
	return rigNet{}, errors.New("pick the cluster's /16: every candidate in 10.208.0.0/12 overlaps this machine's networks")
}

// run runs a host tool and says what failed.
func run(name string, args ...string) error {
	out, err := exec.Command(lookPath(name), args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// createHostSide makes the bridge with the host's address and the filter
// chain that keeps the range on the bridge.
func (n rigNet) createHostSide() error {
	steps := [][]string{
		{"ip", "link", "add", "name", n.Bridge, "type", "bridge"},
		{"ip", "addr", "add", n.hostIP() + "/24", "dev", n.Bridge},
		{"ip", "link", "set", n.Bridge, "up"},
		{"iptables", "-w", "-N", n.chain()},
		// Node to node across the bridge is bridged traffic that
		// br_netfilter shows to FORWARD: accept it whatever the policy.
		{"iptables", "-w", "-A", n.chain(), "-i", n.Bridge, "-o", n.Bridge, "-j", "ACCEPT"},
		// Anything else of the range being forwarded would leave the rig.
		{"iptables", "-w", "-A", n.chain(), "-s", n.cidr(), "-j", "DROP"},
		{"iptables", "-w", "-A", n.chain(), "-d", n.cidr(), "-j", "DROP"},
		{"iptables", "-w", "-I", "FORWARD", "1", "-j", n.chain()},
	}
	for _, s := range steps {
		if err := run(s[0], s[1:]...); err != nil {
			return fmt.Errorf("cluster network: %w", err)
		}
	}
	return nil
}

// removeHostSide deletes the filter chain and the bridge (with the veths
// still on it, and the routes through it).
func (n rigNet) removeHostSide() error {
	var errs []error
	if n.Bridge == "" {
		return nil
	}
	if run("iptables", "-w", "-S", n.chain()) == nil {
		for run("iptables", "-w", "-D", "FORWARD", "-j", n.chain()) == nil {
		}
		if err := run("iptables", "-w", "-F", n.chain()); err != nil {
			errs = append(errs, err)
		}
		if err := run("iptables", "-w", "-X", n.chain()); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := os.Stat("/sys/class/net/" + n.Bridge); err == nil {
		errs = append(errs, deleteBridge(n.Bridge))
	}
	return errors.Join(errs...)
}

// hostSideLeftovers lists what removeHostSide would remove.
func (n rigNet) hostSideLeftovers() []string {
	var left []string
	if n.Bridge == "" {
		return nil
	}
	if _, err := os.Stat("/sys/class/net/" + n.Bridge); err == nil {
		left = append(left, "bridge "+n.Bridge)
	}
	if run("iptables", "-w", "-S", n.chain()) == nil {
		left = append(left, "iptables chain "+n.chain())
	}
	return left
}
