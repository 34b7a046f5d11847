// Package imagebuild builds tagger's image from the repository's Dockerfile
// for real, with BuildKit and no Docker engine: it starts buildkitd (runc
// worker, a persistent root so warm builds reuse the Go caches), serves
// synthesized stand-ins for the Dockerfile's base images (golang and
// distroless static) from a loopback registry that buildkitd.toml names as
// the mirror of docker.io and gcr.io, runs buildctl with the built-in
// Dockerfile frontend, and pushes the image where the caller says.
// docs/local-cluster.md ("The tagger image") explains every setting.
package imagebuild

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/pkg/registryclient"
)

// buildTimeout bounds one buildctl run; a cold build downloads every module
// and compiles everything on a loaded machine.
const buildTimeout = 30 * time.Minute

// Options say what to build and where it goes. Exactly one of Dest and
// OCIArchive is set.
type Options struct {
	// Dest is the image reference to push to, "HOST:PORT/repo:tag", over
	// plain HTTP (a registry the caller runs, e.g. rig.NewRegistry).
	Dest string
	// OCIArchive, instead of Dest, writes the image as an OCI layout tarball
	// at this path.
	OCIArchive string
	// Version, Commit and Date are stamped into the binaries (pkg/version);
	// empty leaves the Dockerfile's defaults.
	Version, Commit, Date string
	// Platform is the target "os/arch"; default this machine's. The build
	// stage always runs on this machine and cross-compiles.
	Platform string
	// Context is the repository root holding the Dockerfile; default the
	// module root of the current directory.
	Context string
	// GoProxy and GoSumDB are passed as build args; default this machine's
	// `go env` values.
	GoProxy, GoSumDB string
}

// Result is the built image.
type Result struct {
	// Ref is Dest, or OCIArchive.
	Ref string
	// Digest is the image manifest's digest.
	Digest digest.Digest
	// Duration is buildctl's wall time (without starting buildkitd and
	// synthesizing the bases).
	Duration time.Duration
}

// Build builds the Dockerfile as Options say, and stops every process it
// started when t ends. It needs root, runc and the buildkitd, buildctl and
// registry binaries of hack/testbin.sh: without them it skips, and under
// CI=true it fails.
func Build(t rig.T, o Options) Result {
	t.Helper()
	bins := rig.RequireBins(t, "buildkitd", "buildctl", "registry")
	rig.RequireRoot(t)
	runc := requireRunc(t)
	o = withDefaults(t, o)

	root := CacheDir()
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatalf("imagebuild: %v", err)
	}
	lockRoot(t, root)

	in, err := findHostInputs(rig.GoTool())
	if err != nil {
		t.Fatalf("imagebuild: %v", err)
	}
	mirror := rig.StartRegistry(t, filepath.Join(bins, "registry"), rig.RegistryOptions{})
	scratch, err := scratchDir(t.TempDir())
	if err != nil {
		t.Fatalf("imagebuild: %v", err)
	}
	e, err := registryclient.NewEndpoint(mirror.URL(), nil)
	if err != nil {
		t.Fatalf("imagebuild: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	if err := pushBases(ctx, e, scratch, in, hostPlatform(), o.Platform); err != nil {
		t.Fatalf("imagebuild: %v", err)
	}
	t.Logf("imagebuild: synthesized and pushed the golang %s and distroless bases to %s in %v",
		in.goVersion, mirror.Host(), time.Since(start).Round(time.Millisecond))

	d := startBuildkitd(t, bins, filepath.Join(root, "root"), buildkitdConfig(mirror.Host(), []string{destHost(o.Dest)}), runc)
	return runBuildctl(t, filepath.Join(bins, "buildctl"), d.addr, o)
}

func requireRunc(t rig.T) string {
	t.Helper()
	p, err := exec.LookPath("runc")
	if err != nil {
		msg := "imagebuild: runc not found on PATH (Debian package runc; hack/ci-deps.sh installs it): %v"
		if rig.InCI() {
			t.Fatalf(msg+" (CI=true: rig tests fail instead of skipping)", err)
		}
		t.Skipf(msg, err)
	}
	return p
}

