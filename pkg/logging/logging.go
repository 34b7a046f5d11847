// Package logging sets up logrus for tagger's binaries and bridges the logr
// interface controller-runtime and client-go log through onto the same logger,
// so every line has one format.
package logging

import (
	"fmt"
	"io"
	"sync"

	"github.com/go-logr/logr"
	"github.com/sirupsen/logrus"
	"k8s.io/klog/v2"
	crlog "sigs.k8s.io/controller-runtime/pkg/log"
)

// New returns a logger writing format ("text" or "json") at level to w.
func New(w io.Writer, format, level string) (*logrus.Logger, error) {
	l := logrus.New()
	l.SetOutput(w)
	switch format {
	case "text", "":
		l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	case "json":
		l.SetFormatter(&logrus.JSONFormatter{})
	default:
		return nil, fmt.Errorf("unknown log format %q (want text or json)", format)
	}
	lv, err := logrus.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("parse log level %q: %w", level, err)
	}
	l.SetLevel(lv)
	return l, nil
}

// Logr adapts a logrus logger to logr. logr's V-levels map to Debug (V>=1)
// and Info (V0); errors map to Error.
func Logr(l logrus.FieldLogger) logr.Logger {
	return logr.New(&sink{entry: l.WithFields(nil)})
}

type sink struct {
	entry *logrus.Entry
	name  string
}

func (s *sink) Init(logr.RuntimeInfo) {}

func (s *sink) Enabled(level int) bool {
	if level > 0 {
		return s.entry.Logger.IsLevelEnabled(logrus.DebugLevel)
	}
	return s.entry.Logger.IsLevelEnabled(logrus.InfoLevel)
}

func (s *sink) Info(level int, msg string, kv ...any) {
	e := s.with(kv)
	if level > 0 {
		e.Debug(msg)
		return
	}
	e.Info(msg)
}

func (s *sink) Error(err error, msg string, kv ...any) {
	s.with(kv).WithError(err).Error(msg)
}

func (s *sink) WithValues(kv ...any) logr.LogSink {
	return &sink{entry: s.with(kv), name: s.name}
}

func (s *sink) WithName(name string) logr.LogSink {
	n := name
	if s.name != "" {
		n = s.name + "." + name
	}
	return &sink{entry: s.entry.WithField("logger", n), name: n}
}

func (s *sink) with(kv []any) *logrus.Entry {
	if len(kv) == 0 {
		return s.entry
	}
	f := make(logrus.Fields, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		f[fmt.Sprint(kv[i])] = kv[i+1]
	}
	if len(kv)%2 == 1 {
		f["EXTRA"] = kv[len(kv)-1]
	}
	return s.entry.WithFields(f)
}

// SetKubeLoggers sends what controller-runtime and client-go log (klog)
// through l, for processes that use either: without it controller-runtime
// drops its lines and, after 30 seconds, prints a "log.SetLogger(...) was
// never called" stack, and client-go's errors (a failed watch, a refused
// list) reach stderr in klog's own format or nowhere. Both are process-wide:
// the first call wins and later ones do nothing, so a process (or a test
// binary) running several agents never swaps them under goroutines that log.
func SetKubeLoggers(l logrus.FieldLogger) {
	kubeLoggersOnce.Do(func() {
		lr := Logr(l)
		crlog.SetLogger(lr)
		klog.SetLogger(lr.WithName("client-go"))
	})
}

var kubeLoggersOnce sync.Once
