package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// kubeletSettings are what differs between kubelets: the single node on
// loopback, or a node of a multi-node cluster in its own namespaces.
type kubeletSettings struct {
	address         string
	port            int
	endpoint        string // containerd's CRI socket, "unix://..."
	cgroupRoot      string
	podLogsDir      string
	volumePluginDir string
	clusterDNS      string // empty: no cluster DNS
	resolvConf      string // empty: the kubelet's default
}

// settings are the single node's kubelet settings.
func (c *Cluster) settings() kubeletSettings {
	return kubeletSettings{
		// Loopback only: otherwise the kubelet listens on all addresses and
		// takes the default-route address as the node's.
		address:         "127.0.0.1",
		port:            c.kubeletPort,
		endpoint:        "unix://" + c.ContainerdSocket(),
		cgroupRoot:      c.cgroups.Name,
		podLogsDir:      c.PodLogsDir(),
		volumePluginDir: filepath.Join(c.dir, "kubelet", "volume-plugins"),
	}
}

// kubeletConfig is the KubeletConfiguration docs/local-cluster.md explains, verified on
// this machine kind, plus Options.KubeletConfig over it.
func (c *Cluster) kubeletConfig(s kubeletSettings) map[string]any {
	cfg := map[string]any{
		"apiVersion": "kubelet.config.k8s.io/v1beta1",
		"kind":       "KubeletConfiguration",
		// v1.37 refuses cgroup v1 unless told not to.
		"failCgroupV1":             false,
		"cgroupDriver":             "cgroupfs",
		"cgroupRoot":               s.cgroupRoot,
		"failSwapOn":               false,
		"containerRuntimeEndpoint": s.endpoint,
		"imageServiceEndpoint":     s.endpoint,
		"address":                  s.address,
		"port":                     s.port,
		"readOnlyPort":             0,
		"healthzPort":              0,
		// The shared disk must never make the node evict or collect images.
		"evictionHard": map[string]string{
			"memory.available":   "1Mi",
			"nodefs.available":   "1%",
			"nodefs.inodesFree":  "1%",
			"imagefs.available":  "1%",
			"imagefs.inodesFree": "1%",
		},
		"imageGCHighThresholdPercent": 100,
		"imageGCLowThresholdPercent":  99,
		"podLogsDir":                  s.podLogsDir,
		"volumePluginDir":             s.volumePluginDir,
		"authentication": map[string]any{
			"anonymous": map[string]any{"enabled": false},
			"webhook":   map[string]any{"enabled": true},
			"x509":      map[string]any{"clientCAFile": c.pki.CAFile()},
		},
		"authorization": map[string]any{"mode": "Webhook"},
		// Pods start as soon as the kubelet can; tests wait on events, not time.
		"nodeStatusUpdateFrequency": "2s",
		"syncFrequency":             "10s",
	}
	if s.clusterDNS != "" {
		cfg["clusterDNS"] = []string{s.clusterDNS}
		cfg["clusterDomain"] = "cluster.local"
	}
	if s.resolvConf != "" {
		cfg["resolvConf"] = s.resolvConf
	}
	if c.opts.ImagePullCredentialsVerificationPolicy != "" {
		cfg["imagePullCredentialsVerificationPolicy"] = c.opts.ImagePullCredentialsVerificationPolicy
	}
	rig := map[string]any{}
	for _, k := range []string{"address", "port", "containerRuntimeEndpoint", "imageServiceEndpoint", "cgroupRoot", "podLogsDir"} {
		rig[k] = cfg[k]
	}
	for k, v := range c.opts.KubeletConfig {
		cfg[k] = v
	}
	// The rig relies on these to find and clean up after the kubelet.
	for k, v := range rig {
		cfg[k] = v
	}
	return cfg
}

// startKubelet writes the kubelet's config (on a fresh port when the
// previous one was taken) and starts it, then waits for the node to be Ready.
func (c *Cluster) startKubelet(ctx context.Context) error {
	started := time.Now()
	return startWithPorts(1, func(ports []int) error {
		c.kubeletPort = ports[0]
		dir := filepath.Join(c.dir, "kubelet")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("kubelet dir: %w", err)
		}
		cfgPath := filepath.Join(dir, "config.json")
		if err := writeJSON(cfgPath, c.kubeletConfig(c.settings())); err != nil {
			return err
		}
		p, err := startProc(c.logDir, "kubelet", filepath.Join(c.bin, "kubelet"), []string{
			"--config=" + cfgPath,
			"--kubeconfig=" + c.kubeconfigs["kubelet"],
			"--hostname-override=" + c.opts.NodeName,
			"--root-dir=" + filepath.Join(dir, "root"),
			"--cert-dir=" + filepath.Join(dir, "pki"),
		}, c.env(), c.dir)
		if err != nil {
			return err
		}
		c.setProc(&c.kubelet, p)
		if err := c.waitNodeReady(ctx, c.opts.NodeName, p, c.kubeletPort, started); err != nil {
			_, _ = p.stop(stopGrace)
			return err
		}
		return nil
	})
}

// writeJSON writes v as indented JSON to path.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
