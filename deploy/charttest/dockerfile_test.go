package charttest

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"

	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/internal/rig/imagebuild"
)

// dockerfile is the repository's Dockerfile as instructions: comments
// dropped, continuation lines joined.
func dockerfile(t *testing.T) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot(t), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	cur := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cur += strings.TrimSuffix(line, "\\") + " "
			continue
		}
		out = append(out, strings.Join(strings.Fields(cur+line), " "))
		cur = ""
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if cur != "" {
		t.Fatalf("Dockerfile ends in a continuation line: %q", cur)
	}
	return out
}

// The golang base tag follows go.mod's language version: a build with the
// base the Dockerfile names must be able to compile the module (the image
// sets GOTOOLCHAIN=local). The build below runs on the toolchain of this
// machine, so only the text can say which tag a user's build pulls.
func TestDockerfileGoVersionMatchesGoMod(t *testing.T) {
	gomod, err := os.ReadFile(filepath.Join(repoRoot(t), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goLine := regexp.MustCompile(`(?m)^go (\d+\.\d+)(\.\d+)?$`).FindSubmatch(gomod)
	if goLine == nil {
		t.Fatal("go.mod has no go line")
	}
	text := strings.Join(dockerfile(t), "\n")
	if m := regexp.MustCompile(`(?m)^ARG GO_VERSION=(\S+)$`).FindStringSubmatch(text); m == nil || m[1] != string(goLine[1]) {
		t.Errorf("Dockerfile ARG GO_VERSION = %v, want %s (go.mod: %s)", m, goLine[1], goLine[0])
	}
}

// TestDockerfileImage builds the Dockerfile with BuildKit (internal/rig/imagebuild),
// pushes the image to a real registry, reads it back through
// pkg/registryclient and checks what the chart and users rely on: a
// non-root user, CA certificates (the controller talks HTTPS to
// registries), tzdata, every command the chart runs present at
// /usr/local/bin and statically linked (the base has no libc), and
// --version on each printing the version the build stamped in.
func TestDockerfileImage(t *testing.T) {
	reg := rig.NewRegistry(t, rig.RegistryOptions{})
	const version, commit, date = "v0.0.0-imagetest", "0123456789abcdef0123456789abcdef01234567", "2026-11-30T00:00:00Z"
	res := imagebuild.Build(t, imagebuild.Options{
		Dest: reg.Host() + "/tagger:imagetest", Version: version, Commit: commit, Date: date,
	})
	img := pullImage(t, reg.URL(), "tagger", res.Digest)

	if got := img.config.Config.User; got != "65532:65532" {
		t.Errorf("image user %q, want 65532:65532 (distroless nonroot)", got)
	}
	if got := img.config.Architecture; got != runtime.GOARCH || img.config.OS != "linux" {
		t.Errorf("image platform %s/%s, want linux/%s", img.config.OS, got, runtime.GOARCH)
	}
	for _, p := range []string{"etc/ssl/certs/ca-certificates.crt", "usr/share/zoneinfo/UTC"} {
		if f, ok := img.lookup(p); !ok || len(f.data) == 0 {
			t.Errorf("image lacks /%s (or it is empty)", p)
		}
	}
	if f, ok := img.lookup("etc/ssl/certs/ca-certificates.crt"); ok && !bytes.Contains(f.data, []byte("BEGIN CERTIFICATE")) {
		t.Errorf("/etc/ssl/certs/ca-certificates.crt holds no PEM certificate")
	}
	if f, ok := img.lookup("etc/passwd"); !ok || !strings.Contains(string(f.data), ":65532:65532:") {
		t.Errorf("/etc/passwd has no nonroot (65532) user")
	}

	dir := t.TempDir()
	for _, name := range []string{"controller", "node-agent", "kubectl-tag"} {
		f, ok := img.lookup("usr/local/bin/" + name)
		if !ok {
			t.Errorf("image lacks /usr/local/bin/%s", name)
			continue
		}
		if f.hdr.Mode&0o111 == 0 {
			t.Errorf("/usr/local/bin/%s mode %o is not executable", name, f.hdr.Mode)
		}
		checkStatic(t, name, f.data)
		bin := filepath.Join(dir, name)
		if err := os.WriteFile(bin, f.data, 0o755); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, bin, "--version").CombinedOutput()
		cancel()
		if err != nil {
			t.Errorf("%s --version: %v\n%s", name, err, out)
			continue
		}
		want := name + " " + version + " (commit " + commit + ", built " + date + ", go"
		if !strings.HasPrefix(string(out), want) {
			t.Errorf("%s --version printed %q, want it to start with %q", name, out, want)
		}
	}

	// Each container of the chart runs a binary of this image, and the
	// controller runs as the image's user.
	r := render(t, "")
	ctrl := get[*appsv1.Deployment](t, r, "Deployment", "tagger-controller")
	agent := get[*appsv1.DaemonSet](t, r, "DaemonSet", "tagger-node-agent")
	for _, c := range append(ctrl.Spec.Template.Spec.Containers, agent.Spec.Template.Spec.Containers...) {
		if len(c.Command) != 1 || path.Dir(c.Command[0]) != "/usr/local/bin" {
			t.Errorf("container %s: command %q, want one /usr/local/bin/<cmd> binary", c.Name, c.Command)
			continue
		}
		if _, ok := img.lookup(c.Command[0]); !ok {
			t.Errorf("container %s runs %s, which the image lacks", c.Name, c.Command[0])
		}
	}
	if sc := ctrl.Spec.Template.Spec.SecurityContext; sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != 65532 {
		t.Errorf("controller pod securityContext %+v, want runAsUser 65532 (the image's user)", sc)
	}
}

// checkStatic fails unless b is an ELF executable for this machine with no
// program interpreter: it runs on an image without a dynamic loader or libc.
func checkStatic(t *testing.T, name string, b []byte) {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		t.Errorf("/usr/local/bin/%s is not ELF: %v", name, err)
		return
	}
	defer f.Close()
	want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[runtime.GOARCH]
	if f.Machine != want {
		t.Errorf("/usr/local/bin/%s is for %v, want %v", name, f.Machine, want)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("/usr/local/bin/%s has a program interpreter (PT_INTERP): dynamically linked", name)
		}
	}
}
