package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/tagger-project/tagger/hack/bench/internal/benchproc"
)

// craneVersion is the crane the benchmark builds from the Go module proxy.
const craneVersion = "v0.22.1"

// benchCache is where the benchmark keeps tools it builds, outside the
// checkout (next to the rig binaries and the patched wrk).
func benchCache() string {
	dir := os.Getenv("XDG_CACHE_HOME")
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".cache")
	}
	return filepath.Join(dir, "tagger", "bench")
}

// findSkopeo returns the skopeo to compare with, or an error saying how to
// install it.
func findSkopeo(flagValue string) (string, string, error) {
	bin := flagValue
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("skopeo"); err != nil {
			return "", "", errors.New("skopeo not found: install it with `apt-get install -y skopeo` (Debian), pass -skopeo /path, " +
				"or leave it out with -tools tagger,crane (the report then says so)")
		}
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return "", "", fmt.Errorf("%s --version: %w", bin, err)
	}
	return bin, strings.TrimSpace(string(out)), nil
}

// findCrane returns crane: the -crane flag's, else the one built into
// ~/.cache/tagger/bench/crane-<version>/, building it on first use with
// `go install github.com/google/go-containerregistry/cmd/crane@<version>`.
func findCrane(ctx context.Context, flagValue string) (string, string, error) {
	bin := flagValue
	if bin == "" {
		dir := filepath.Join(benchCache(), "crane-"+craneVersion)
		bin = filepath.Join(dir, "crane")
		if _, err := os.Stat(bin); err != nil {
			logf("building crane %s into %s (go install, from the module proxy)", craneVersion, dir)
			cmd := exec.CommandContext(ctx, benchproc.GoCmd(), "install", "github.com/google/go-containerregistry/cmd/crane@"+craneVersion)
			cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=")
			cmd.Dir = os.TempDir() // outside any module
			if out, err := cmd.CombinedOutput(); err != nil {
				return "", "", fmt.Errorf("go install crane@%s: %w\n%s", craneVersion, err, out)
			}
		}
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		return "", "", fmt.Errorf("%s version: %w", bin, err)
	}
	return bin, "crane " + strings.TrimSpace(string(out)), nil
}

// policyFile writes a containers-policy.json that accepts anything, so
// skopeo does not depend on the machine's /etc/containers/policy.json.
func policyFile(dir string) (string, error) {
	p := filepath.Join(dir, "policy.json")
	return p, os.WriteFile(p, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`+"\n"), 0o644)
}

// toolRun is one external copy process.
type toolRun struct {
	wall       time.Duration
	cpu        time.Duration // user+system (rusage)
	rssMax     int64         // sampled VmRSS max
	rssSamples int
}

// runTool runs argv, sampling its RSS every rssEvery, and returns its wall
// and CPU time; its output goes to logPath.
func runTool(ctx context.Context, argv []string, logPath string, rssEvery time.Duration) (toolRun, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return toolRun{}, err
	}
	defer logFile.Close()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// No proxies, no credentials helpers from the environment.
	cmd.Env = append(os.Environ(), "NO_PROXY=*", "no_proxy=*")
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return toolRun{}, err
	}
	s := sampleRSS(cmd.Process.Pid, rssEvery)
	err = cmd.Wait()
	wall := time.Since(start)
	// Sampled, not rusage's ru_maxrss: the child is forked with
	// CLONE_VM|CLONE_VFORK, so its high-water mark starts at this
	// process's RSS.
	r := toolRun{wall: wall}
	r.rssMax, r.rssSamples = s.stop()
	if ps := cmd.ProcessState; ps != nil {
		r.cpu = ps.UserTime() + ps.SystemTime()
	}
	if err != nil {
		return r, fmt.Errorf("%s: %w; output:\n%s", strings.Join(argv, " "), err, benchproc.Tail(logPath, 2048))
	}
	return r, nil
}
