package node

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/tagger-project/tagger/pkg/node/readyfile"
)

// tree reads every file under dir (relative path -> bytes); nil when a
// file moved while it read (the cleanup renames directories).
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out, err := readTree(dir)
	if err != nil {
		return nil
	}
	return out
}

func readTree(dir string) (map[string]string, error) {
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		out[rel] = string(b)
		return err
	})
	return out, err
}

func sameTree(a, b map[string]string) bool {
	if a == nil || len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestCleanupHoldRestoresAndRepeats: the uninstall hook's cleanup restores
// the node's files byte for byte, then reports ready and keeps restoring, so
// a stopping agent's last write is undone; it returns when told to stop.
func TestCleanupHoldRestoresAndRepeats(t *testing.T) {
	o := DefaultOptions()
	o.HostsDir = t.TempDir()
	own := filepath.Join(o.HostsDir, "docker.io", "hosts.toml")
	if err := os.MkdirAll(filepath.Dir(own), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(own, []byte("# the node's own\nserver = \"https://mirror.corp.example\"\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	nodeOwn, err := readTree(o.HostsDir)
	if err != nil {
		t.Fatal(err)
	}
	agent, err := newHosts(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.Sync([]string{"docker.io", "quay.io"}); err != nil {
		t.Fatal(err)
	}
	if sameTree(tree(t, o.HostsDir), nodeOwn) {
		t.Fatal("the agent wrote nothing")
	}

	ready := filepath.Join(t.TempDir(), "ready")
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	done := make(chan error, 1)
	log := logrus.New()
	log.SetOutput(os.Stderr)
	go func() {
		done <- CleanupHold(ctx, o, HoldOptions{ReadyFile: ready, Interval: 200 * time.Millisecond}, log)
	}()
	waitUntil(t, "restored and ready", func() bool {
		return readyfile.Check(ready, 0, true, time.Now()) == nil && sameTree(tree(t, o.HostsDir), nodeOwn)
	})

	// A stopping agent writes once more; the next round undoes it. (The
	// agent's write may race a round, which sweeps its staging directory:
	// that write fails, the node's files stay restored; retry until one
	// lands.)
	waitUntil(t, "the stopping agent's write lands", func() bool { return agent.Sync([]string{"docker.io"}) == nil })
	waitUntil(t, "restored again", func() bool { return sameTree(tree(t, o.HostsDir), nodeOwn) })

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("CleanupHold: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("CleanupHold did not return when told to stop")
	}
	if b, _ := os.ReadFile(own); string(b) != nodeOwn["docker.io/hosts.toml"] {
		t.Errorf("node's file after hold: %q", b)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
