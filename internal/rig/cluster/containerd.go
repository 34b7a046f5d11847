package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/apimachinery/pkg/util/wait"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// containerdConfig is the node's containerd config (version 3, as
// docs/local-cluster.md). Everything containerd keeps is inside the
// cluster's directories: root and content in the test dir; state, sockets,
// shim sockets, runc state and network namespaces under the short run dir.
var containerdConfig = template.Must(template.New("containerd").Parse(`# clustertest node containerd
version = 3
root = '{{.Root}}'
state = '{{.State}}'

[grpc]
  address = '{{.Socket}}'

[ttrpc]
  address = '{{.Socket}}.ttrpc'

[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'

    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = '{{.PauseImage}}'

    [plugins.'io.containerd.cri.v1.images'.registry]
      config_path = '{{.HostsDir}}'

  [plugins.'io.containerd.cri.v1.runtime']
    # The sandbox has no CAP_SYS_RESOURCE: without this runc fails with
    # "failed to update /proc/self/oom_score_adj: Permission denied".
    restrict_oom_score_adj = true
    # Network namespaces under state, not the machine's /var/run/netns.
    netns_mounts_under_state_dir = true
    cdi_spec_dirs = []

    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'

      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'

        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = '{{.Runc}}'
          Root = '{{.RuncRoot}}'
          SystemdCgroup = false

    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['{{.CNIBinDir}}']
      conf_dir = '{{.CNIConfDir}}'
      max_conf_num = 1

  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = '127.0.0.1'
    stream_server_port = '0'

  [plugins.'io.containerd.transfer.v1.local']
    config_path = '{{.HostsDir}}'

  [plugins.'io.containerd.shim.v1.manager']
    # Default is the machine-wide /run/containerd/s.
    socket_dir = '{{.ShimSocketDir}}'

  [plugins.'io.containerd.nri.v1.nri']
    # Its default socket is the machine-wide /var/run/nri/nri.sock.
    disable = true

  [plugins.'io.containerd.internal.v1.opt']
    path = '{{.Opt}}'
`))

func (c *Cluster) writeContainerdConfig() error {
	dir := filepath.Join(c.dir, "containerd")
	cniConf := filepath.Join(dir, "net.d")
	for _, d := range []string{dir, cniConf} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("containerd config: %w", err)
		}
	}
	conflist, err := json.MarshalIndent(map[string]any{
		"cniVersion": "1.0.0",
		"name":       c.net.Name,
		"plugins": []any{
			map[string]any{
				"type":        "bridge",
				"bridge":      c.net.Bridge,
				"isGateway":   true,
				"ipMasq":      false, // no iptables rules: pods only talk to the node and each other
				"hairpinMode": true,
				"ipam": map[string]any{
					"type":    "host-local",
					"ranges":  [][]map[string]string{{{"subnet": c.net.Subnet}}},
					"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
					"dataDir": filepath.Join(c.dir, "cni-ipam"),
				},
			},
		},
	}, "", "  ")
	if err != nil {
		return fmt.Errorf("encode CNI conflist: %w", err)
	}
	if err := os.WriteFile(filepath.Join(cniConf, "10-clustertest.conflist"), conflist, 0o644); err != nil {
		return fmt.Errorf("write CNI conflist: %w", err)
	}
	var b strings.Builder
	if err := containerdConfig.Execute(&b, map[string]string{
		"Root":          filepath.Join(dir, "root"),
		"State":         filepath.Join(c.runDir, "state"),
		"Socket":        c.ContainerdSocket(),
		"PauseImage":    c.opts.PauseImage,
		"HostsDir":      c.hostsDir,
		"Runc":          c.runc,
		"RuncRoot":      filepath.Join(c.runDir, "runc"),
		"CNIBinDir":     c.cniBinDir,
		"CNIConfDir":    cniConf,
		"ShimSocketDir": filepath.Join(c.runDir, "s"),
		"Opt":           filepath.Join(dir, "opt"),
	}); err != nil {
		return fmt.Errorf("render containerd config: %w", err)
	}
	if err := os.WriteFile(c.ContainerdConfigPath(), []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write containerd config: %w", err)
	}
	return nil
}

