package cluster

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/internal/rig/cluster"
	"github.com/tagger-project/tagger/pkg/pins"
)

// TestChartNodeAgentPod installs the chart with helm into a real single-node
// cluster and lets the kubelet run its node agent DaemonSet pod from a tagger
// image built the Dockerfile's way (a static binary at /usr/local/bin), with
// the chart's hostNetwork, hostPath mounts, securityContext, probes and
// ServiceAccount. A pod then pulls a pinned, cached tag through that agent
// pod while the upstream is down. `helm uninstall` then stops the agent pod,
// which leaves the node's hosts.toml as tagger wrote it (the next agent would
// take it over), and the uninstall hook's `node-agent cleanup`, as rendered,
// restores the node's file byte for byte. The hook runs on the host here,
// with --no-hooks for helm: its waiter Job needs the apiserver through the
// kubernetes Service, which this rig (apiserver on loopback, no kube-proxy)
// cannot give a pod; test/install runs the hook's binaries and RBAC through
// helm, and the multi-node cluster runs it whole.
//
// Replaced for this rig: the controller runs in-process (the rig has no
// kube-proxy or cluster DNS, so its Deployment is scaled to 0 and
// registry.enabled is off, a local distribution registry standing in), and
// the agent reaches the apiserver through KUBERNETES_SERVICE_HOST/PORT set to
// its loopback address (nodeAgent.extraEnv), as clusters without kube-proxy
// configure host-network pods.
func TestChartNodeAgentPod(t *testing.T) {
	ctx := context.Background()
	cl := cluster.New(t, cluster.Options{})
	cfg := cl.Config()
	c, log := clients(t, cfg)

	// tagger's image, without a Docker engine: the Dockerfile's binary path
	// and user; the chart sets command and runAsUser.
	start := time.Now()
	phase := func(what string) { t.Logf("%5.1fs %s", time.Since(start).Seconds(), what) }
	images := rig.NewRegistry(t, rig.RegistryOptions{})
	cl.UsePlainHTTP(images.Host())
	cluster.PushImage(t, images, "tagger", "test",
		[]cluster.File{{Path: "usr/local/bin/node-agent", Mode: 0o755, Data: staticBinary(t, "node-agent")}},
		ocispec.ImageConfig{User: "65532:65532", Entrypoint: []string{"/usr/local/bin/controller"}})

	phase("tagger image pushed")
	up := rig.NewRegistry(t, rig.RegistryOptions{})
	cl.UsePlainHTTP(up.Host())
	before, err := os.ReadFile(filepath.Join(cl.HostsDir(), up.Host(), "hosts.toml"))
	if err != nil {
		t.Fatal(err)
	}
	image := up.Host() + "/team/app:v1"
	gen1 := cluster.PushRunnableImage(t, up, "team/app", "v1", "chart-generation-1")
	bundled := rig.NewRegistry(t, rig.RegistryOptions{})

	api, err := url.Parse(cfg.Host)
	if err != nil {
		t.Fatal(err)
	}
	mirror := rig.FreeAddr(t)
	values, err := yaml.Marshal(map[string]any{
		"image":      map[string]any{"repository": images.Host() + "/tagger", "tag": "test"},
		"controller": map[string]any{"replicas": 0},
		"registry":   map[string]any{"enabled": false},
		"nodeAgent": map[string]any{
			"listen":              mirror,
			"metricsAddr":         rig.FreeAddr(t),
			"healthAddr":          rig.FreeAddr(t),
			"hostsDir":            cl.HostsDir(),
			"containerdConfig":    cl.ContainerdConfigPath(),
			"containerdSocket":    cl.ContainerdSocket(),
			"registryURL":         bundled.URL(),
			"plainHTTPRegistries": []string{"127.0.0.1:*"},
			"logFormat":           "text",
			"extraEnv": []map[string]string{
				{"name": "KUBERNETES_SERVICE_HOST", "value": api.Hostname()},
				{"name": "KUBERNETES_SERVICE_PORT", "value": api.Port()},
			},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	valuesFile := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(valuesFile, values, 0o600); err != nil {
		t.Fatal(err)
	}
	helm := rig.HelmRunner{Dir: repoRoot(), Home: t.TempDir(), Kubeconfig: cl.KubeconfigPath()}
	if out, err := helm.Run(ctx, "install", "tagger", "deploy/chart/tagger", "--namespace", "tagger-system",
		"--create-namespace", "--values", valuesFile); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	phase("helm install done")
	uninstalled := false
	t.Cleanup(func() {
		if !uninstalled {
			_, _ = helm.Run(context.Background(), "uninstall", "tagger", "--namespace", "tagger-system", "--wait", "--timeout", "1m")
		}
	})

	ds := cl.Client().AppsV1().DaemonSets("tagger-system")
	rig.WaitFor(t, 2*time.Minute, "the chart's node agent pod Ready under the kubelet", func() (bool, string) {
		d, err := ds.Get(ctx, "tagger-node-agent", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		pods, err := cl.Client().CoreV1().Pods("tagger-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=node-agent"})
		state := fmt.Sprintf("desired %d ready %d", d.Status.DesiredNumberScheduled, d.Status.NumberReady)
		if err == nil {
			for i := range pods.Items {
				state += "; pod " + describe(&pods.Items[i])
			}
		}
		return d.Status.DesiredNumberScheduled == 1 && d.Status.NumberReady == 1, state
	})

	phase("node agent pod Ready")
	// The controller, in-process: the CRD came with the chart.
	runController(t, cfg, log, bundled.URL())

	// Pin generation 1 of two, cached; then the upstream goes away.
	tag := &v1alpha1.Tag{ObjectMeta: metav1.ObjectMeta{Name: "app"}, Spec: v1alpha1.TagSpec{Image: image, Cache: true}}
	if err := c.Create(ctx, tag); err != nil {
		t.Fatal(err)
	}
	waitTag(t, c, gen1)
	gen2 := cluster.PushRunnableImage(t, up, "team/app", "v1", "chart-generation-2")
	rig.AnnotateCheck(t, c, "app", "moved")
	waitTag(t, c, gen2)
	rig.PatchTag(t, c, "app", `{"spec":{"generation":1}}`)
	waitTag(t, c, gen1)
	ref, _ := pins.ParseReference(image)
	rig.WaitFor(t, time.Minute, "the agent pod wrote hosts.toml for "+ref.Registry, func() (bool, string) {
		b, err := os.ReadFile(filepath.Join(cl.HostsDir(), ref.Registry, "hosts.toml"))
		return err == nil && string(b) != string(before), string(b)
	})
	// With the upstream gone, the agent pod answers the tag with generation
	// 1's manifest from the bundled registry once its watch has the pin.
	up.Stop()
	u := fmt.Sprintf("http://%s/v2/%s/manifests/%s?ns=%s", mirror, ref.Repository, ref.Tag, ref.Registry)
	rig.WaitFor(t, time.Minute, "the agent pod serves generation 1 from the bundled registry", func() (bool, string) {
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		got := resp.Header.Get("Docker-Content-Digest")
		return resp.StatusCode == http.StatusOK && got == gen1, fmt.Sprintf("%d %s", resp.StatusCode, got)
	})
	phase("generation 1 pinned, cached and served by the agent pod")
	runPod(t, cl, "through-chart-agent", image, corev1.PullAlways, gen1, "chart-generation-1")

	phase("pod ran generation 1 through the agent pod")
	// The hook's cleanup container as helm would create it.
	hook, err := helm.Run(ctx, "get", "hooks", "tagger", "--namespace", "tagger-system")
	if err != nil {
		t.Fatalf("%v\n%s", err, hook)
	}
	cleanupArgs := hookCleanupArgs(t, hook)
	managed, err := os.ReadFile(filepath.Join(cl.HostsDir(), up.Host(), "hosts.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if out, err := helm.Run(ctx, "uninstall", "tagger", "--namespace", "tagger-system", "--wait", "--timeout", "2m", "--no-hooks"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	uninstalled = true
	phase("helm uninstall done")
	// helm deletes the DaemonSet at once; its pod goes after, through the
	// garbage collector and the kubelet.
	rig.WaitFor(t, 2*time.Minute, "node agent DaemonSet and pod gone", func() (bool, string) {
		_, err := ds.Get(ctx, "tagger-node-agent", metav1.GetOptions{})
		pods, perr := cl.Client().CoreV1().Pods("tagger-system").List(ctx, metav1.ListOptions{})
		if perr != nil {
			return false, perr.Error()
		}
		return apierrors.IsNotFound(err) && len(pods.Items) == 0, fmt.Sprintf("DaemonSet: %v, pods left: %d", err, len(pods.Items))
	})
	phase("node agent pod gone")
	left, err := os.ReadFile(filepath.Join(cl.HostsDir(), up.Host(), "hosts.toml"))
	if err != nil || string(left) != string(managed) {
		t.Fatalf("the stopped agent pod did not leave its hosts.toml (%v):\n%s\nwant:\n%s", err, left, managed)
	}
	cmd := exec.Command(rig.Command(t, rig.Race, "node-agent"), cleanupArgs...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("node-agent %q: %v\n%s", cleanupArgs, err, out)
	}
	phase("uninstall hook's cleanup ran")
	after, err := os.ReadFile(filepath.Join(cl.HostsDir(), up.Host(), "hosts.toml"))
	if err != nil || string(after) != string(before) {
		t.Fatalf("hosts.toml after helm uninstall (%v):\n%s\nwant the original:\n%s", err, after, before)
	}
}

// hookCleanupArgs finds the cleanup DaemonSet in `helm get hooks` output
// and returns its container's command after the binary, without --hold (run
// once, not held).
func hookCleanupArgs(t *testing.T, hooks string) []string {
	t.Helper()
	for _, doc := range strings.Split(hooks, "\n---") {
		var ds appsv1.DaemonSet
		if err := yaml.Unmarshal([]byte(doc), &ds); err != nil || ds.Kind != "DaemonSet" {
			continue
		}
		c := ds.Spec.Template.Spec.Containers[0]
		return slices.DeleteFunc(append(slices.Clone(c.Command[1:]), c.Args...), func(a string) bool { return a == "--hold" })
	}
	t.Fatalf("no DaemonSet in the release's hooks:\n%s", hooks)
	return nil
}

// staticBinary is the command name built the way the Dockerfile builds it.
func staticBinary(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(rig.Command(t, rig.Static, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// waitTag waits until the Tag serves d (and is cached: the Tag has cache on).
func waitTag(t *testing.T, c client.Client, d string) {
	t.Helper()
	rig.WaitFor(t, time.Minute, "Tag app serves "+d+", cached", func() (bool, string) {
		var tag v1alpha1.Tag
		if err := c.Get(context.Background(), client.ObjectKey{Name: "app"}, &tag); err != nil {
			return false, err.Error()
		}
		return tag.Status.ServedDigest == d && tag.Status.CachedServed,
			fmt.Sprintf("serves %s, cached %v", tag.Status.ServedDigest, tag.Status.CachedServed)
	})
}
