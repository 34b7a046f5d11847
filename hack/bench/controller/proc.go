package main

import (
	"fmt"
	"path/filepath"

	"github.com/tagger-project/tagger/hack/bench/internal/benchproc"
	"github.com/tagger-project/tagger/internal/rig"
)

func logf(f string, a ...any) { benchproc.Logf(f, a...) }

// controllerSpec says how to start the controller.
type controllerSpec struct {
	bin  string   // the binary
	args []string // flags other than the listen addresses
	dir  string   // where its log goes
	name string   // for the log file name and messages
}

// startController starts the controller on three fresh loopback ports
// (webhook, metrics, health), its log in dir/<name>-<attempt>.log, and waits
// until it is ready (benchproc.StartController).
func startController(r *rig.Program, s controllerSpec) (*benchproc.Controller, error) {
	return benchproc.StartController(r, benchproc.Spec{
		Bin: s.bin, Args: s.args, Webhook: true, Name: s.name, Logf: logf,
		LogPath: func(attempt int) string { return filepath.Join(s.dir, fmt.Sprintf("%s-%d.log", s.name, attempt)) },
	})
}
