package node

import (
	"bytes"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/sirupsen/logrus"
	"k8s.io/client-go/rest"
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

// TestNewSetsKubeLoggers is defect 7: building the agent hands
// controller-runtime and client-go (klog) the agent's logger, so their
// lines (a failed watch, a refused list) are in the agent's log and the
// "log.SetLogger(...) was never called" stack never comes.
func TestNewSetsKubeLoggers(t *testing.T) {
	buf := &lockedBuffer{}
	log := logrus.New()
	log.SetOutput(buf)
	log.SetFormatter(&logrus.JSONFormatter{})
	o := DefaultOptions()
	o.Listen, o.MetricsAddr, o.HealthAddr, o.CRIEndpoint = "127.0.0.1:0", "0", "0", ""
	dir := t.TempDir()
	o.HostsDir, o.ContainerdConfig = filepath.Join(dir, "certs.d"), filepath.Join(dir, "config.toml")
	// Nothing listens there: New fails building the Tag cache, after it
	// set the loggers (first thing), and closes what it had bound.
	if a, err := New(&rest.Config{Host: "http://127.0.0.1:1"}, o, log); err == nil {
		a.closeAll()
	}
	crlog.Log.WithName("cache").Error(nil, "controller-runtime line")
	klog.ErrorS(nil, "client-go line")
	klog.Flush()
	out := buf.String()
	for _, want := range []string{`"msg":"controller-runtime line"`, `"msg":"client-go line"`, `"logger":"client-go"`} {
		if !strings.Contains(out, want) {
			t.Errorf("agent log lacks %s:\n%s", want, out)
		}
	}
}
