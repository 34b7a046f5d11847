// Helm: HelmBinary finds, or builds from the Go module proxy once, the helm
// binary the chart is tested with, and runs it with its own config dirs so a
// user's helm configuration cannot leak into a test.

package rig

import (
	"bytes"
	"context"
	"debug/buildinfo"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// The helm version the chart is tested with; hack/render-manifests.sh and
// the Makefile run the same one.
const (
	HelmVersion = "v3.22.0"
	HelmPackage = "helm.sh/helm/v3/cmd/helm"
	// HelmLDFlags stamp the Kubernetes version helm assumes offline (helm
	// template, lint), as helm's release builds do from their client-go
	// (v0.37 for v3.22). Unstamped, a source build assumes v1.20 and refuses
	// the chart's kubeVersion. Keep in step with the Makefile's HELM.
	HelmLDFlags = "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=37 " +
		"-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=37"
	helmCacheName = "helm-" + HelmVersion + "-k8s1.37"
)

var (
	helmOnce sync.Once
	helmBin  string
	helmErr  error
)

// HelmBinary returns the helm binary: $HELM when set, else helm HelmVersion cached
// at ${XDG_CACHE_HOME:-$HOME/.cache}/tagger/tools/helm-<HelmVersion>-k8s1.37, built from
// the Go module proxy helmOnce (about a minute and a half cold) and reused by
// later runs.
func HelmBinary() (string, error) {
	helmOnce.Do(func() { helmBin, helmErr = findHelm() })
	return helmBin, helmErr
}

func findHelm() (string, error) {
	if p := os.Getenv("HELM"); p != "" {
		bin, err := exec.LookPath(p)
		if err != nil {
			return "", fmt.Errorf("HELM=%q must name a helm binary: %w", p, err)
		}
		return bin, nil
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home := os.Getenv("HOME")
		if home == "" {
			return "", errors.New("neither XDG_CACHE_HOME nor HOME is set: no place to cache helm")
		}
		cache = filepath.Join(home, ".cache")
	}
	toolsDir := filepath.Join(cache, "tagger", "tools")
	bin := filepath.Join(toolsDir, helmCacheName)
	if v, err := helmBinaryVersion(bin); err == nil && v == HelmVersion {
		return bin, nil
	}
	if err := buildHelm(toolsDir, bin); err != nil {
		return "", err
	}
	v, err := helmBinaryVersion(bin)
	if err != nil {
		return "", fmt.Errorf("run freshly built %s: %w", bin, err)
	}
	if v != HelmVersion {
		return "", fmt.Errorf("freshly built %s reports %s, want %s", bin, v, HelmVersion)
	}
	return bin, nil
}

// helmBinaryVersion is the helm module version a binary was built from. (A
// `go install` build's `helm version` says only "v3.22": the full version is
// stamped by helm's release ldflags, not by the module system.)
func helmBinaryVersion(bin string) (string, error) {
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		return "", err
	}
	if info.Main.Path != "helm.sh/helm/v3" {
		return "", fmt.Errorf("%s is built from %s, not helm.sh/helm/v3", bin, info.Main.Path)
	}
	return info.Main.Version, nil
}

// build builds helm into a private directory next to bin and renames it
// into place, so concurrent test binaries never see a half-written file.
func buildHelm(toolsDir, bin string) error {
	gobin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("go is needed to build helm %s (or set HELM to a helm binary): %w", HelmVersion, err)
	}
	if err := os.MkdirAll(toolsDir, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(toolsDir, ".build-helm-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	// `go install pkg@version` builds helm with its own go.mod, exactly what
	// `go run pkg@version` (hack/render-manifests.sh, the Makefile) runs.
	cmd := exec.Command(gobin, "install", "-ldflags", HelmLDFlags, HelmPackage+"@"+HelmVersion)
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "GOFLAGS=", "GOWORK=off", "CGO_ENABLED=0")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go install %s@%s: %w\n%s", HelmPackage, HelmVersion, err, out.String())
	}
	return os.Rename(filepath.Join(tmp, "helm"), bin)
}

// HelmRunner runs helm in Dir with HELM_*_HOME under Home and KUBECONFIG set to
// Kubeconfig (a path that does not exist keeps helm offline).
type HelmRunner struct {
	Dir, Home, Kubeconfig string
}

// Run runs helm and returns its stdout, or an error carrying stderr.
func (r HelmRunner) Run(ctx context.Context, args ...string) (string, error) {
	bin, err := HelmBinary()
	if err != nil {
		return "", fmt.Errorf("helm: %w", err)
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = r.Dir
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(r.Home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(r.Home, "config"),
		"HELM_DATA_HOME="+filepath.Join(r.Home, "data"),
		"KUBECONFIG="+r.Kubeconfig,
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}
