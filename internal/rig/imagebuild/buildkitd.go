package imagebuild

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/tagger-project/tagger/internal/rig"
)

const (
	buildkitdStartTimeout = time.Minute
	buildkitdStopGrace    = 30 * time.Second
	// lockTimeout bounds the wait for another build using the same
	// buildkitd root: a cold build takes minutes.
	lockTimeout = 30 * time.Minute
)

// CacheDir is where the persistent buildkitd state lives:
// ${XDG_CACHE_HOME:-$HOME/.cache}/tagger/buildkit. Its root keeps the
// layer cache and the RUN --mount=type=cache directories (the Go module
// and build caches) between runs, which is what makes a warm build fast.
func CacheDir() string {
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		cache = filepath.Join(os.Getenv("HOME"), ".cache")
	}
	return filepath.Join(cache, "tagger", "buildkit")
}

// lockRoot takes an exclusive flock on dir/lock, so one buildkitd at a time
// uses the root (two daemons on one root corrupt its bolt databases). The
// lock goes with the process, also when it is killed.
func lockRoot(t rig.T, dir string) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatalf("imagebuild: open lock: %v", err)
	}
	start := time.Now()
	rig.WaitFor(t, lockTimeout, "the buildkit root lock "+f.Name()+" (another build is using it)", func() (bool, string) {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		return err == nil, fmt.Sprint(err)
	})
	if waited := time.Since(start); waited > time.Second {
		t.Logf("imagebuild: waited %v for the buildkit root lock", waited.Round(time.Second))
	}
	t.Cleanup(func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	})
}

// buildkitdConfig is buildkitd.toml: the synthesized bases are served for
// docker.io and gcr.io by the mirror on loopback, which, like the
// destination registry, speaks plain HTTP.
func buildkitdConfig(mirror string, plainHTTP []string) string {
	var b strings.Builder
	b.WriteString("[worker.oci]\n  enabled = true\n[worker.containerd]\n  enabled = false\n")
	for _, upstream := range []string{"docker.io", "gcr.io"} {
		fmt.Fprintf(&b, "[registry.%q]\n  mirrors = [%q]\n", upstream, mirror)
	}
	seen := map[string]bool{}
	for _, h := range append([]string{mirror}, plainHTTP...) {
		if h != "" && !seen[h] {
			seen[h] = true
			fmt.Fprintf(&b, "[registry.%q]\n  http = true\n", h)
		}
	}
	return b.String()
}

// buildkitd is a running daemon.
type buildkitd struct {
	proc *rig.Process
	addr string // "unix:///tmp/tagger-bk-.../buildkitd.sock"
	root string
}

// startBuildkitd starts buildkitd with the runc worker on root, its socket
// in a fresh short directory under /tmp (a unix socket path is limited to
// 108 bytes), and waits until buildctl sees its worker. The build steps
// share the host's network: the module proxy is reached from RUN.
func startBuildkitd(t rig.T, bins, root, config, runc string) *buildkitd {
	t.Helper()
	sockDir, err := os.MkdirTemp("/tmp", "tagger-bk-")
	if err != nil {
		t.Fatalf("imagebuild: socket dir: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(sockDir) })
	cfgPath := filepath.Join(sockDir, "buildkitd.toml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		t.Fatalf("imagebuild: write buildkitd.toml: %v", err)
	}
	d := &buildkitd{addr: "unix://" + filepath.Join(sockDir, "buildkitd.sock"), root: root}
	cmd := exec.Command(filepath.Join(bins, "buildkitd"),
		"--root", root, "--addr", d.addr, "--config", cfgPath,
		"--oci-worker=true", "--containerd-worker=false",
		"--oci-worker-binary="+runc, "--oci-worker-net=host")
	cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none")
	d.proc, err = rig.StartProcess(cmd, rig.NewTailBuffer(256<<10))
	if err != nil {
		t.Fatalf("imagebuild: start buildkitd: %v", err)
	}
	t.Cleanup(func() { d.stop(t) })
	rig.WaitFor(t, buildkitdStartTimeout, "buildkitd to list its worker", func() (bool, string) {
		select {
		case <-d.proc.Done():
			t.Fatalf("imagebuild: buildkitd exited (%v):\n%s", d.proc.Err(), d.proc.Output())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, filepath.Join(bins, "buildctl"), "--addr", d.addr, "debug", "workers").CombinedOutput()
		return err == nil && strings.Contains(string(out), "linux/"), fmt.Sprintf("%v: %s", err, out)
	})
	return d
}

// stop ends buildkitd (SIGTERM, then SIGKILL) and removes any mount it left
// under its root, so nothing of the build outlives the test.
func (d *buildkitd) stop(t rig.T) {
	if !d.proc.Terminate(buildkitdStopGrace) {
		t.Logf("imagebuild: buildkitd did not stop %v after SIGTERM; killing it", buildkitdStopGrace)
		d.proc.KillWait()
	}
	if t.Failed() {
		t.Logf("imagebuild: buildkitd output (tail):\n%s", d.proc.Output())
	}
	left, err := mountsUnder(d.root)
	if err != nil {
		t.Errorf("imagebuild: %v", err)
		return
	}
	for _, m := range left {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			t.Errorf("imagebuild: unmount %s left by buildkitd: %v", m, err)
		}
	}
	if len(left) > 0 {
		t.Logf("imagebuild: unmounted %d mounts buildkitd left under %s", len(left), d.root)
	}
}

// mountsUnder lists the mount points at or below dir, deepest first.
func mountsUnder(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		// Octal escapes (\040 for a space) never occur under our root.
		if mp := fields[4]; mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append([]string{mp}, out...)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	return out, nil
}
