package imagebuild

import (
	"archive/tar"
	"bufio"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// The mirror serves the bases under the names the Dockerfile's FROM lines
// resolve to; a FROM change without a change here would build against
// Docker Hub's and gcr.io's names nobody serves.
func TestBasesMatchDockerfile(t *testing.T) {
	f, err := os.Open(filepath.Join("..", "..", "..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var froms []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) > 1 && fs[0] == "FROM" {
			for _, w := range fs[1:] {
				if !strings.HasPrefix(w, "--") {
					froms = append(froms, w)
					break
				}
			}
		}
	}
	want := []string{"golang:${GO_VERSION}", "gcr.io/" + distrolessRepo + ":" + distrolessTag}
	if strings.Join(froms, " ") != strings.Join(want, " ") {
		t.Errorf("Dockerfile FROM images %q, want %q (docker.io/%s is the first)", froms, want, golangRepo)
	}
}

func TestGolangTags(t *testing.T) {
	if got := golangTags("1.26.8"); strings.Join(got, ",") != "1.26,1.26.8" {
		t.Errorf("golangTags(1.26.8) = %q", got)
	}
}

func TestBuildkitdConfig(t *testing.T) {
	got := buildkitdConfig("127.0.0.1:5000", []string{"127.0.0.1:6000", "127.0.0.1:5000", ""})
	for _, want := range []string{
		"[registry.\"docker.io\"]\n  mirrors = [\"127.0.0.1:5000\"]\n",
		"[registry.\"gcr.io\"]\n  mirrors = [\"127.0.0.1:5000\"]\n",
		"[registry.\"127.0.0.1:5000\"]\n  http = true\n",
		"[registry.\"127.0.0.1:6000\"]\n  http = true\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("buildkitd.toml lacks %q:\n%s", want, got)
		}
	}
	if n := strings.Count(got, "[registry.\"127.0.0.1:5000\"]"); n != 1 {
		t.Errorf("mirror listed %d times:\n%s", n, got)
	}
}

// Same entries, same bytes: the bases keep their digests across runs, which
// BuildKit's cache keys depend on. Parents are added and sorted first.
func TestWriteLayerIsDeterministic(t *testing.T) {
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "f"), []byte("host"), 0o640); err != nil {
		t.Fatal(err)
	}
	entries := []entry{
		file("etc/passwd", 0o644, []byte("root\n")),
		hostFile("a/b/f", 0o640, filepath.Join(src, "f")),
		symlink("bin/sh", "/bin/busybox"),
		dir("tmp", 0o1777, 0),
		dir("home/nonroot", 0o700, nonroot),
	}
	dir := t.TempDir()
	var layers []layer
	for _, compress := range []bool{false, false, true} {
		l, err := writeLayer(dir, entries, compress)
		if err != nil {
			t.Fatal(err)
		}
		layers = append(layers, l)
	}
	if layers[0].desc.Digest != layers[1].desc.Digest {
		t.Errorf("two writes differ: %s, %s", layers[0].desc.Digest, layers[1].desc.Digest)
	}
	if layers[2].diffID != layers[0].diffID || layers[2].desc.Digest == layers[0].desc.Digest {
		t.Errorf("gzip layer: diffID %s (want %s), digest %s (want another)", layers[2].diffID, layers[0].diffID, layers[2].desc.Digest)
	}
	b, err := os.ReadFile(layers[0].path)
	if err != nil {
		t.Fatal(err)
	}
	if got := digest.FromBytes(b); got != layers[0].desc.Digest || int64(len(b)) != layers[0].desc.Size {
		t.Errorf("descriptor %v does not match the file (%s, %d bytes)", layers[0].desc, got, len(b))
	}
	var names []string
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		switch h.Name {
		case "tmp/":
			if h.Mode != 0o1777 {
				t.Errorf("tmp mode %o, want 1777", h.Mode)
			}
		case "home/nonroot/":
			if h.Uid != nonroot || h.Gid != nonroot {
				t.Errorf("home/nonroot owner %d:%d, want %d", h.Uid, h.Gid, nonroot)
			}
		case "a/b/f":
			if h.Size != 4 || h.Mode != 0o640 {
				t.Errorf("a/b/f size %d mode %o, want 4 and 640", h.Size, h.Mode)
			}
		}
	}
	want := "a/ a/b/ a/b/f bin/ bin/sh etc/ etc/passwd home/ home/nonroot/ tmp/"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("layer entries\n%s\nwant\n%s", got, want)
	}
}
