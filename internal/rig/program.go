package rig

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
)

// Program implements T outside a test (the demo, benchmarks): Fatalf
// unwinds to Run, and Close runs every cleanup, newest first, once.
type Program struct {
	// Prefix names the temp dirs it makes.
	Prefix string

	mu       sync.Mutex
	cleanups []func()
	failed   atomic.Bool
	once     sync.Once
}

type fatal struct{ msg string }

// Helper implements T.
func (p *Program) Helper() {}

// Logf implements T.
func (p *Program) Logf(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }

// Errorf implements T.
func (p *Program) Errorf(f string, a ...any) { p.failed.Store(true); p.Logf(f, a...) }

// Fatalf implements T: it unwinds to Run.
func (p *Program) Fatalf(f string, a ...any) {
	p.failed.Store(true)
	panic(fatal{fmt.Sprintf(f, a...)})
}

// Skipf implements T: a program cannot skip, so it stops like Fatalf.
func (p *Program) Skipf(f string, a ...any) { p.Fatalf(f, a...) }

// Failed implements T.
func (p *Program) Failed() bool { return p.failed.Load() }

// Cleanup implements T.
func (p *Program) Cleanup(f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cleanups = append(p.cleanups, f)
}

// TempDir implements T.
func (p *Program) TempDir() string {
	dir, err := os.MkdirTemp("", p.Prefix+"-")
	if err != nil {
		p.Fatalf("temp dir: %v", err)
	}
	p.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// Run calls f, turning a Fatalf (or any panic) into an error.
func (p *Program) Run(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			if ft, ok := r.(fatal); ok {
				err = errors.New(ft.msg)
				return
			}
			err = fmt.Errorf("panic: %v\n%s", r, debug.Stack())
		}
	}()
	return f()
}

// Close runs the cleanups once, newest first.
func (p *Program) Close() {
	p.once.Do(func() {
		p.mu.Lock()
		cs := slices.Clone(p.cleanups)
		p.mu.Unlock()
		for i := len(cs) - 1; i >= 0; i-- {
			cs[i]()
		}
	})
}
