package rig

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// fakeT records WaitFor's failure instead of failing the real test.
type fakeT struct {
	testing.TB
	failed string
}

func (f *fakeT) Helper()                           {}
func (f *fakeT) Fatalf(format string, args ...any) { f.failed = fmt.Sprintf(format, args...) }

func TestWaitForReturnsOnceTrue(t *testing.T) {
	n := 0
	ft := &fakeT{TB: t}
	WaitFor(ft, time.Minute, "three polls", func() (bool, string) { n++; return n == 3, "" })
	if n != 3 || ft.failed != "" {
		t.Fatalf("polled %d times, failure %q; want 3 and none", n, ft.failed)
	}
}

func TestWaitForReportsTheLastReason(t *testing.T) {
	n := 0
	ft := &fakeT{TB: t}
	WaitFor(ft, 0, "never", func() (bool, string) { n++; return false, fmt.Sprintf("try %d", n) })
	if !strings.Contains(ft.failed, "waiting for never: try 1") {
		t.Fatalf("failure %q; want the condition's last message", ft.failed)
	}
}
