package release

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// ChartRepository is where the release workflow pushes the chart (an OCI
// repository: helm install tagger oci://ghcr.io/tagger-project/charts/tagger).
const ChartRepository = "oci://ghcr.io/tagger-project/charts"

var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// packageChart packages a copy of the chart with version and appVersion set
// to the release (and image.digest to c.ImageDigest when given), then
// re-dates the archive so the same commit packages the same bytes.
func packageChart(ctx context.Context, c *Config) (string, error) {
	tmp, err := os.MkdirTemp("", "tagger-release-chart-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	src := filepath.Join(c.Root, c.Chart)
	dir := filepath.Join(tmp, filepath.Base(src))
	if err := os.CopyFS(dir, os.DirFS(src)); err != nil {
		return "", fmt.Errorf("copy chart %s: %w", src, err)
	}
	if c.ImageDigest != "" {
		if err := stampImageDigest(filepath.Join(dir, "values.yaml"), c.ImageDigest); err != nil {
			return "", err
		}
	}
	v := ChartVersion(c.Version)
	c.logf("helm package %s %s", c.Chart, v)
	args := append(append([]string(nil), c.Helm[1:]...),
		"package", dir, "--version", v, "--app-version", v, "--destination", tmp)
	cmd := exec.CommandContext(ctx, c.Helm[0], args...)
	cmd.Dir = c.Root
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("helm package %s: %w\n%s", c.Chart, err, out.String())
	}
	name := fmt.Sprintf("%s-%s.tgz", filepath.Base(src), v)
	if err := redateTarGz(filepath.Join(tmp, name), filepath.Join(c.Out, name), c.Date); err != nil {
		return "", fmt.Errorf("re-date %s: %w", name, err)
	}
	return name, nil
}

// stampImageDigest sets the top-level image.digest in a values file. It
// edits the text, keeping the comments helm-docs and users read.
func stampImageDigest(path, digest string) error {
	if !digestRE.MatchString(digest) {
		return fmt.Errorf("image digest %q: want sha256:<64 hex digits>", digest)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	lines := strings.Split(string(b), "\n")
	inImage := false
	for i, l := range lines {
		switch {
		case l == "image:":
			inImage = true
		case inImage && l != "" && !strings.HasPrefix(l, " ") && !strings.HasPrefix(l, "#"):
			inImage = false
		case inImage && strings.HasPrefix(l, "  digest:"):
			lines[i] = fmt.Sprintf("  digest: %q", digest)
			return os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o644)
		}
	}
	return fmt.Errorf("%s: no image.digest key to set", path)
}

// redateTarGz rewrites helm's chart archive (whose entries helm dates with
// the clock) with every entry dated mtime, keeping helm's entry order,
// contents and gzip header.
func redateTarGz(src, dst string, mtime time.Time) error {
	in, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	zr, err := gzip.NewReader(bytes.NewReader(in))
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Header = gzip.Header{Comment: zr.Comment, Extra: zr.Extra, OS: zr.OS}
	tr, tw := tar.NewReader(zr), tar.NewWriter(zw)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		nh := &tar.Header{Name: h.Name, Mode: h.Mode, Size: h.Size, Typeflag: h.Typeflag,
			ModTime: mtime.UTC().Truncate(time.Second)}
		if err := tw.WriteHeader(nh); err != nil {
			return err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return os.WriteFile(dst, buf.Bytes(), fs.FileMode(0o644))
}
