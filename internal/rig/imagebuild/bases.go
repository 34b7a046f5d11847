package imagebuild

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/tagger-project/tagger/pkg/registryclient"
)

// The Dockerfile's base images, as the mirror serves them: BuildKit asks the
// mirror of docker.io for library/golang and the mirror of gcr.io for
// distroless/static-debian12 (buildkitd.toml). TestBasesMatchDockerfile
// keeps these in step with the FROM lines.
const (
	golangRepo     = "library/golang"
	distrolessRepo = "distroless/static-debian12"
	distrolessTag  = "nonroot"
	// nonroot is distroless's unprivileged user and group id.
	nonroot = 65532
)

// hostInputs are the host files the bases are made of.
type hostInputs struct {
	goroot    string // `go env GOROOT`
	goVersion string // "1.26.8"
	busybox   string // a static busybox: the build stage's /bin/sh
	caCerts   string // the host's CA bundle
	zoneinfo  string // the host's tzdata
}

const (
	busyboxPath  = "/bin/busybox"
	caCertsPath  = "/etc/ssl/certs/ca-certificates.crt"
	zoneinfoPath = "/usr/share/zoneinfo"
)

// findHostInputs locates the inputs; a missing one is an error naming the
// Debian package that provides it (hack/ci-deps.sh installs them).
func findHostInputs(goTool string) (hostInputs, error) {
	out, err := exec.Command(goTool, "env", "GOROOT", "GOVERSION").Output()
	if err != nil {
		return hostInputs{}, fmt.Errorf("go env GOROOT GOVERSION: %w", err)
	}
	lines := strings.Fields(string(out))
	if len(lines) != 2 {
		return hostInputs{}, fmt.Errorf("go env GOROOT GOVERSION: unexpected output %q", out)
	}
	in := hostInputs{
		goroot: lines[0], goVersion: strings.TrimPrefix(lines[1], "go"),
		busybox: busyboxPath, caCerts: caCertsPath, zoneinfo: zoneinfoPath,
	}
	for p, pkg := range map[string]string{in.busybox: "busybox-static", in.caCerts: "ca-certificates", in.zoneinfo: "tzdata"} {
		if _, err := os.Stat(p); err != nil {
			return hostInputs{}, fmt.Errorf("%s (Debian package %s; hack/ci-deps.sh installs it): %w", p, pkg, err)
		}
	}
	return in, nil
}

// golangTags are the tags the toolchain image answers to: "1.26" (the
// Dockerfile's default GO_VERSION) and "1.26.8".
func golangTags(goVersion string) []string {
	parts := strings.SplitN(goVersion, ".", 3)
	if len(parts) < 3 {
		return []string{goVersion}
	}
	return []string{parts[0] + "." + parts[1], goVersion}
}

// golangLayer is the build stage's whole file system: the host's Go
// toolchain at /usr/local/go (without its own test suite), a static busybox
// as /bin/sh and the other applets, CA certificates for the module proxy,
// and the directories the official image has. It stays uncompressed: it is
// big, only ever read by the local buildkitd, and gzip would cost more time
// than the bytes it saves on loopback.
func golangLayer(in hostInputs) ([]entry, error) {
	tree, err := hostTree("usr/local/go", in.goroot, func(rel string) bool {
		return rel == "test" || rel == "pkg/obj"
	})
	if err != nil {
		return nil, err
	}
	applets, err := exec.Command(in.busybox, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list-full: %w", in.busybox, err)
	}
	es := append(tree, hostFile("bin/busybox", 0o755, in.busybox))
	for _, a := range strings.Fields(string(applets)) {
		if a != "bin/busybox" {
			es = append(es, symlink(a, "/bin/busybox"))
		}
	}
	return append(es,
		hostFile("etc/ssl/certs/ca-certificates.crt", 0o644, in.caCerts),
		file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n")),
		file("etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n")),
		file("etc/nsswitch.conf", 0o644, []byte("hosts: files dns\n")),
		dir("tmp", 0o1777, 0),
		dir("root", 0o700, 0),
		dir("go", 0o777, 0), dir("go/bin", 0o777, 0), dir("go/src", 0o777, 0),
	), nil
}

// golangConfig is the official golang image's runtime config.
func golangConfig(goVersion string) ocispec.ImageConfig {
	return ocispec.ImageConfig{
		Env: []string{
			"PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			"GOLANG_VERSION=" + goVersion,
			"GOTOOLCHAIN=local",
			"GOPATH=/go",
		},
		WorkingDir: "/go",
		Cmd:        []string{"sh"},
	}
}

