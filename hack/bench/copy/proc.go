package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/tagger-project/tagger/hack/bench/internal/benchproc"
	"github.com/tagger-project/tagger/internal/rig"
)

func logf(f string, a ...any) {
	fmt.Fprintf(os.Stderr, "bench: %s "+f+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
}

// startController starts bin with args plus fresh metrics and health ports
// (webhooks off), its log in logPath, and waits until it is ready and its
// Tag workers run (benchproc.StartController).
func startController(r *rig.Program, bin string, args []string, logPath string) (*benchproc.Controller, error) {
	return benchproc.StartController(r, benchproc.Spec{
		Bin: bin, Args: args, Name: "controller", Logf: logf,
		LogPath: func(int) string { return logPath },
	})
}

// cpuTime is the user+system CPU time pid has used, 0 when unknown.
func cpuTime(pid int) time.Duration {
	d, _ := benchproc.CPUTime(pid)
	return d
}

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
			if v, err := benchproc.VmRSS(pid); err == nil {
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

// trialT is a rig.T whose temp dirs and cleanups belong to one
// trial: close stops the trial's registry and deletes its storage at once,
// so a run of many 1 GiB copies does not fill the disk.
type trialT struct {
	*rig.Program
	mu       sync.Mutex
	cleanups []func()
	dirs     []string
}

func newTrialT(p *rig.Program) *trialT {
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
