package rig

import (
	"os"
	"path/filepath"
	"testing"
)

// TestCommands builds every command once and hands the same directory to
// later callers.
func TestCommands(t *testing.T) {
	dir := Commands(t, Race)
	for _, name := range []string{"controller", "node-agent", "kubectl-tag"} {
		if !isExecutable(filepath.Join(dir, name)) {
			t.Errorf("%s not built in %s", name, dir)
		}
	}
	if again := Commands(t, Race); again != dir {
		t.Errorf("second call built again into %s, want %s", again, dir)
	}
}

// TestRemoveStaleCommandDirs removes the directory of an exited process and
// keeps this process's.
func TestRemoveStaleCommandDirs(t *testing.T) {
	stale := filepath.Join(os.TempDir(), cmdDirPrefix+"999999999-0")
	if err := os.MkdirAll(stale, 0o755); err != nil {
		t.Fatal(err)
	}
	removeStaleCommandDirs()
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale dir %s still there (%v)", stale, err)
	}
}