// startContainerd starts containerd, waits for its CRI service, and imports
// the pause image into the k8s.io namespace.
func (c *Cluster) startContainerd(ctx context.Context) error {
	if err := c.writeContainerdConfig(); err != nil {
		return err
	}
	p, err := startProc(c.logDir, "containerd", filepath.Join(c.bin, "containerd"),
		[]string{"--config", c.ContainerdConfigPath()}, c.env(), c.dir)
	if err != nil {
		return err
	}
	c.setProc(&c.containerd, p)
	var last error
	err = wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		if p.exited() {
			return false, p.exitError()
		}
		last = c.withCRI(ctx, func(ctx context.Context, conn *grpc.ClientConn) error {
			_, err := runtimeapi.NewRuntimeServiceClient(conn).Version(ctx, &runtimeapi.VersionRequest{})
			return err
		})
		return last == nil, nil
	})
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return fmt.Errorf("containerd CRI not answering (%v); log %s:\n%s", last, p.logPath, p.tail(4<<10))
		}
		return err
	}
	return c.importPauseImage(ctx)
}

// importPauseImage builds the pause image (the waiter program, no
// arguments) and imports it with ctr, under the name containerd pins as
// its sandbox image, so no pod start ever pulls it.
func (c *Cluster) importPauseImage(ctx context.Context) error {
	img, err := buildImage("pause", nil)
	if err != nil {
		return fmt.Errorf("pause image: %w", err)
	}
	archive := filepath.Join(c.dir, "pause.tar")
	if err := writeOCIArchive(archive, c.opts.PauseImage, img); err != nil {
		return fmt.Errorf("pause image: %w", err)
	}
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, "ctr"), "--address", c.ContainerdSocket(),
		"--namespace", "k8s.io", "images", "import", archive)
	cmd.Env = c.env()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("import pause image: ctr: %v: %s", err, out)
	}
	// The kubelet never pulls the sandbox image, so the CRI must see it. It
	// learns about imported images from containerd's events, a moment later.
	var last error
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
		last = c.withCRI(ctx, func(ctx context.Context, conn *grpc.ClientConn) error {
			resp, err := runtimeapi.NewImageServiceClient(conn).ImageStatus(ctx, &runtimeapi.ImageStatusRequest{
				Image: &runtimeapi.ImageSpec{Image: c.opts.PauseImage},
			})
			if err != nil {
				return fmt.Errorf("pause image status: %w", err)
			}
			if resp.Image == nil {
				return fmt.Errorf("pause image %s imported but the CRI does not list it", c.opts.PauseImage)
			}
			return nil
		})
		return last == nil, nil
	})
	if err != nil {
		return fmt.Errorf("%w (%v)", last, err)
	}
	return nil
}

// withCRI calls fn with a connection to containerd's CRI socket.
func (c *Cluster) withCRI(ctx context.Context, fn func(context.Context, *grpc.ClientConn) error) error {
	conn, err := grpc.NewClient("unix://"+c.ContainerdSocket(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("dial containerd: %w", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return fn(ctx, conn)
}

// removeAllPods stops and removes every pod sandbox through the CRI, as
// `crictl rmp -fa` does, so containerd stops the pods' shims.
func (c *Cluster) removeAllPods(ctx context.Context) error {
	return c.withCRI(ctx, func(ctx context.Context, conn *grpc.ClientConn) error {
		rt := runtimeapi.NewRuntimeServiceClient(conn)
		resp, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
		if err != nil {
			return fmt.Errorf("list pod sandboxes: %w", err)
		}
		var errs []error
		for _, sb := range resp.Items {
			if _, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
				errs = append(errs, fmt.Errorf("stop pod sandbox %s (%s/%s): %w", sb.Id, sb.Metadata.GetNamespace(), sb.Metadata.GetName(), err))
				continue
			}
			if _, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
				errs = append(errs, fmt.Errorf("remove pod sandbox %s (%s/%s): %w", sb.Id, sb.Metadata.GetNamespace(), sb.Metadata.GetName(), err))
			}
		}
		return errors.Join(errs...)
	})
}
