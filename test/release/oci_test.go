package release

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tagger-project/tagger/internal/rig"
)

// The registry image the chart pins by default (values.yaml).
const registryImage = "docker.io/library/registry:3.1.2@sha256:ddf754342cfc8acc51a56d5d0ab6af06826461864460636d8bd5c546dab2a7b8"

// TestChartFromOCI packages the chart as a release does, pushes it with
// `helm push` to a real distribution registry as an OCI artifact, and
// installs it from oci:// into a real apiserver: the objects exist, labelled
// with the release's version, running the images the release pins.
func TestChartFromOCI(t *testing.T) {
	reg := rig.NewRegistry(t, rig.RegistryOptions{})
	kube := rig.NewKube(t)
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, kube.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}

	cfg := config(t, filepath.Join(t.TempDir(), "dist"))
	cfg.Binaries, cfg.PluginPlatforms = nil, nil // the chart alone
	r := buildRelease(t, cfg)
	chart := filepath.Join(cfg.Out, r.Chart)

	runHelm(t, kubeconfig, "push", chart, "oci://"+reg.Host()+"/charts", "--plain-http")
	checkChartArtifact(t, reg.URL()+"/v2/charts/tagger/manifests/1.2.3")
	ref := "oci://" + reg.Host() + "/charts/tagger"
	runHelm(t, kubeconfig, "install", "tagger", ref, "--version", "1.2.3", "--plain-http",
		"--namespace", "tagger-system", "--create-namespace",
		// The rig's apiserver already serves the Tag CRD, not owned by helm;
		// deploy/charttest's TestCRDUpgrade covers the chart installing it.
		"--set", "crds.enabled=false")
	t.Cleanup(func() {
		// The apiserver is thrown away; uninstall only proves helm can.
		runHelm(t, kubeconfig, "uninstall", "tagger", "--namespace", "tagger-system", "--no-hooks")
	})

	ctx := context.Background()
	want := map[string]string{
		"tagger-controller": "ghcr.io/tagger-project/tagger:1.2.3@" + imageDigest,
		"tagger-registry":   registryImage,
	}
	for name, image := range want {
		var d appsv1.Deployment
		if err := kube.Client.Get(ctx, client.ObjectKey{Namespace: "tagger-system", Name: name}, &d); err != nil {
			t.Errorf("Deployment %s: %v", name, err)
			continue
		}
		l := d.Labels
		if l["app.kubernetes.io/version"] != "1.2.3" || l["helm.sh/chart"] != "tagger-1.2.3" ||
			l["app.kubernetes.io/managed-by"] != "Helm" {
			t.Errorf("Deployment %s labels %v: want version 1.2.3, chart tagger-1.2.3, managed by Helm", name, l)
		}
		if got := d.Spec.Template.Spec.Containers[0].Image; got != image {
			t.Errorf("Deployment %s image %q, want %q", name, got, image)
		}
	}
	var ds appsv1.DaemonSet
	if err := kube.Client.Get(ctx, client.ObjectKey{Namespace: "tagger-system", Name: "tagger-node-agent"}, &ds); err != nil {
		t.Errorf("node agent DaemonSet: %v", err)
	} else if ds.Labels["app.kubernetes.io/version"] != "1.2.3" {
		t.Errorf("node agent DaemonSet labels %v: want version 1.2.3", ds.Labels)
	}
	status := runHelm(t, kubeconfig, "status", "tagger", "--namespace", "tagger-system")
	if !strings.Contains(status, "STATUS: deployed") {
		t.Errorf("helm status:\n%s", status)
	}
}

// checkChartArtifact: the registry holds the chart as an OCI image manifest
// with Helm's config media type.
func checkChartArtifact(t *testing.T, url string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m struct {
		MediaType string
		Config    struct{ MediaType string }
		Layers    []struct{ MediaType string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s, %v", url, resp.Status, err)
	}
	if m.Config.MediaType != "application/vnd.cncf.helm.config.v1+json" || len(m.Layers) == 0 ||
		m.Layers[0].MediaType != "application/vnd.cncf.helm.chart.content.v1.tar+gzip" {
		t.Errorf("pushed chart manifest %+v: want Helm's OCI media types", m)
	}
}
