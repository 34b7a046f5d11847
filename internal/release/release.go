// Package release builds, on this machine, what a tagger release publishes:
// static binaries of the daemons and the plugin, the kubectl-tag archives
// krew installs, the packaged Helm chart, the krew manifest generated from
// the archives, and a SHA256SUMS file over all of them (docs/release.md).
// hack/release is its command line; `make release` runs it.
//
// The same commit builds the same bytes: the binaries are built with
// -trimpath and without VCS stamping, archive entries are sorted and dated
// from the commit, and the chart archive helm writes is re-dated the same way.
package release

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"
)

// Platform is one GOOS/GOARCH pair.
type Platform struct{ OS, Arch string }

func (p Platform) String() string { return p.OS + "/" + p.Arch }

// ParsePlatform reads "os/arch".
func ParsePlatform(s string) (Platform, error) {
	os, arch, ok := strings.Cut(s, "/")
	if !ok || os == "" || arch == "" || strings.Contains(arch, "/") {
		return Platform{}, fmt.Errorf("platform %q: want os/arch", s)
	}
	return Platform{OS: os, Arch: arch}, nil
}

// Config says what to build and where.
type Config struct {
	// Root is the repository checkout built from.
	Root string
	// Out is the directory the release files land in (emptied first).
	Out string
	// Version is the release tag, e.g. v0.2.0 (SemVer with a leading v;
	// anything else is turned into one by ReleaseVersion).
	Version string
	// Commit is the full commit hash stamped into the binaries.
	Commit string
	// Date is the commit's date: binaries report it, archives carry it.
	Date time.Time
	// Binaries are the commands (cmd/<name>) built as bare static binaries
	// for each of BinaryPlatforms.
	Binaries        []string
	BinaryPlatforms []Platform
	// PluginPlatforms are the platforms kubectl-tag is archived for.
	PluginPlatforms []Platform
	// DownloadURL is the URL a published release file has, with {version}
	// and {file} placeholders: the krew manifest's uri values.
	DownloadURL string
	// Chart is the chart directory, relative to Root; empty skips the chart.
	Chart string
	// Helm is the helm command line (argv prefix), e.g. ["helm"].
	Helm []string
	// ImageDigest (sha256:...) is written into the packaged chart's
	// image.digest; empty leaves the chart pulling by tag.
	ImageDigest string
	// Go is the go command; empty means "go".
	Go string
	// Log receives progress lines; nil is quiet.
	Log func(format string, args ...any)
}

// Result lists what Run wrote, as file names in Config.Out.
type Result struct {
	Version  string
	Files    []string
	Archives map[Platform]string
	Chart    string
	Manifest string
}

func (c *Config) logf(format string, args ...any) {
	if c.Log != nil {
		c.Log(format, args...)
	}
}

// Run builds the release into c.Out.
func Run(ctx context.Context, c Config) (*Result, error) {
	version, err := ReleaseVersion(c.Version)
	if err != nil {
		return nil, err
	}
	c.Version = version
	if c.Go == "" {
		c.Go = "go"
	}
	if err := os.RemoveAll(c.Out); err != nil {
		return nil, fmt.Errorf("empty %s: %w", c.Out, err)
	}
	if err := os.MkdirAll(c.Out, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", c.Out, err)
	}
	r := &Result{Version: version, Archives: map[Platform]string{}}
	if err := buildBinaries(ctx, &c, r); err != nil {
		return nil, err
	}
	if err := buildPluginArchives(ctx, &c, r); err != nil {
		return nil, err
	}
	if len(r.Archives) > 0 {
		if r.Manifest, err = writeKrewManifest(&c, r.Archives); err != nil {
			return nil, err
		}
		r.Files = append(r.Files, r.Manifest)
	}
	if c.Chart != "" {
		if r.Chart, err = packageChart(ctx, &c); err != nil {
			return nil, err
		}
		r.Files = append(r.Files, r.Chart)
	}
	if err := writeChecksums(c.Out, r.Files); err != nil {
		return nil, err
	}
	r.Files = append(r.Files, ChecksumsFile)
	return r, nil
}
