package rig

import (
	"maps"
	"os"
	"path/filepath"
	"testing"
)

func TestSnapshotDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "a"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "a", "f"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	before := SnapshotDir(t, dir)
	want := map[string]string{"a/": "drwxr-xr-x", "a/f": "-rw-------\nx"}
	if !maps.Equal(before, want) {
		t.Fatalf("snapshot %v, want %v", before, want)
	}
	if err := os.Chmod(filepath.Join(dir, "a", "f"), 0o644); err != nil {
		t.Fatal(err)
	}
	if maps.Equal(SnapshotDir(t, dir), before) {
		t.Error("a mode change left the snapshot equal")
	}
}
