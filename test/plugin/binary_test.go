package plugin

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/pkg/kubectltag"
)

// TestBinary builds cmd/kubectl-tag and runs it as kubectl would, proving the
// main wiring: arguments, stdout, stderr and the exit code.
func TestBinary(t *testing.T) {
	c := startCluster(t)
	bin := rig.Command(t, rig.Race, "kubectl-tag")

	run := func(env []string, args ...string) (stdout, stderr string, code int) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), env...)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		var exit *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &exit):
			code = exit.ExitCode()
		default:
			t.Fatalf("run kubectl-tag %q: %v", args, err)
		}
		t.Logf("$ kubectl-tag %s  (exit %d)\n%s%s", strings.Join(args, " "), code, out.String(), errOut.String())
		return out.String(), errOut.String(), code
	}

	deleteTagOnCleanup(t, c, "bin")
	if out, errOut, code := run(nil, "create", "bin", "--image", "registry.invalid/bin/app:v1", "--kubeconfig", cluster.kubeconfig); code != 0 || out != "tag.tagger.dev/bin created\n" {
		t.Fatalf("create: exit %d stdout %q stderr %q", code, out, errOut)
	}
	out, errOut, code := run(nil, "list", "--kubeconfig", cluster.kubeconfig)
	if code != 0 || errOut != "" {
		t.Fatalf("list: exit %d stderr %q", code, errOut)
	}
	tb := parseTable(t, out, "NAME", "IMAGE", "SERVED", "DIGEST", "LATEST", "CACHED", "AGE")
	if got := tb.cell(t, tb.row(t, "bin"), "IMAGE"); got != "registry.invalid/bin/app:v1" {
		t.Fatalf("IMAGE = %q", got)
	}

	// $KUBECONFIG with the dead context current, overridden by --context.
	env := []string{"KUBECONFIG=" + cluster.nowhereConfig}
	if _, _, code := run(env, "list", "--context", ctxEnvtest); code != 0 {
		t.Fatalf("list --context envtest with $KUBECONFIG: exit %d", code)
	}
	out, errOut, code = run(env, "history", "nope", "--context", ctxEnvtest)
	if code != 1 || out != "" || errOut != "error: Tag \"nope\" not found\n" {
		t.Fatalf("history nope: exit %d stdout %q stderr %q", code, out, errOut)
	}

	// kubectl (1.26+) completes `kubectl tag history b<TAB>` by running
	// kubectl_complete-tag with the words after `kubectl tag`: a link to
	// the binary answers.
	link := filepath.Join(t.TempDir(), kubectltag.CompletionBinary)
	if err := os.Symlink(bin, link); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(link, "history", "--context", ctxEnvtest, "b")
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil || !strings.HasPrefix(stdout.String(), "bin\tregistry.invalid/bin/app:v1\n") || !strings.HasSuffix(stdout.String(), "\n:4\n") {
		t.Fatalf("%s history b: %v\nstdout:\n%s\nstderr:\n%s", kubectltag.CompletionBinary, err, stdout.String(), stderr.String())
	}
}
