package release

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/tagger-project/tagger/internal/release"
	"github.com/tagger-project/tagger/internal/rig"
)

// TestReleaseBuild builds a release, checks SHA256SUMS against every file,
// runs krew's validator on the generated manifest and installs the plugin
// with krew from the archive (krew checks the manifest's sha256), runs the
// installed plugin for its stamped version, and builds again to the same
// bytes.
func TestReleaseBuild(t *testing.T) {
	bins := rig.RequireBins(t, "validate-krew-manifest", "krew")
	out := filepath.Join(t.TempDir(), "dist")
	r := buildRelease(t, config(t, out))

	checked, err := release.VerifyChecksums(out)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	var all []string
	for _, e := range entries {
		if e.Name() != release.ChecksumsFile {
			all = append(all, e.Name())
		}
	}
	if !slices.Equal(checked, all) {
		t.Errorf("SHA256SUMS covers %v, the directory holds %v", checked, all)
	}
	archive := release.ArchiveFile(version, host)
	if r.Archives[host] != archive || r.Manifest != release.KrewManifestFile || r.Chart != "tagger-1.2.3.tgz" {
		t.Errorf("result %+v: want archive %s, manifest tag.yaml, chart tagger-1.2.3.tgz", r, archive)
	}

	checkManifest(t, out, archive)
	ctx := context.Background()
	manifest := filepath.Join(out, release.KrewManifestFile)
	if err := release.ValidateKrewManifest(ctx, filepath.Join(bins, "validate-krew-manifest"), manifest); err != nil {
		t.Fatal(err)
	}
	plugin, err := release.KrewInstall(ctx, filepath.Join(bins, "krew"), manifest, filepath.Join(out, archive), host, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	v, err := exec.Command(plugin, "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(v), "kubectl-tag "+version+" (commit "+commit+", built 2026-01-02T03:04:05Z") {
		t.Errorf("krew-installed kubectl-tag --version: %q, %v", v, err)
	}
	bare := filepath.Join(out, release.PluginName+"-"+host.OS+"-"+host.Arch)
	if b, err := exec.Command(bare, "--version").CombinedOutput(); err != nil || !strings.Contains(string(b), version) {
		t.Errorf("%s --version: %q, %v", bare, b, err)
	}
	checkTamperedArchive(t, filepath.Join(bins, "krew"), manifest, filepath.Join(out, archive))
	checkChartArchive(t, filepath.Join(out, r.Chart))

	// The same inputs again (the Go build cache makes this quick): the same bytes.
	again := filepath.Join(t.TempDir(), "dist")
	buildRelease(t, config(t, again))
	a, _ := os.ReadFile(filepath.Join(out, release.ChecksumsFile))
	b, err := os.ReadFile(filepath.Join(again, release.ChecksumsFile))
	if err != nil || !bytes.Equal(a, b) {
		t.Errorf("a second build differs:\n%s\nvs\n%s (%v)", a, b, err)
	}
}

// checkManifest: the manifest's platform for this machine names the
// release download URL and the archive's sha256 from SHA256SUMS.
func checkManifest(t *testing.T, out, archive string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(out, release.KrewManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		APIVersion, Kind string
		Spec             struct {
			Version   string
			Platforms []struct {
				URI, Sha256, Bin string
				Selector         struct{ MatchLabels map[string]string }
			}
		}
	}
	if err := yaml.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	sums, _ := os.ReadFile(filepath.Join(out, release.ChecksumsFile))
	if m.APIVersion != "krew.googlecontainertools.github.com/v1alpha2" || m.Kind != "Plugin" ||
		m.Spec.Version != version || len(m.Spec.Platforms) != 1 {
		t.Fatalf("manifest:\n%s", b)
	}
	p := m.Spec.Platforms[0]
	wantURI := "https://github.com/tagger-project/tagger/releases/download/" + version + "/" + archive
	if p.URI != wantURI || p.Bin != "kubectl-tag" || !strings.Contains(string(sums), p.Sha256+"  "+archive+"\n") ||
		p.Selector.MatchLabels["os"] != host.OS || p.Selector.MatchLabels["arch"] != host.Arch {
		t.Errorf("manifest platform %+v: want uri %s and the sha256 SHA256SUMS lists\n%s", p, wantURI, sums)
	}
}

// checkTamperedArchive: krew refuses an archive whose bytes are not the
// ones the manifest's sha256 names.
func checkTamperedArchive(t *testing.T, krew, manifest, archive string) {
	t.Helper()
	b, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), filepath.Base(archive))
	if err := os.WriteFile(bad, append(b, 0), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = release.KrewInstall(context.Background(), krew, manifest, bad, host, t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "checksum does not match") {
		t.Errorf("krew install of a changed archive: %v, want a sha256 mismatch", err)
	}
}

// checkChartArchive: the packaged chart carries the release version and
// the stamped image digest, every entry dated from the commit.
func checkChartArchive(t *testing.T, path string) {
	t.Helper()
	files := map[string]string{}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !h.ModTime.Equal(date) {
			t.Errorf("%s dated %v, want the commit's %v", h.Name, h.ModTime, date)
		}
		b, _ := io.ReadAll(tr)
		files[h.Name] = string(b)
	}
	var chart struct{ Version, AppVersion string }
	if err := yaml.Unmarshal([]byte(files["tagger/Chart.yaml"]), &chart); err != nil {
		t.Fatal(err)
	}
	if chart.Version != "1.2.3" || chart.AppVersion != "1.2.3" {
		t.Errorf("packaged Chart.yaml version %q appVersion %q, want 1.2.3", chart.Version, chart.AppVersion)
	}
	if !strings.Contains(files["tagger/values.yaml"], "\n  digest: \""+imageDigest+"\"\n") {
		t.Errorf("packaged values.yaml has no image.digest %s", imageDigest)
	}
}
