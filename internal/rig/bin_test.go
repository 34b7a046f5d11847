package rig

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// fakeTB records how a helper stopped the test instead of stopping the real one.
type fakeTB struct {
	testing.TB
	fatal, skip string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (f *fakeTB) Skipf(format string, args ...any) {
	f.skip = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// run calls fn with a fakeTB in its own goroutine, since Fatalf and Skipf end it.
func run(t *testing.T, fn func(T)) *fakeTB {
	f := &fakeTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	return f
}

func TestBinDir(t *testing.T) {
	tests := []struct {
		name, override, xdg, home, want string
	}{
		{name: "override", override: "/opt/bins", xdg: "/x", home: "/h", want: "/opt/bins"},
		{name: "xdg", xdg: "/x", home: "/h", want: "/x/tagger/testbin/bin"},
		{name: "home", home: "/h", want: "/h/.cache/tagger/testbin/bin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(EnvBinDir, tt.override)
			t.Setenv("XDG_CACHE_HOME", tt.xdg)
			t.Setenv("HOME", tt.home)
			if got := BinDir(); got != tt.want {
				t.Errorf("BinDir() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRequireBins(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("registry", 0o755)
	write("etcd", 0o755)
	write("notexec", 0o644)
	if err := os.Symlink(filepath.Join(dir, "registry"), filepath.Join(dir, "linked")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "adir"), 0o755); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		ci      string
		bins    []string
		want    string // "", "fatal" or "skip"
		missing []string
	}{
		{name: "all present", ci: "true", bins: []string{"registry", "etcd", "linked"}},
		{name: "none asked", ci: "true"},
		{name: "missing in CI fails", ci: "true", bins: []string{"registry", "containerd"}, want: "fatal", missing: []string{"containerd"}},
		{name: "missing locally skips", ci: "", bins: []string{"containerd", "ctr"}, want: "skip", missing: []string{"containerd, ctr"}},
		{name: "CI=false skips", ci: "false", bins: []string{"ctr"}, want: "skip", missing: []string{"ctr"}},
		{name: "not executable", ci: "true", bins: []string{"notexec"}, want: "fatal", missing: []string{"notexec"}},
		{name: "directory", ci: "1", bins: []string{"adir"}, want: "fatal", missing: []string{"adir"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(EnvBinDir, dir)
			t.Setenv("CI", tt.ci)
			var got string
			f := run(t, func(tb T) { got = RequireBins(tb, tt.bins...) })
			msg := f.fatal + f.skip
			switch tt.want {
			case "":
				if msg != "" {
					t.Fatalf("Require stopped the test: %s", msg)
				}
				if got != dir {
					t.Errorf("RequireBins() = %q, want %q", got, dir)
				}
				return
			case "fatal":
				if f.fatal == "" {
					t.Fatalf("Require did not fail the test (skip message %q)", f.skip)
				}
			case "skip":
				if f.skip == "" {
					t.Fatalf("Require did not skip the test (fatal message %q)", f.fatal)
				}
			}
			for _, want := range append(tt.missing, "make testbin", dir) {
				if !strings.Contains(msg, want) {
					t.Errorf("message %q does not mention %q", msg, want)
				}
			}
		})
	}
}

func TestRequireRoot(t *testing.T) {
	tests := []struct {
		euid int
		ci   string
		want string
	}{
		{euid: 0, ci: "true"},
		{euid: 0},
		{euid: 1000, ci: "true", want: "fatal"},
		{euid: 1000, want: "skip"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("euid=%d,CI=%s", tt.euid, tt.ci), func(t *testing.T) {
			t.Setenv("CI", tt.ci)
			orig := geteuid
			geteuid = func() int { return tt.euid }
			t.Cleanup(func() { geteuid = orig })

			f := run(t, RequireRoot)
			got := ""
			switch {
			case f.fatal != "":
				got = "fatal"
			case f.skip != "":
				got = "skip"
			}
			if got != tt.want {
				t.Fatalf("RequireRoot: got %q, want %q (%s%s)", got, tt.want, f.fatal, f.skip)
			}
			if got != "" && !strings.Contains(f.fatal+f.skip, "root") {
				t.Errorf("message %q does not say root is needed", f.fatal+f.skip)
			}
		})
	}
}