func hostPlatform() string { return "linux/" + runtime.GOARCH }

func withDefaults(t rig.T, o Options) Options {
	t.Helper()
	if (o.Dest == "") == (o.OCIArchive == "") {
		t.Fatalf("imagebuild: set exactly one of Dest and OCIArchive (got %q and %q)", o.Dest, o.OCIArchive)
	}
	if o.Platform == "" {
		o.Platform = hostPlatform()
	}
	if o.Context == "" || o.GoProxy == "" || o.GoSumDB == "" {
		out, err := exec.Command(rig.GoTool(), "env", "GOMOD", "GOPROXY", "GOSUMDB").Output()
		if err != nil {
			t.Fatalf("imagebuild: go env: %v", err)
		}
		vals := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(vals) != 3 || vals[0] == "" || vals[0] == os.DevNull {
			t.Fatalf("imagebuild: go env GOMOD GOPROXY GOSUMDB: %q (run inside the module, or set Options.Context)", out)
		}
		if o.Context == "" {
			o.Context = filepath.Dir(vals[0])
		}
		if o.GoProxy == "" {
			o.GoProxy = vals[1]
		}
		if o.GoSumDB == "" {
			o.GoSumDB = vals[2]
		}
	}
	return o
}

// destHost is the registry host of "HOST:PORT/repo:tag".
func destHost(ref string) string {
	h, _, _ := strings.Cut(ref, "/")
	return h
}

// buildctlArgs is the build command line.
func buildctlArgs(addr, metadata string, o Options) []string {
	args := []string{"--addr", addr, "build", "--progress", "plain",
		"--frontend", "dockerfile.v0",
		"--local", "context=" + o.Context, "--local", "dockerfile=" + o.Context,
		"--opt", "platform=" + o.Platform,
		"--metadata-file", metadata,
	}
	for _, kv := range [][2]string{
		{"VERSION", o.Version}, {"COMMIT", o.Commit}, {"DATE", o.Date},
		{"GOPROXY", o.GoProxy}, {"GOSUMDB", o.GoSumDB},
	} {
		if kv[1] != "" {
			args = append(args, "--opt", "build-arg:"+kv[0]+"="+kv[1])
		}
	}
	if o.Dest != "" {
		return append(args, "--output", "type=image,name="+o.Dest+",push=true,registry.insecure=true")
	}
	return append(args, "--output", "type=oci,dest="+o.OCIArchive)
}

func runBuildctl(t rig.T, buildctl, addr string, o Options) Result {
	t.Helper()
	metadata := filepath.Join(t.TempDir(), "metadata.json")
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, buildctl, buildctlArgs(addr, metadata, o)...)
	out := rig.NewTailBuffer(64 << 10)
	cmd.Stdout, cmd.Stderr = out, out
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	if err != nil {
		t.Fatalf("imagebuild: buildctl build (%v): %v\n%s", took.Round(time.Second), err, out)
	}
	b, err := os.ReadFile(metadata)
	if err != nil {
		t.Fatalf("imagebuild: read buildctl metadata: %v", err)
	}
	var md struct {
		Digest string `json:"containerimage.digest"`
	}
	if err := json.Unmarshal(b, &md); err != nil {
		t.Fatalf("imagebuild: decode buildctl metadata %s: %v", b, err)
	}
	dg, err := digest.Parse(md.Digest)
	if err != nil {
		t.Fatalf("imagebuild: buildctl metadata digest %q: %v", md.Digest, err)
	}
	ref := o.Dest
	if ref == "" {
		ref = o.OCIArchive
	}
	t.Logf("imagebuild: built %s (%s) for %s in %v", ref, dg, o.Platform, took.Round(time.Second))
	return Result{Ref: ref, Digest: dg, Duration: took}
}
