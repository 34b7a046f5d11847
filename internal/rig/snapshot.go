package rig

import (
	"io/fs"
	"os"
	"path/filepath"
)

// SnapshotDir reads every file and directory under dir (not dir itself):
// relative path (directories end in "/") -> mode, and for files a newline
// and the content. Two snapshots compare with maps.Equal, so a test can
// prove a directory was left exactly as it was.
func SnapshotDir(t T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			out[rel+"/"] = info.Mode().String()
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		out[rel] = info.Mode().String() + "\n" + string(b)
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot %s: %v", dir, err)
	}
	return out
}
