package logging

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestJSONThroughLogr(t *testing.T) {
	var buf bytes.Buffer
	l, err := New(&buf, "json", "debug")
	if err != nil {
		t.Fatal(err)
	}
	lr := Logr(l).WithName("ctrl").WithValues("tag", "nginx")
	lr.Info("hello", "generation", 2)
	lr.V(1).Info("detail")
	lr.Error(errors.New("boom"), "failed")

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("got %d lines, want 3:\n%s", len(lines), buf.String())
	}
	var first map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatalf("line is not JSON: %v: %s", err, lines[0])
	}
	if first["msg"] != "hello" || first["tag"] != "nginx" || first["logger"] != "ctrl" || first["generation"] != float64(2) || first["level"] != "info" {
		t.Fatalf("unexpected fields: %v", first)
	}
	if !strings.Contains(lines[1], `"level":"debug"`) || !strings.Contains(lines[2], `"error":"boom"`) {
		t.Fatalf("unexpected lines:\n%s", buf.String())
	}
}

func TestBadFormatAndLevel(t *testing.T) {
	if _, err := New(&bytes.Buffer{}, "xml", "info"); err == nil {
		t.Fatal("format xml accepted")
	}
	if _, err := New(&bytes.Buffer{}, "text", "loud"); err == nil {
		t.Fatal("level loud accepted")
	}
	var buf bytes.Buffer
	l, _ := New(&buf, "text", "info")
	Logr(l).V(1).Info("hidden")
	if buf.Len() != 0 {
		t.Fatalf("V(1) logged at info level: %s", buf.String())
	}
}
