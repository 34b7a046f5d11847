package release

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tagger-project/tagger/internal/rig"
)

func TestReleaseVersion(t *testing.T) {
	for in, want := range map[string]string{
		"v0.2.0":             "v0.2.0",
		"0.2.0":              "v0.2.0",
		"v1.0.0-rc.1":        "v1.0.0-rc.1",
		"v0.2.0-3-gabc1234":  "v0.2.0-3-gabc1234",
		"57ee6bd":            "v0.0.0-57ee6bd",
		"57ee6bd-dirty":      "v0.0.0-57ee6bd-dirty",
		"v0.2.0-dirty+build": "v0.2.0-dirty+build",
	} {
		got, err := ReleaseVersion(in)
		if err != nil || got != want {
			t.Errorf("ReleaseVersion(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "v1.2", "release 1", "v01.2.3"} {
		if got, err := ReleaseVersion(bad); err == nil && strings.HasPrefix(got, "v"+bad) {
			t.Errorf("ReleaseVersion(%q) = %q, want an error", bad, got)
		}
	}
	if got := ChartVersion("v1.2.3-rc.1"); got != "1.2.3-rc.1" {
		t.Errorf("ChartVersion = %q", got)
	}
}

func TestParsePlatform(t *testing.T) {
	if p, err := ParsePlatform("windows/arm64"); err != nil || p != (Platform{"windows", "arm64"}) {
		t.Errorf("ParsePlatform(windows/arm64) = %v, %v", p, err)
	}
	for _, bad := range []string{"linux", "linux/", "/amd64", "linux/arm/v7"} {
		if _, err := ParsePlatform(bad); err == nil {
			t.Errorf("ParsePlatform(%q): no error", bad)
		}
	}
}

// TestStampImageDigest stamps the chart's own values.yaml: the top-level
// image.digest changes, nothing else does (the registry's digest included).
func TestStampImageDigest(t *testing.T) {
	src, err := os.ReadFile(filepath.Join(rig.RepoRoot(), "deploy", "chart", "tagger", "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(p, src, 0o644); err != nil {
		t.Fatal(err)
	}
	d := "sha256:" + strings.Repeat("0123456789abcdef", 4)
	if err := stampImageDigest(p, d); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(p)
	before, after := strings.Split(string(src), "\n"), strings.Split(string(got), "\n")
	if len(before) != len(after) {
		t.Fatalf("stamping changed the line count: %d -> %d", len(before), len(after))
	}
	var changed []string
	for i := range before {
		if before[i] != after[i] {
			changed = append(changed, after[i])
		}
	}
	if len(changed) != 1 || changed[0] != `  digest: "`+d+`"` {
		t.Errorf("changed lines %q, want only image.digest", changed)
	}
	if err := stampImageDigest(p, "sha256:short"); err == nil {
		t.Error("a malformed digest was accepted")
	}
}

// TestArchivesInstallWithKrew writes the plugin archives of two platforms
// this machine does not build in tests (a zip for Windows, a tarball for
// macOS) around a stand-in binary, generates the manifest from them, has
// krew's validator check it and krew install each: krew's sha256 check and
// unpacking are what a user's `kubectl krew install` runs.
func TestArchivesInstallWithKrew(t *testing.T) {
	bins := rig.RequireBins(t, "validate-krew-manifest", "krew")
	dir, date := t.TempDir(), time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	archives := map[Platform]string{}
	for _, p := range []Platform{{"windows", "amd64"}, {"darwin", "arm64"}} {
		name := ArchiveFile("v1.2.3", p)
		entries := []archiveEntry{
			{name: exeName(PluginName, p), mode: 0o755, data: []byte("plugin for " + p.String())},
			{name: "LICENSE", mode: 0o644, data: []byte("license text")},
		}
		if err := writeArchive(filepath.Join(dir, name), entries, date); err != nil {
			t.Fatal(err)
		}
		first, _ := os.ReadFile(filepath.Join(dir, name))
		if err := writeArchive(filepath.Join(dir, name), entries, date); err != nil {
			t.Fatal(err)
		}
		if second, _ := os.ReadFile(filepath.Join(dir, name)); !bytes.Equal(first, second) {
			t.Errorf("%s: two writes of the same entries differ", name)
		}
		archives[p] = name
	}
	m, err := KrewManifest(dir, "v1.2.3", DefaultDownloadURL, archives)
	if err != nil {
		t.Fatal(err)
	}
	manifest := filepath.Join(dir, KrewManifestFile)
	if err := os.WriteFile(manifest, m, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := ValidateKrewManifest(ctx, filepath.Join(bins, "validate-krew-manifest"), manifest); err != nil {
		t.Fatal(err)
	}
	for p, name := range archives {
		if !strings.Contains(string(m), "uri: https://github.com/tagger-project/tagger/releases/download/v1.2.3/"+name+"\n") {
			t.Errorf("manifest has no uri for %s:\n%s", name, m)
		}
		bin, err := KrewInstall(ctx, filepath.Join(bins, "krew"), manifest, filepath.Join(dir, name), p, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		if got, err := os.ReadFile(bin); err != nil || string(got) != "plugin for "+p.String() {
			t.Errorf("krew installed %s for %s: %q, %v", bin, p, got, err)
		}
	}
}
