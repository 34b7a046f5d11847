package waitfor

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

type fakeT struct{ failed string }

func (f *fakeT) Helper()                           {}
func (f *fakeT) Fatalf(format string, args ...any) { f.failed = fmt.Sprintf(format, args...) }

func TestCondReturnsOnceTrue(t *testing.T) {
	n := 0
	ft := &fakeT{}
	Cond(ft, time.Minute, "three polls", func() (bool, string) { n++; return n == 3, "" })
	if n != 3 || ft.failed != "" {
		t.Fatalf("polled %d times, failure %q; want 3 and none", n, ft.failed)
	}
}

func TestCondReportsTheLastReason(t *testing.T) {
	n := 0
	ft := &fakeT{}
	Cond(ft, 0, "never", func() (bool, string) { n++; return false, fmt.Sprintf("try %d", n) })
	if !strings.Contains(ft.failed, "waiting for never: try 1") {
		t.Fatalf("failure %q; want the condition's last message", ft.failed)
	}
}
