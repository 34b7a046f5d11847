package charttest

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
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

// TestDockerfileMatchesChart: no Docker engine can build the image here, so
// what the chart and go.mod rely on is checked in the Dockerfile's text:
// the Go version, a static build of every command, the binaries landing
// where the chart's `command:` looks, and the user the chart runs as.
func TestDockerfileMatchesChart(t *testing.T) {
	root := repoRoot(t)
	ins := dockerfile(t)
	text := strings.Join(ins, "\n")

	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goLine := regexp.MustCompile(`(?m)^go (\d+\.\d+)(\.\d+)?$`).FindSubmatch(gomod)
	if goLine == nil {
		t.Fatal("go.mod has no go line")
	}
	if m := regexp.MustCompile(`(?m)^ARG GO_VERSION=(\S+)$`).FindStringSubmatch(text); m == nil || m[1] != string(goLine[1]) {
		t.Errorf("Dockerfile ARG GO_VERSION = %v, want %s (go.mod: %s)", m, goLine[1], goLine[0])
	}
	for _, want := range []string{
		"FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build",
		"CGO_ENABLED=0", // the final stage has no libc
		"go build -trimpath -buildvcs=false",
		"-o /out/ ./cmd/...",
		"COPY --from=build /out/ /usr/local/bin/",
		"USER 65532:65532",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	if last := ins[len(ins)-1]; !strings.HasPrefix(last, "ENTRYPOINT ") {
		t.Errorf("the Dockerfile's last instruction is %q, want the ENTRYPOINT", last)
	}

	// Each container's command is a binary ./cmd/... builds, and the
	// controller runs as the image's user.
	r := render(t, "")
	ctrl := get[*appsv1.Deployment](t, r, "Deployment", "tagger-controller")
	agent := get[*appsv1.DaemonSet](t, r, "DaemonSet", "tagger-node-agent")
	for _, c := range append(ctrl.Spec.Template.Spec.Containers, agent.Spec.Template.Spec.Containers...) {
		if len(c.Command) != 1 || !strings.HasPrefix(c.Command[0], "/usr/local/bin/") {
			t.Errorf("container %s: command %q, want one /usr/local/bin/<cmd> binary", c.Name, c.Command)
			continue
		}
		name := strings.TrimPrefix(c.Command[0], "/usr/local/bin/")
		if _, err := os.Stat(filepath.Join(root, "cmd", name, "main.go")); err != nil {
			t.Errorf("container %s runs %s, which ./cmd/... does not build: %v", c.Name, c.Command[0], err)
		}
	}
	if sc := ctrl.Spec.Template.Spec.SecurityContext; sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != 65532 {
		t.Errorf("controller pod securityContext %+v, want runAsUser 65532 (the Dockerfile's USER)", sc)
	}
}
