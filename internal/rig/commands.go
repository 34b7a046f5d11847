package rig

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Build is how Commands builds tagger's commands.
type Build int

const (
	// Race builds with the race detector, as the test suites themselves
	// run, for commands the test starts on the host.
	Race Build = iota
	// Static builds as the Dockerfile does (CGO_ENABLED=0, -trimpath,
	// stripped), for commands packed into images a kubelet runs.
	Static
)

// cmdDirPrefix names the per-process output directories under os.TempDir.
const cmdDirPrefix = "tagger-rig-cmd-"

var commands [2]struct {
	once sync.Once
	dir  string
	err  error
}

// Commands builds every command under cmd/ (controller, node-agent,
// kubectl-tag, ...) in one `go build` the first time a test process asks
// for a flavour, and returns the directory holding the binaries, named as
// their packages. Later calls return the same directory: a suite pays for
// the build once, whatever its tests need. The directory is per process;
// ones left by processes that have exited are removed on the next build.
func Commands(t T, b Build) string {
	t.Helper()
	c := &commands[b]
	c.once.Do(func() { c.dir, c.err = buildCommands(b) })
	if c.err != nil {
		t.Fatalf("rig: %v", c.err)
	}
	return c.dir
}

// Command is the path of one command Commands built, e.g. Command(t, Race, "controller").
func Command(t T, b Build, name string) string {
	t.Helper()
	return filepath.Join(Commands(t, b), name)
}

func buildCommands(b Build) (string, error) {
	removeStaleCommandDirs()
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("%s%d-%d", cmdDirPrefix, os.Getpid(), b))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("build commands: %w", err)
	}
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	env := os.Environ()
	switch b {
	case Race:
		args = append(args, "-race")
	case Static:
		args = append(args, "-trimpath", "-ldflags=-s -w")
		env = append(env, "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	}
	args = append(args, "./cmd/...")
	cmd := exec.Command(GoTool(), args...)
	cmd.Dir = RepoRoot()
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return dir, nil
}

// removeStaleCommandDirs removes the command directories of test processes
// that have exited.
func removeStaleCommandDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), cmdDirPrefix+"*"))
	for _, d := range dirs {
		pid, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(d), cmdDirPrefix), "-")
		n, err := strconv.Atoi(pid)
		if err != nil || n == os.Getpid() || syscall.Kill(n, 0) == nil {
			continue
		}
		_ = os.RemoveAll(d)
	}
}

// GoTool is the go command: go from PATH (`go test` puts its own GOROOT/bin
// first), else the one of the toolchain that built the test.
func GoTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}
