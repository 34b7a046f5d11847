package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// kubeletConfig is the KubeletConfiguration docs/local-cluster.md explains, verified on
// this machine kind, plus Options.KubeletConfig over it.
func (c *Cluster) kubeletConfig() map[string]any {
	cfg := map[string]any{
		"apiVersion": "kubelet.config.k8s.io/v1beta1",
		"kind":       "KubeletConfiguration",
		// v1.37 refuses cgroup v1 unless told not to.
		"failCgroupV1":             false,
		"cgroupDriver":             "cgroupfs",
		"cgroupRoot":               c.cgroups.Name,
		"failSwapOn":               false,
		"containerRuntimeEndpoint": "unix://" + c.ContainerdSocket(),
		"imageServiceEndpoint":     "unix://" + c.ContainerdSocket(),
		// Loopback only: otherwise the kubelet listens on all addresses and
		// takes the default-route address as the node's.
		"address":      "127.0.0.1",
		"port":         c.kubeletPort,
		"readOnlyPort": 0,
		"healthzPort":  0,
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
		"podLogsDir":                  c.PodLogsDir(),
		"volumePluginDir":             filepath.Join(c.dir, "kubelet", "volume-plugins"),
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
		cfg, err := json.MarshalIndent(c.kubeletConfig(), "", "  ")
		if err != nil {
			return fmt.Errorf("encode kubelet config: %w", err)
		}
		dir := filepath.Join(c.dir, "kubelet")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("kubelet dir: %w", err)
		}
		cfgPath := filepath.Join(dir, "config.json")
		if err := os.WriteFile(cfgPath, cfg, 0o644); err != nil {
			return fmt.Errorf("write kubelet config: %w", err)
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
		if err := c.waitNodeReady(ctx, started); err != nil {
			_, _ = p.stop(stopGrace)
			return err
		}
		return nil
	})
}