// distrolessLayer is distroless static's content: CA certificates, tzdata,
// root and nonroot in /etc/passwd and /etc/group, nonroot's home, /tmp.
func distrolessLayer(in hostInputs) ([]entry, error) {
	zones, err := hostTree("usr/share/zoneinfo", in.zoneinfo, nil)
	if err != nil {
		return nil, err
	}
	home := fmt.Sprintf("nonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", nonroot, nonroot)
	return append(zones,
		hostFile("etc/ssl/certs/ca-certificates.crt", 0o644, in.caCerts),
		file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/sbin/nologin\n"+
			"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"+home)),
		file("etc/group", 0o644, []byte(fmt.Sprintf("root:x:0:\nnobody:x:65534:\ntty:x:5:\nstaff:x:50:\nnonroot:x:%d:\n", nonroot))),
		file("etc/nsswitch.conf", 0o644, []byte("hosts: files dns\n")),
		dir("home/nonroot", 0o700, nonroot),
		dir("root", 0o700, 0),
		dir("tmp", 0o1777, 0),
	), nil
}

// distrolessConfig is distroless static:nonroot's runtime config.
func distrolessConfig() ocispec.ImageConfig {
	return ocispec.ImageConfig{
		User:       fmt.Sprintf("%d:%d", nonroot, nonroot),
		Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "SSL_CERT_FILE=" + caCertsPath},
		WorkingDir: "/home/nonroot",
	}
}

// pushImage writes one layer of entries into dir, pushes it, the image
// config and the manifest to repo on e, under every tag, and returns the
// manifest digest. platform is "os/arch".
func pushImage(ctx context.Context, e *registryclient.Endpoint, dir, repo string, tags []string,
	platform string, entries []entry, compress bool, cfg ocispec.ImageConfig,
) (digest.Digest, error) {
	l, err := writeLayer(dir, entries, compress)
	if err != nil {
		return "", fmt.Errorf("%s: %w", repo, err)
	}
	defer os.Remove(l.path)
	goos, arch, _ := strings.Cut(platform, "/")
	config, err := json.Marshal(ocispec.Image{
		Created:  &epoch,
		Platform: ocispec.Platform{OS: goos, Architecture: arch},
		Config:   cfg,
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{l.diffID}},
	})
	if err != nil {
		return "", fmt.Errorf("%s: encode config: %w", repo, err)
	}
	configDesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(config), Size: int64(len(config))}
	manifest, err := json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    configDesc,
		Layers:    []ocispec.Descriptor{l.desc},
	})
	if err != nil {
		return "", fmt.Errorf("%s: encode manifest: %w", repo, err)
	}
	if err := pushFile(ctx, e, repo, l.desc, l.path); err != nil {
		return "", err
	}
	if err := e.PushBlob(ctx, repo, configDesc, bytes.NewReader(config)); err != nil {
		return "", err
	}
	md := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(manifest), Size: int64(len(manifest))}
	for _, tag := range tags {
		if err := e.PushManifest(ctx, repo, tag, md, manifest); err != nil {
			return "", err
		}
	}
	return md.Digest, nil
}

func pushFile(ctx context.Context, e *registryclient.Endpoint, repo string, d ocispec.Descriptor, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open layer of %s: %w", repo, err)
	}
	defer f.Close()
	return e.PushBlob(ctx, repo, d, f)
}

// pushBases synthesizes both bases and pushes them to e: the golang image
// for the build platform, distroless for the target platform.
func pushBases(ctx context.Context, e *registryclient.Endpoint, dir string, in hostInputs, buildPlatform, targetPlatform string) error {
	gl, err := golangLayer(in)
	if err != nil {
		return err
	}
	if _, err := pushImage(ctx, e, dir, golangRepo, golangTags(in.goVersion), buildPlatform, gl, false, golangConfig(in.goVersion)); err != nil {
		return fmt.Errorf("push synthesized golang image: %w", err)
	}
	dl, err := distrolessLayer(in)
	if err != nil {
		return err
	}
	if _, err := pushImage(ctx, e, dir, distrolessRepo, []string{distrolessTag}, targetPlatform, dl, true, distrolessConfig()); err != nil {
		return fmt.Errorf("push synthesized distroless image: %w", err)
	}
	return nil
}

// scratchDir is where layer files are written before they are pushed.
func scratchDir(parent string) (string, error) {
	d := filepath.Join(parent, "layers")
	return d, os.MkdirAll(d, 0o755)
}
