package cluster

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// kubeletChains are the iptables chains a kubelet makes (filter, nat and
// mangle; IPv4 and IPv6), see pkg/kubelet/kubelet_network_linux.go.
var kubeletChains = []string{"KUBE-FIREWALL", "KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT"}

// removeKubeletChains deletes the jumps to the kubelet's chains and the
// chains themselves from the filter, nat and mangle tables.
func removeKubeletChains(iptables string) error {
	bin := lookPath(iptables)
	if bin == "" {
		return nil
	}
	ours := map[string]bool{}
	for _, ch := range kubeletChains {
		ours[ch] = true
	}
	var errs []error
	for _, table := range []string{"filter", "nat", "mangle"} {
		out, err := exec.Command(bin, "-w", "-t", table, "-S").Output()
		if err != nil {
			continue // no such table for this family, or no iptables support
		}
		var chains []string
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			switch {
			case len(f) == 2 && f[0] == "-N" && ours[f[1]]:
				chains = append(chains, f[1])
			case len(f) >= 4 && f[0] == "-A" && !ours[f[1]] && f[len(f)-2] == "-j" && ours[f[len(f)-1]]:
				args := append([]string{"-w", "-t", table, "-D"}, f[1:]...)
				if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
					errs = append(errs, fmt.Errorf("%s %s: %v: %s", iptables, strings.Join(args, " "), err, out))
				}
			}
		}
		for _, ch := range chains {
			for _, op := range []string{"-F", "-X"} {
				if out, err := exec.Command(bin, "-w", "-t", table, op, ch).CombinedOutput(); err != nil {
					errs = append(errs, fmt.Errorf("%s -t %s %s %s: %v: %s", iptables, table, op, ch, err, out))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// kubeletChainsPresent lists the kubelet's chains that exist, as "iptables/filter/KUBE-FIREWALL".
func kubeletChainsPresent() []string {
	var found []string
	for _, ipt := range []string{"iptables", "ip6tables"} {
		bin := lookPath(ipt)
		if bin == "" {
			continue
		}
		for _, table := range []string{"filter", "nat", "mangle"} {
			out, err := exec.Command(bin, "-w", "-t", table, "-S").Output()
			if err != nil {
				continue
			}
			for _, line := range strings.Split(string(out), "\n") {
				for _, ch := range kubeletChains {
					if strings.Contains(line, ch) {
						found = append(found, ipt+"/"+table+"/"+ch)
						break
					}
				}
			}
		}
	}
	return found
}
