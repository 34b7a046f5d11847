package logging

import (
	"bytes"
	"strings"
	"sync"
	"testing"

	"github.com/sirupsen/logrus"
	"k8s.io/klog/v2"
	crlog "sigs.k8s.io/controller-runtime/pkg/log"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestSetKubeLoggers: controller-runtime's and client-go's (klog) lines
// land in the process's logger, so a failed watch or a refused list is in
// the agent's or controller's log and the "log.SetLogger(...) was never
// called" stack never comes; a second call does not replace the first.
func TestSetKubeLoggers(t *testing.T) {
	buf := &lockedBuffer{}
	log := logrus.New()
	log.SetOutput(buf)
	log.SetFormatter(&logrus.JSONFormatter{})
	SetKubeLoggers(log)
	other := logrus.New()
	other.SetOutput(&lockedBuffer{})
	SetKubeLoggers(other)

	crlog.Log.WithName("cache").Error(nil, "controller-runtime line")
	klog.ErrorS(nil, "client-go line")
	klog.Flush()
	out := buf.String()
	for _, want := range []string{`"msg":"controller-runtime line"`, `"msg":"client-go line"`, `"logger":"client-go"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
}
