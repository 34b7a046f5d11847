// Package helmtool finds, or builds from the Go module proxy once, the helm
// binary the chart is tested with, and runs it with its own config dirs so a
// user's helm configuration cannot leak into a test.
package helmtool

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
	Version = "v3.22.0"
	Package = "helm.sh/helm/v3/cmd/helm"
)

var (
	once   sync.Once
	binary string
	errBin error
)

// Binary returns the helm binary: $HELM when set, else helm Version cached
// at ${XDG_CACHE_HOME:-$HOME/.cache}/tagger/tools/helm-<Version>, built from
// the Go module proxy once (about a minute and a half cold) and reused by
// later runs.
func Binary() (string, error) {
	once.Do(func() { binary, errBin = find() })
	return binary, errBin
}

func find() (string, error) {
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
	bin := filepath.Join(toolsDir, "helm-"+Version)
	if v, err := binaryVersion(bin); err == nil && v == Version {
		return bin, nil
	}
	if err := build(toolsDir, bin); err != nil {
		return "", err
	}
	v, err := binaryVersion(bin)
	if err != nil {
		return "", fmt.Errorf("run freshly built %s: %w", bin, err)
	}
	if v != Version {
		return "", fmt.Errorf("freshly built %s reports %s, want %s", bin, v, Version)
	}
	return bin, nil
}

// binaryVersion is the helm module version a binary was built from. (A
// `go install` build's `helm version` says only "v3.22": the full version is
// stamped by helm's release ldflags, not by the module system.)
func binaryVersion(bin string) (string, error) {
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
func build(toolsDir, bin string) error {
	gobin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("go is needed to build helm %s (or set HELM to a helm binary): %w", Version, err)
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
	cmd := exec.Command(gobin, "install", Package+"@"+Version)
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "GOFLAGS=", "GOWORK=off", "CGO_ENABLED=0")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go install %s@%s: %w\n%s", Package, Version, err, out.String())
	}
	return os.Rename(filepath.Join(tmp, "helm"), bin)
}

// Runner runs helm in Dir with HELM_*_HOME under Home and KUBECONFIG set to
// Kubeconfig (a path that does not exist keeps helm offline).
type Runner struct {
	Dir, Home, Kubeconfig string
}

// Run runs helm and returns its stdout, or an error carrying stderr.
func (r Runner) Run(ctx context.Context, args ...string) (string, error) {
	bin, err := Binary()
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
