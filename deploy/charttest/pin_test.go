package charttest

import (
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
)

// defaultRegistryImage is the bundled registry's default image: distribution
// v3.1.2 pinned by the digest of Docker Hub's multi-arch index.
const defaultRegistryImage = "docker.io/library/registry:3.1.2@sha256:ddf754342cfc8acc51a56d5d0ab6af06826461864460636d8bd5c546dab2a7b8"

var pinned = regexp.MustCompile(`^[^@]+:[^:@/]+@sha256:[0-9a-f]{64}$`)

// TestImagesPinned: by default the registry image renders pinned by digest
// as well as tag; tagger's own image is pinned the same way once a digest is
// set (a release stamps it into the packaged chart: docs/release.md), and
// pulls by tag (the chart's appVersion) in the source tree.
func TestImagesPinned(t *testing.T) {
	r := render(t, "")
	reg := container(t, get[*appsv1.Deployment](t, r, "Deployment", "tagger-registry").Spec.Template.Spec, "registry")
	if !pinned.MatchString(reg.Image) || reg.Image != defaultRegistryImage {
		t.Errorf("default registry image %q, want %s (tag and digest)", reg.Image, defaultRegistryImage)
	}
	ctrl := container(t, get[*appsv1.Deployment](t, r, "Deployment", "tagger-controller").Spec.Template.Spec, "controller")
	if strings.Contains(ctrl.Image, "@") || !strings.HasPrefix(ctrl.Image, "ghcr.io/tagger-project/tagger:") {
		t.Errorf("default tagger image %q, want ghcr.io/tagger-project/tagger:<appVersion>", ctrl.Image)
	}

	d := "sha256:" + strings.Repeat("ab", 32)
	r = render(t, "image:\n  tag: v9.9.9\n  digest: "+d+"\nregistry:\n  image:\n    digest: \"\"\n")
	for kind, name := range map[string]string{"Deployment": "tagger-controller", "DaemonSet": "tagger-node-agent"} {
		var images []string
		switch kind {
		case "Deployment":
			for _, c := range get[*appsv1.Deployment](t, r, kind, name).Spec.Template.Spec.Containers {
				images = append(images, c.Image)
			}
		default:
			for _, c := range get[*appsv1.DaemonSet](t, r, kind, name).Spec.Template.Spec.Containers {
				images = append(images, c.Image)
			}
		}
		for _, img := range images {
			if img != "ghcr.io/tagger-project/tagger:v9.9.9@"+d {
				t.Errorf("%s %s image %q, want repository:tag@digest", kind, name, img)
			}
		}
	}
	reg = container(t, get[*appsv1.Deployment](t, r, "Deployment", "tagger-registry").Spec.Template.Spec, "registry")
	if reg.Image != "docker.io/library/registry:3.1.2" {
		t.Errorf("registry image with digest \"\": %q, want the tag alone", reg.Image)
	}
}
