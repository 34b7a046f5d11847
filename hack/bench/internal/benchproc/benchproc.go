// Package benchproc is what the benchmarks under hack/bench share: building
// and running the real controller binary as its own process (ephemeral
// listen addresses, Pdeathsig, readiness, stop), reading a process's memory
// and CPU and the machine's load from /proc, scraping Prometheus metrics,
// and the signal handling around a benchmark's run.
package benchproc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tagger-project/tagger/internal/rig"
)

// Main runs run with a rig.Program named by prefix (for its temp
// dirs) and a context, and returns the exit code: 0, or 1 after printing
// run's error. SIGINT, SIGTERM or SIGHUP cancel the context, run every
// cleanup and exit with 130.
func Main(prefix string, run func(ctx context.Context, r *rig.Program) error) int {
	r := &rig.Program{Prefix: prefix}
	ctx, cancel := context.WithCancel(context.Background())
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sigc
		fmt.Fprintf(os.Stderr, "bench: %v: stopping everything\n", s)
		cancel()
		r.Close()
		os.Exit(130)
	}()

	code := 0
	if err := r.Run(func() error { return run(ctx, r) }); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		code = 1
	}
	cancel()
	r.Close()
	return code
}

// WriteJSON writes v to path as indented JSON, with a final newline.
func WriteJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// GoCmd is the go command ($GO or "go").
func GoCmd() string {
	if g := os.Getenv("GO"); g != "" {
		return g
	}
	return "go"
}

// ModuleRoot is the directory of the main module's go.mod.
func ModuleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, GoCmd(), "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the tagger module: run from the repository")
	}
	return filepath.Dir(mod), nil
}

// FreePort asks the kernel for a free loopback port. Another process can
// take it before the controller binds it; StartController retries then.
func FreePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("pick a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Spec says how to start the controller.
type Spec struct {
	Bin  string   // the binary
	Args []string // flags other than the listen addresses
	// Webhook gives the webhook server a fresh loopback port too; without
	// it the webhook server is off (--webhook-addr 0).
	Webhook bool
	// LogPath is the file its output goes to, for each start attempt (0, 1, 2).
	LogPath func(attempt int) string
	Name    string                   // for messages
	Logf    func(f string, a ...any) // for the kill after a stop timeout
}

// Controller is the controller running as its own process.
type Controller struct {
	cmd     *exec.Cmd
	LogPath string
	Webhook string // 127.0.0.1:port, "" with the webhook server off
	Metrics string
	Health  string
	done    chan struct{}
	err     error
	stop    func()
}

// StartController starts the controller on fresh loopback ports and waits
// until /readyz answers 200 (its Tag cache has synced) and its Tag
// controller's workers have started. The process gets SIGTERM when stopped
// (SIGKILL after 15s), and SIGKILL from the kernel if this program dies
// first (Pdeathsig). r.Cleanup stops it too.
func StartController(r interface{ Cleanup(func()) }, s Spec) (*Controller, error) {
	var lastErr error
	for attempt := range 3 {
		p, err := tryStartController(r, s, attempt)
		if err == nil {
			return p, nil
		}
		lastErr = err
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, lastErr
}

func tryStartController(r interface{ Cleanup(func()) }, s Spec, attempt int) (*Controller, error) {
	n := 2
	if s.Webhook {
		n = 3
	}
	addrs := make([]string, n)
	for i := range addrs {
		a, err := FreePort()
		if err != nil {
			return nil, err
		}
		addrs[i] = a
	}
	p := &Controller{LogPath: s.LogPath(attempt), done: make(chan struct{})}
	webhookAddr := "0"
	if s.Webhook {
		p.Webhook, addrs = addrs[0], addrs[1:]
		webhookAddr = p.Webhook
	}
	p.Metrics, p.Health = addrs[0], addrs[1]
	logFile, err := os.Create(p.LogPath)
	if err != nil {
		return nil, err
	}
	args := append(append([]string(nil), s.Args...), "--webhook-addr", webhookAddr, "--metrics-addr", p.Metrics, "--health-addr", p.Health)
	p.cmd = exec.Command(s.Bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", s.Bin, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	var once sync.Once
	p.stop = func() {
		once.Do(func() {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(15 * time.Second):
				s.Logf("%s (pid %d) did not stop 15s after SIGTERM: killing it", s.Name, p.cmd.Process.Pid)
				_ = p.cmd.Process.Kill()
				<-p.done
			}
		})
	}
	r.Cleanup(p.stop)

	deadline := time.Now().Add(90 * time.Second)
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		resp, err := client.Get("http://" + p.Health + "/readyz")
		if err == nil {
			resp.Body.Close()
			// /readyz answers 200 once the cache has synced, which can be
			// before the Tag controller has registered its event handler:
			// Tags created in between reach it as part of the "initial
			// list", which controller-runtime's priority queue files at
			// low priority. Wait for the controller's workers, so every
			// Tag the benchmark creates is an ordinary create event.
			if resp.StatusCode == http.StatusOK && LogHas(p.LogPath, `"msg":"Starting workers"`) {
				return p, nil
			}
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("%s exited (%v) before it was ready; log:\n%s", s.Name, p.err, Tail(p.LogPath, 4096))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("%s not ready after 90s; log:\n%s", s.Name, Tail(p.LogPath, 4096))
		}
	}
}

// Stop stops the controller (SIGTERM, SIGKILL after 15s) and waits for it
// to exit; stopping it again does nothing.
func (p *Controller) Stop() { p.stop() }

// Pid is the controller's process id.
func (p *Controller) Pid() int { return p.cmd.Process.Pid }

// Alive reports whether the process is still running.
func (p *Controller) Alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Err is how the process exited; nil while it runs.
func (p *Controller) Err() error {
	select {
	case <-p.done:
		return p.err
	default:
		return nil
	}
}

// LogHas reports whether the file contains s.
func LogHas(path, s string) bool {
	b, err := os.ReadFile(path)
	return err == nil && bytes.Contains(b, []byte(s))
}

// Tail returns the last n bytes of a file.
func Tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > n {
		_, _ = f.Seek(-n, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

// VmRSS reads VmRSS of pid from /proc, in bytes.
func VmRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) != 2 || f[1] != "kB" {
				return 0, fmt.Errorf("unexpected VmRSS line %q", sc.Text())
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// CPUTime is the user+system CPU time pid has used (/proc/<pid>/stat).
func CPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces; fields start after its ")".
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	const hz = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / hz, nil
}

// MachineCPU returns busy and total jiffies of the whole machine.
func MachineCPU() (busy, total int64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total
}

// Loadavg is the 1, 5 and 15 minute load averages, "?" when unknown.
func Loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// Scrape fetches a Prometheus text endpoint and sums every sample of each
// family in names (labels ignored).
func Scrape(addr string, names ...string) (map[string]float64, error) {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name := line
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name = line[:i]
		}
		if !want[name] {
			continue
		}
		rest := line[len(name):]
		if strings.HasPrefix(rest, "{") {
			rest = rest[strings.LastIndexByte(rest, '}')+1:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(f[0], 64); err == nil {
			out[name] += v
		}
	}
	return out, sc.Err()
}
