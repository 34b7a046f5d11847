package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// proc is one component process. Its output goes to a log file in the
// cluster's log directory, which the rig prints the tail of when a test fails.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	logFile *os.File
	done    chan struct{} // closed when the process has exited
	err     error         // exit status, valid after done
}

// startProc starts bin with args in dir, its output appended to logDir/name.log.
func startProc(logDir, name, bin string, args, env []string, dir string) (*proc, error) {
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s log: %w", name, err)
	}
	fmt.Fprintf(f, "--- %s %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(append([]string{bin}, args...), " "))
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = env
	cmd.Dir = dir // anything a component writes relative to its cwd stays in the test dir
	// The kernel kills the component if the test binary dies without running
	// its cleanups (a test timeout, a panic in another goroutine).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s (%s): %w", name, bin, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, logFile: f, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// Pid is the process id.
func (p *proc) Pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, waits up to grace for the process to exit, then
// SIGKILLs it. It reports whether the process had to be killed.
func (p *proc) stop(grace time.Duration) (killed bool, err error) {
	if p.exited() {
		return false, nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return false, nil
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
		return true, nil
	case <-time.After(10 * time.Second):
		return true, fmt.Errorf("%s (pid %d) did not exit 10s after SIGKILL", p.name, p.Pid())
	}
}

// tail is the end of the process's log.
func (p *proc) tail(max int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(read %s: %v)", p.logPath, err)
	}
	if len(b) > max {
		b = b[len(b)-max:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}

// errAddrInUse says a component lost the race for a port we picked.
var errAddrInUse = errors.New("address already in use")

// exitError describes a process that ended while the rig waited for it.
func (p *proc) exitError() error {
	out := p.tail(8 << 10)
	if strings.Contains(out, "address already in use") {
		return fmt.Errorf("%s: %w", p.name, errAddrInUse)
	}
	return fmt.Errorf("%s exited (%v) before it was ready; log %s:\n%s", p.name, p.err, p.logPath, out)
}
