// The process lifecycle every component of the rig shares: start a
// command with its output in a bounded tail buffer and, on Linux, SIGKILL
// from the kernel if the test binary dies without running its cleanups
// (Pdeathsig); watch for its exit; stop it with a signal and a bounded wait.

package rig

import (
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Process is a started command whose exit is being waited for.
type Process struct {
	cmd  *exec.Cmd
	out  *TailBuffer
	done chan struct{} // closed when the process has exited
	err  error         // exit status, valid after done
}

// StartProcess starts cmd with its standard output and error going to out and
// Pdeathsig SIGKILL on Linux (it sets cmd's Stdout, Stderr and
// SysProcAttr), and waits for its exit in the background.
func StartProcess(cmd *exec.Cmd, out *TailBuffer) (*Process, error) {
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Process{cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is the exit status; valid once Done is closed.
func (p *Process) Err() error { return p.err }

// Output is the buffer the process writes its output to.
func (p *Process) Output() *TailBuffer { return p.out }

// Terminate sends SIGTERM and waits up to grace for the process to exit. It
// reports whether it did.
func (p *Process) Terminate(grace time.Duration) bool {
	return p.signalWait(syscall.SIGTERM, grace)
}

// Kill sends SIGKILL and waits up to timeout for the process to exit. It
// reports whether it did.
func (p *Process) Kill(timeout time.Duration) bool {
	return p.signalWait(os.Kill, timeout)
}

// KillWait sends SIGKILL and waits for the exit, however long it takes.
func (p *Process) KillWait() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

func (p *Process) signalWait(sig os.Signal, timeout time.Duration) bool {
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// TailBuffer keeps the last max bytes written to it.
type TailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

// NewTailBuffer returns an empty buffer keeping the last max bytes.
func NewTailBuffer(max int) *TailBuffer { return &TailBuffer{max: max} }

func (b *TailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *TailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
