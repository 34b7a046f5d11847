// Package release tests what `make release` publishes (internal/release):
// a release built for this machine's platform, its checksums, its krew
// manifest through krew's validator and installer, its reproducibility, and
// the packaged chart pushed to a real registry as an OCI artifact and
// installed from oci:// into a real apiserver.
package release

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/tagger-project/tagger/internal/release"
	"github.com/tagger-project/tagger/internal/rig"
)

// What every release in these tests is stamped with.
const (
	version = "v1.2.3"
	commit  = "0123456789abcdef0123456789abcdef01234567"
)

var (
	date        = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	imageDigest = "sha256:" + strings.Repeat("0123456789abcdef", 4)
	host        = release.Platform{OS: runtime.GOOS, Arch: runtime.GOARCH}
)

// helmHome holds HELM_*_HOME of every helm run, so user config cannot leak in.
var helmHome string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tagger-releasetest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "release test:", err)
		os.Exit(1)
	}
	helmHome = dir
	// The rig's apiserver (envtest) logs through controller-runtime's logger.
	ctrllog.SetLogger(logr.Discard())
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// config is a release of this machine's kubectl-tag (bare and archived) and the chart
// (the full platform matrix is `make release`'s: cross builds of the whole
// tree would take this test many minutes).
func config(t *testing.T, out string) release.Config {
	t.Helper()
	helm, err := rig.HelmBinary()
	if err != nil {
		t.Fatal(err)
	}
	return release.Config{
		Root: rig.RepoRoot(), Out: out, Version: version, Commit: commit, Date: date,
		Binaries:        []string{release.PluginName},
		BinaryPlatforms: []release.Platform{host},
		PluginPlatforms: []release.Platform{host},
		Chart:           "deploy/chart/tagger",
		Helm:            []string{helm},
		ImageDigest:     imageDigest,
		Go:              rig.GoTool(),
		Log:             t.Logf,
	}
}

// runHelm runs helm with HELM_*_HOME in helmHome and the given kubeconfig.
func runHelm(t *testing.T, kubeconfig string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r := rig.HelmRunner{Dir: rig.RepoRoot(), Home: helmHome, Kubeconfig: kubeconfig}
	out, err := r.Run(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// buildRelease runs the release build into a fresh directory.
func buildRelease(t *testing.T, cfg release.Config) *release.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	start := time.Now()
	r, err := release.Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("release %s built in %v: %v", r.Version, time.Since(start).Round(time.Millisecond), r.Files)
	return r
}
