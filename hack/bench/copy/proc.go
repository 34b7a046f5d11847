package main

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
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tagger-project/tagger/internal/registrytest"
)

func logf(f string, a ...any) {
	fmt.Fprintf(os.Stderr, "bench: %s "+f+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
}

// goCmd is the go command ($GO or "go").
func goCmd() string {
	if g := os.Getenv("GO"); g != "" {
		return g
	}
	return "go"
}

// buildController builds ./cmd/controller (the shipped binary) into dir.
func buildController(ctx context.Context, root, dir string) (string, error) {
	bin := filepath.Join(dir, "controller")
	cmd := exec.CommandContext(ctx, goCmd(), "build", "-o", bin, "./cmd/controller")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build ./cmd/controller: %w\n%s", err, out)
	}
	return bin, nil
}

// moduleRoot is the directory of the main module's go.mod.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, goCmd(), "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the tagger module: run from the repository")
	}
	return filepath.Dir(mod), nil
}

// freePort asks the kernel for a free loopback port.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("pick a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// controllerProc is the controller running as its own process.
type controllerProc struct {
	cmd     *exec.Cmd
	logPath string
	metrics string
	health  string
	done    chan struct{}
	err     error
	stop    func()
}

// startController starts bin with args plus fresh metrics and health ports
// (webhooks off) and waits until it is ready and its Tag workers run. It
// gets SIGTERM when stopped (SIGKILL after 15s) and SIGKILL from the kernel
// if this program dies first (Pdeathsig).
func startController(r *registrytest.Program, bin string, args []string, logPath string) (*controllerProc, error) {
	var lastErr error
	for range 3 {
		p, err := tryStartController(r, bin, args, logPath)
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

func tryStartController(r *registrytest.Program, bin string, args []string, logPath string) (*controllerProc, error) {
	var addrs [2]string
	for i := range addrs {
		a, err := freePort()
		if err != nil {
			return nil, err
		}
		addrs[i] = a
	}
	p := &controllerProc{metrics: addrs[0], health: addrs[1], logPath: logPath, done: make(chan struct{})}
	logFile, err := os.Create(p.logPath)
	if err != nil {
		return nil, err
	}
	args = append(append([]string(nil), args...), "--webhook-addr", "0", "--metrics-addr", p.metrics, "--health-addr", p.health)
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
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
				logf("controller (pid %d) did not stop 15s after SIGTERM: killing it", p.cmd.Process.Pid)
				_ = p.cmd.Process.Kill()
				<-p.done
			}
		})
	}
	r.Cleanup(p.stop)

	deadline := time.Now().Add(90 * time.Second)
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		resp, err := client.Get("http://" + p.health + "/readyz")
		if err == nil {
			resp.Body.Close()
			// Ready once the cache synced and the Tag controller's workers
			// run, so the Tag the benchmark creates is an ordinary create.
			if resp.StatusCode == http.StatusOK && logHas(p.logPath, `"msg":"Starting workers"`) {
				return p, nil
			}
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("controller exited (%v) before it was ready; log:\n%s", p.err, tail(p.logPath, 4096))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("controller not ready after 90s; log:\n%s", tail(p.logPath, 4096))
		}
	}
}

func (p *controllerProc) pid() int { return p.cmd.Process.Pid }

// copyLog is the controller's "copied into bundled registry" log line.
type copyLog struct {
	Time          time.Time     `json:"-"`
	Duration      time.Duration `json:"-"`
	Blobs         int           `json:"blobs"`
	Uploaded      int           `json:"uploaded"`
	Present       int           `json:"present"`
	Mounted       int           `json:"mounted"`
	BytesUploaded int64         `json:"bytesUploaded"`
	Digest        string        `json:"digest"`
}

// copyLogs reads every successful copy the controller logged (JSON format).
func copyLogs(path string) ([]copyLog, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []copyLog
	for _, line := range bytes.Split(b, []byte("\n")) {
		if !bytes.Contains(line, []byte(`"copied into bundled registry"`)) {
			continue
		}
		var raw struct {
			copyLog
			Time     string `json:"time"`
			Duration string `json:"duration"`
		}
		if err := json.Unmarshal(line, &raw); err != nil {
			return nil, fmt.Errorf("controller log line %q: %w", line, err)
		}
		c := raw.copyLog
		c.Time, _ = time.Parse(time.RFC3339, raw.Time)
		if c.Duration, err = time.ParseDuration(raw.Duration); err != nil {
			return nil, fmt.Errorf("controller log line %q: duration: %w", line, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// logHas reports whether the file contains s.
func logHas(path, s string) bool {
	b, err := os.ReadFile(path)
	return err == nil && bytes.Contains(b, []byte(s))
}

// tail returns the last n bytes of a file.
func tail(path string, n int64) string {
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

// vmRSS reads VmRSS of pid from /proc, in bytes.
func vmRSS(pid int) (int64, error) {
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

// cpuTime is the user+system CPU time pid has used (/proc/<pid>/stat).
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const hz = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / hz
}

// machineCPU returns busy and total jiffies of the whole machine.
func machineCPU() (busy, total int64) {
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

func loadavg() string {
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

// pidByCmdline finds the process whose command line contains s (the
// registry processes are found by their config file's path).
func pidByCmdline(s string) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(b, []byte(s)) {
			return pid
		}
	}
	return 0
}

// rssSampler samples a process's VmRSS every interval until stopped.
type rssSampler struct {
	stopc chan struct{}
	done  chan struct{}
	max   int64
	n     int
}

func sampleRSS(pid int, every time.Duration) *rssSampler {
	s := &rssSampler{stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if v, err := vmRSS(pid); err == nil {
				s.max = max(s.max, v)
				s.n++
			}
			select {
			case <-s.stopc:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// stop ends the sampling and returns the maximum and the sample count.
func (s *rssSampler) stop() (int64, int) {
	close(s.stopc)
	<-s.done
	return s.max, s.n
}

// scrape fetches a Prometheus text endpoint and sums every sample of each
// family in names (labels ignored).
func scrape(addr string, names ...string) (map[string]float64, error) {
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

// trialT is a registrytest.T whose temp dirs and cleanups belong to one
// trial: close stops the trial's registry and deletes its storage at once,
// so a run of many 1 GiB copies does not fill the disk.
type trialT struct {
	*registrytest.Program
	mu       sync.Mutex
	cleanups []func()
	dirs     []string
}

func newTrialT(p *registrytest.Program) *trialT {
	t := &trialT{Program: p}
	p.Cleanup(t.close) // on an early exit
	return t
}

func (t *trialT) Cleanup(f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cleanups = append(t.cleanups, f)
}

func (t *trialT) TempDir() string {
	dir, err := os.MkdirTemp("", t.Prefix+"-")
	if err != nil {
		t.Fatalf("temp dir: %v", err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.dirs = append(t.dirs, dir)
	return dir
}

func (t *trialT) close() {
	t.mu.Lock()
	cs, dirs := t.cleanups, t.dirs
	t.cleanups, t.dirs = nil, nil
	t.mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i]()
	}
	for _, d := range dirs {
		_ = os.RemoveAll(d)
	}
}
