package charttest

import (
	"bytes"
	"debug/buildinfo"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// The helm the chart is tested with; hack/render-manifests.sh and the
// Makefile run the same version.
const (
	helmVersion = "v3.22.0"
	helmPackage = "helm.sh/helm/v3/cmd/helm"
)

// chartDir is the chart under test, relative to the repository root.
const chartDir = "deploy/chart/tagger"

var (
	helmOnce sync.Once
	helmBin  string
	helmErr  error

	helmHome string // HELM_*_HOME of every helm run, so user config cannot leak in
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tagger-charttest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "charttest:", err)
		os.Exit(1)
	}
	helmHome = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// repoRoot is the repository root: tests run in deploy/charttest.
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root %s: %v", root, err)
	}
	return root
}

// helm returns the helm binary: $HELM when set, else helm v3.22.0 cached at
// ${XDG_CACHE_HOME:-$HOME/.cache}/tagger/tools/helm-v3.22.0, built from the
// Go module proxy once (about a minute and a half cold) and reused by later
// runs. Never skips: without helm (or go to build it) the test fails.
func helm(t testing.TB) string {
	t.Helper()
	helmOnce.Do(func() { helmBin, helmErr = findHelm() })
	if helmErr != nil {
		t.Fatalf("helm: %v", helmErr)
	}
	return helmBin
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
	bin := filepath.Join(toolsDir, "helm-"+helmVersion)
	if v, err := binaryVersion(bin); err == nil && v == helmVersion {
		return bin, nil
	}
	if err := buildHelm(toolsDir, bin); err != nil {
		return "", err
	}
	v, err := binaryVersion(bin)
	if err != nil {
		return "", fmt.Errorf("run freshly built %s: %w", bin, err)
	}
	if v != helmVersion {
		return "", fmt.Errorf("freshly built %s reports %s, want %s", bin, v, helmVersion)
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

// buildHelm builds helm into a private directory next to bin and renames it
// into place, so concurrent test binaries never see a half-written file.
func buildHelm(toolsDir, bin string) error {
	gobin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("go is needed to build helm %s (or set HELM to a helm binary): %w", helmVersion, err)
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
	cmd := exec.Command(gobin, "install", helmPackage+"@"+helmVersion)
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "GOFLAGS=", "GOWORK=off", "CGO_ENABLED=0")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go install %s@%s: %w\n%s", helmPackage, helmVersion, err, out.String())
	}
	return os.Rename(filepath.Join(tmp, "helm"), bin)
}

// runHelm runs helm in the repository root and returns stdout, or an error
// carrying stderr.
func runHelm(t testing.TB, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(helm(t), args...)
	cmd.Dir = repoRoot(t)
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(helmHome, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(helmHome, "config"),
		"HELM_DATA_HOME="+filepath.Join(helmHome, "data"),
		// No cluster is ever contacted: template and lint work offline.
		"KUBECONFIG="+filepath.Join(helmHome, "no-kubeconfig"),
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// Release name and namespace of every render, as in hack/render-manifests.sh.
const (
	releaseName = "tagger"
	namespace   = "tagger-system"
)

// renderArgs are the arguments of hack/render-manifests.sh's helm template.
func renderArgs(extra ...string) []string {
	return append([]string{"template", releaseName, chartDir, "--namespace", namespace, "--include-crds"}, extra...)
}

// writeValues writes a values file for one render and returns its path.
func writeValues(t testing.TB, values string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(p, []byte(values), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
