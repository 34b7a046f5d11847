// Package readyfile is how a node-agent process tells its own kubelet probe
// whether it is ready: the process writes a small file inside its own
// container (an emptyDir), and `node-agent ready-check` (an exec probe) reads
// it. An HTTP probe cannot do this job during an upgrade: the old and new
// agent pods share the node's network namespace and listen on the same
// ports (SO_REUSEPORT), so a probe over TCP may be answered by the other pod.
package readyfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Set records the state: ready when problems is empty, else not ready with
// the problems as the reason. The file is replaced atomically and its mtime
// is the time of the last Set, so a checker can also tell a process that
// stopped updating it (liveness).
func Set(path string, problems []string) error {
	body := "ready\n"
	if len(problems) > 0 {
		body = "not ready:\n" + strings.Join(problems, "\n") + "\n"
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, ".ready-")
	if err != nil {
		return fmt.Errorf("create temporary file in %s: %w", dir, err)
	}
	tmp := f.Name()
	_, werr := f.WriteString(body)
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("rename %s to %s: %w", tmp, path, err)
	}
	return nil
}

// Clear removes the file: the process is not ready (it is stopping).
func Clear(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// Check returns nil when the file says ready and, with maxAge > 0, was
// written within maxAge; else an error saying why not. With requireReady
// false only the age is checked (a liveness check: the process still
// updates its state, ready or not).
func Check(path string, maxAge time.Duration, requireReady bool, now time.Time) error {
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s does not exist: the process has not reported yet, or is stopping", path)
	}
	if err != nil {
		return fmt.Errorf("inspect %s: %w", path, err)
	}
	if age := now.Sub(st.ModTime()); maxAge > 0 && age > maxAge {
		return fmt.Errorf("%s was last written %s ago (more than %s): the process stopped reporting", path, age.Round(time.Second), maxAge)
	}
	if !requireReady {
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if s := string(b); s != "ready\n" {
		return errors.New(strings.TrimSpace(s))
	}
	return nil
}
