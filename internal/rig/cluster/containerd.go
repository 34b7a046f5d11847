package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/apimachinery/pkg/util/wait"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/tagger-project/tagger/internal/rig"
)

// writeCNIConfig writes a node's one CNI conflist (a bridge of its own,
// host-local addresses from its subnet, IPAM state in ipamDir) into dir and
// returns dir.
func writeCNIConfig(dir, ipamDir string, n cniNetwork) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("CNI config: %w", err)
	}
	conflist, err := json.MarshalIndent(map[string]any{
		"cniVersion": "1.0.0",
		"name":       n.Name,
		"plugins": []any{
			map[string]any{
				"type":        "bridge",
				"bridge":      n.Bridge,
				"isGateway":   true,
				"ipMasq":      false, // no iptables rules: pods only talk to the node and each other
				"hairpinMode": true,
				"ipam": map[string]any{
					"type":    "host-local",
					"ranges":  [][]map[string]string{{{"subnet": n.Subnet}}},
					"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
					"dataDir": ipamDir,
				},
			},
		},
	}, "", "  ")
	if err != nil {
		return "", fmt.Errorf("encode CNI conflist: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "10-clustertest.conflist"), conflist, 0o644); err != nil {
		return "", fmt.Errorf("write CNI conflist: %w", err)
	}
	return dir, nil
}

// startContainerd starts the node's containerd with the rig's launcher
// (configured to run pods, docs/local-cluster.md), everything it keeps in
// the cluster's directories: root in the test dir; state, socket, shim
// sockets, runc state and network namespaces under the short run dir. It
// then imports the pause image into the k8s.io namespace. The cluster stops
// containerd itself, after the kubelet and the pods.
func (c *Cluster) startContainerd(ctx context.Context) error {
	cniConf, err := writeCNIConfig(filepath.Join(c.dir, "containerd", "net.d"), filepath.Join(c.dir, "cni-ipam"), c.net)
	if err != nil {
		return err
	}
	ctd, err := rig.StartContainerd(c.t, c.bin, rig.ContainerdOptions{
		HostsDir:    c.hostsDir,
		Snapshotter: rig.SnapshotterOverlayfs,
		StateDir:    c.runDir,
		Root:        filepath.Join(c.dir, "containerd", "root"),
		ManualStop:  true,
		Pods: &rig.ContainerdPods{
			Runc:         c.runc,
			CNIBinDir:    c.cniBinDir,
			CNIConfDir:   cniConf,
			SandboxImage: c.opts.PauseImage,
		},
	})
	c.mu.Lock()
	c.ctd = ctd
	c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("containerd: %w", err)
	}
	return c.importPauseImage(ctx)
}

// importPauseImage builds the pause image (the waiter program, no
// arguments) and imports it with ctr, under the name containerd pins as
// its sandbox image, so no pod start ever pulls it.
func (c *Cluster) importPauseImage(ctx context.Context) error {
	archive, err := c.pauseArchive()
	if err != nil {
		return err
	}
	return importImage(ctx, c.env(), filepath.Join(c.bin, "ctr"), c.ContainerdSocket(), archive, c.opts.PauseImage)
}

// pauseArchive writes the pause image's OCI archive into the cluster dir.
func (c *Cluster) pauseArchive() (string, error) {
	img, err := buildImage("pause", nil)
	if err != nil {
		return "", fmt.Errorf("pause image: %w", err)
	}
	archive := filepath.Join(c.dir, "pause.tar")
	if err := writeOCIArchive(archive, c.opts.PauseImage, img); err != nil {
		return "", fmt.Errorf("pause image: %w", err)
	}
	return archive, nil
}

// importImage imports an OCI archive holding ref into the k8s.io namespace
// of the containerd at socket, and waits until the CRI lists it (the
// kubelet never pulls an imported image, so the CRI must see it; it learns
// about imports from containerd's events, a moment later).
func importImage(ctx context.Context, env []string, ctr, socket, archive, ref string) error {
	cmd := exec.CommandContext(ctx, ctr, "--address", socket, "--namespace", "k8s.io", "images", "import", archive)
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("import %s: ctr: %v: %s", ref, err, out)
	}
	var last error
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
		last = withCRI(ctx, socket, func(ctx context.Context, conn *grpc.ClientConn) error {
			resp, err := runtimeapi.NewImageServiceClient(conn).ImageStatus(ctx, &runtimeapi.ImageStatusRequest{
				Image: &runtimeapi.ImageSpec{Image: ref},
			})
			if err != nil {
				return fmt.Errorf("image status of %s: %w", ref, err)
			}
			if resp.Image == nil {
				return fmt.Errorf("image %s imported but the CRI does not list it", ref)
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

// withCRI calls fn with a connection to the CRI socket of a containerd.
func withCRI(ctx context.Context, socket string, fn func(context.Context, *grpc.ClientConn) error) error {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("dial containerd: %w", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return fn(ctx, conn)
}

// removeAllPods stops and removes every pod sandbox of the containerd at
// socket through the CRI, as
// `crictl rmp -fa` does, so containerd stops the pods' shims.
func removeAllPods(ctx context.Context, socket string) error {
	return withCRI(ctx, socket, func(ctx context.Context, conn *grpc.ClientConn) error {
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
