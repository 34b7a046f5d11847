// Command release builds, into a directory, what a tagger release publishes
// (internal/release; `make release` runs it, docs/release.md describes the
// result), then checks the krew manifest with krew's own validator and
// installs the plugin with krew from this machine's archive.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/tagger-project/tagger/internal/release"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "release:", err)
		os.Exit(1)
	}
}

type flags struct {
	cfg                                 release.Config
	date, binaries, binPlats, plugPlats string
	helm, validator, krew               string
}

func parse() (*flags, error) {
	f := &flags{}
	flag.StringVar(&f.cfg.Out, "out", "dist", "directory the release files are written to (emptied first)")
	flag.StringVar(&f.cfg.Version, "version", "", "release version: a SemVer tag such as v0.2.0 (git describe otherwise becomes v0.0.0-<describe>)")
	flag.StringVar(&f.cfg.Commit, "commit", "", "commit hash stamped into the binaries")
	flag.StringVar(&f.date, "date", "", "the commit's date, RFC 3339: stamped into the binaries and every archive entry")
	flag.StringVar(&f.binaries, "binaries", "controller,node-agent,kubectl-tag", "commands published as bare static binaries")
	flag.StringVar(&f.binPlats, "binary-platforms", "linux/amd64,linux/arm64", "platforms of the bare binaries")
	flag.StringVar(&f.plugPlats, "plugin-platforms", "linux/amd64,linux/arm64,darwin/amd64,darwin/arm64,windows/amd64,windows/arm64", "platforms kubectl-tag is archived for")
	flag.StringVar(&f.cfg.DownloadURL, "download-url", release.DefaultDownloadURL, "URL of a published file, {version} and {file} filled in (the krew manifest's uri)")
	flag.StringVar(&f.cfg.Chart, "chart", "deploy/chart/tagger", "chart directory to package (empty: none)")
	flag.StringVar(&f.helm, "helm", "helm", "helm command line (words split on spaces)")
	flag.StringVar(&f.cfg.ImageDigest, "image-digest", "", "digest (sha256:...) of the pushed tagger image, written into the packaged chart's image.digest")
	flag.StringVar(&f.validator, "krew-validator", "", "validate-krew-manifest binary (hack/testbin.sh krew); empty skips the check")
	flag.StringVar(&f.krew, "krew", "", "krew binary: installs the plugin from this platform's archive; empty skips it")
	flag.Parse()
	root, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	f.cfg.Root = root
	if f.cfg.Date, err = time.Parse(time.RFC3339, f.date); err != nil {
		return nil, fmt.Errorf("-date %q: %w", f.date, err)
	}
	f.cfg.Helm = strings.Fields(f.helm)
	f.cfg.Binaries = splitList(f.binaries)
	if f.cfg.BinaryPlatforms, err = platforms(f.binPlats); err == nil {
		f.cfg.PluginPlatforms, err = platforms(f.plugPlats)
	}
	f.cfg.Log = func(format string, args ...any) { fmt.Fprintf(os.Stderr, "release: "+format+"\n", args...) }
	return f, err
}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

func platforms(s string) ([]release.Platform, error) {
	var out []release.Platform
	for _, v := range splitList(s) {
		p, err := release.ParsePlatform(v)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

func run() error {
	f, err := parse()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	r, err := release.Run(ctx, f.cfg)
	if err != nil {
		return err
	}
	if err := check(ctx, f, r); err != nil {
		return err
	}
	fmt.Printf("%s %s:\n", f.cfg.Out, r.Version)
	for _, name := range r.Files {
		fmt.Println("  " + name)
	}
	return nil
}

// check validates the krew manifest and installs this platform's archive.
func check(ctx context.Context, f *flags, r *release.Result) error {
	if f.validator == "" || r.Manifest == "" {
		return nil
	}
	manifest := filepath.Join(f.cfg.Out, r.Manifest)
	if err := release.ValidateKrewManifest(ctx, f.validator, manifest); err != nil {
		return err
	}
	host := release.Platform{OS: runtime.GOOS, Arch: runtime.GOARCH}
	archive, ok := r.Archives[host]
	if f.krew == "" || !ok {
		return nil
	}
	tmp, err := os.MkdirTemp("", "tagger-release-krew-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	_, err = release.KrewInstall(ctx, f.krew, manifest, filepath.Join(f.cfg.Out, archive), host, tmp)
	return err
}
