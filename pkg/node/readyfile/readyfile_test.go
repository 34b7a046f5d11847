package readyfile

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSetCheckClear(t *testing.T) {
	p := filepath.Join(t.TempDir(), "state", "ready")
	now := time.Now()
	if err := Check(p, 0, true, now); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("missing file: %v", err)
	}
	if err := Set(p, []string{"Tag cache not synced", "hosts.toml not written yet"}); err != nil {
		t.Fatal(err)
	}
	if err := Check(p, time.Minute, true, now); err == nil || !strings.Contains(err.Error(), "hosts.toml not written yet") {
		t.Errorf("not-ready file passed the readiness check or lost its reasons: %v", err)
	}
	if err := Check(p, time.Minute, false, now); err != nil {
		t.Errorf("a fresh not-ready file failed the liveness check: %v", err)
	}
	if err := Set(p, nil); err != nil {
		t.Fatal(err)
	}
	if err := Check(p, time.Minute, true, time.Now()); err != nil {
		t.Errorf("ready file: %v", err)
	}
	if err := Check(p, time.Minute, true, time.Now().Add(2*time.Minute)); err == nil || !strings.Contains(err.Error(), "stopped reporting") {
		t.Errorf("stale ready file passed: %v", err)
	}
	if err := Clear(p); err != nil {
		t.Fatal(err)
	}
	if err := Clear(p); err != nil {
		t.Errorf("second Clear: %v", err)
	}
	if err := Check(p, 0, false, now); err == nil {
		t.Error("cleared file passed")
	}
}
