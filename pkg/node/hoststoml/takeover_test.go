package hoststoml

import (
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// fileID is what a rewrite changes even when the bytes stay: the inode (an
// atomic replace is a new file) and the modification time.
type fileID struct {
	ino   uint64
	mtime time.Time
}

// fileIDs maps every regular file under root (relative path) to its identity.
func fileIDs(t *testing.T, root string) map[string]fileID {
	t.Helper()
	out := map[string]fileID{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		st, err := os.Lstat(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out[rel] = fileID{ino: st.Sys().(*syscall.Stat_t).Ino, mtime: st.ModTime()}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestNextAgentTakesOver: the files one agent (Manager) wrote are taken over
// by the next one as they are. A stopped agent leaves its hosts.toml files in
// place; the next agent's first Sync with the same pins rewrites nothing (same
// inode and mtime for every file), keeps the node's originals in _backup byte
// for byte (it never backs up its own managed file as the node's), and its
// Cleanup still restores the node's tree exactly.
func TestNextAgentTakesOver(t *testing.T) {
	dir := t.TempDir()
	userTree(t, dir)
	initial := snapshot(t, dir)
	regs := []string{"docker.io", "quay.io", "registry.k8s.io"}

	if err := newManager(t, dir).Sync(regs); err != nil {
		t.Fatal(err)
	}
	tree, ids := snapshot(t, dir), fileIDs(t, dir)
	backups := snapshot(t, filepath.Join(dir, backupDir))
	if len(backups) < 2 {
		t.Fatalf("first agent kept no backups: %v", backups)
	}

	// The next agent: a new Manager on the same directory, same settings.
	next := newManager(t, dir)
	if err := next.Sync(regs); err != nil {
		t.Fatal(err)
	}
	if next.writes != 0 {
		t.Errorf("the next agent rewrote %d unchanged files", next.writes)
	}
	assertSameTree(t, "after the next agent's first Sync", snapshot(t, dir), tree)
	for p, want := range ids {
		if got := fileIDs(t, dir)[p]; got != want {
			t.Errorf("%s rewritten by the next agent: inode/mtime %v, was %v", p, got, want)
		}
	}
	assertSameTree(t, "backups after takeover", snapshot(t, filepath.Join(dir, backupDir)), backups)

	if err := next.Cleanup(); err != nil {
		t.Fatal(err)
	}
	assertSameTree(t, "after the next agent's Cleanup", snapshot(t, dir), initial)
}

// TestNextAgentAfterPinsChanged: while no agent ran, one registry lost its
// last pin and another gained one. The next agent's first Sync restores the
// registry that left from its backup, writes the new one (backing up the
// node's own directory), and leaves the unchanged registry's file alone.
func TestNextAgentAfterPinsChanged(t *testing.T) {
	dir := t.TempDir()
	userTree(t, dir)
	initial := snapshot(t, dir)
	quay := snapshot(t, filepath.Join(dir, "quay.io"))
	ghcr := snapshot(t, filepath.Join(dir, "ghcr.io"))

	if err := newManager(t, dir).Sync([]string{"docker.io", "quay.io"}); err != nil {
		t.Fatal(err)
	}
	docker := fileIDs(t, filepath.Join(dir, "docker.io"))

	next := newManager(t, dir)
	if err := next.Sync([]string{"docker.io", "ghcr.io"}); err != nil {
		t.Fatal(err)
	}
	if next.writes != 1 {
		t.Errorf("the next agent wrote %d files, want 1 (ghcr.io)", next.writes)
	}
	for p, want := range docker {
		if got := fileIDs(t, filepath.Join(dir, "docker.io"))[p]; got != want {
			t.Errorf("docker.io/%s rewritten though its pins did not change", p)
		}
	}
	assertSameTree(t, "quay.io, which left while no agent ran", snapshot(t, filepath.Join(dir, "quay.io")), quay)
	if ok, err := managed(filepath.Join(dir, "ghcr.io")); !ok || err != nil {
		t.Errorf("ghcr.io not taken over: %v", err)
	}
	assertSameTree(t, "ghcr.io's backup", snapshot(t, filepath.Join(dir, backupDir, "ghcr.io")), ghcr)

	if err := next.Cleanup(); err != nil {
		t.Fatal(err)
	}
	assertSameTree(t, "after Cleanup", snapshot(t, dir), initial)
}
