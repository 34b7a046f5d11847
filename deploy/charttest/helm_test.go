package charttest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/tagger-project/tagger/internal/rig"
)

// chartDir is the chart under test, relative to the repository root.
const chartDir = "deploy/chart/tagger"

// helmHome holds HELM_*_HOME of every helm run, so user config cannot leak in.
var helmHome string

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

// runHelm runs helm (rig.HelmBinary: v3.22.0, built once from the
// module proxy; never skips) in the repository root, offline, and returns
// stdout, or an error carrying stderr.
func runHelm(t testing.TB, args ...string) (string, error) {
	t.Helper()
	r := rig.HelmRunner{Dir: repoRoot(t), Home: helmHome,
		// No cluster is ever contacted: template and lint work offline.
		Kubeconfig: filepath.Join(helmHome, "no-kubeconfig")}
	return r.Run(context.Background(), args...)
}

// Release name and namespace of every render, as in hack/render-manifests.sh.
const (
	releaseName = "tagger"
	namespace   = "tagger-system"
)

// renderArgs are the arguments of hack/render-manifests.sh's helm template:
// without hooks (the uninstall hook must not run when the plain manifests
// are applied; hookRenderArgs renders it).
func renderArgs(extra ...string) []string {
	return append([]string{"template", releaseName, chartDir, "--namespace", namespace, "--include-crds", "--no-hooks"}, extra...)
}

// hookRenderArgs render the chart's hooks alone.
func hookRenderArgs(extra ...string) []string {
	return append([]string{"template", releaseName, chartDir, "--namespace", namespace,
		"--show-only", "templates/node-cleanup-hook.yaml"}, extra...)
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
