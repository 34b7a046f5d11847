// Package version says which build of tagger is running: the module version,
// commit and build date stamped in at link time (-ldflags -X, see the
// Dockerfile and the Makefile's build target) and the Go version that built
// it. Every binary prints it for --version, and the daemons export it as the
// tagger_build_info metric.
package version

import (
	"fmt"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// Set at link time with
//
//	-ldflags "-X github.com/tagger-project/tagger/pkg/version.Version=v0.1.0 ..."
//
// Empty values fall back to what the Go toolchain recorded (Get).
var (
	// Version is the release, e.g. "v0.1.0" (`git describe --tags`).
	Version string
	// Commit is the full commit hash the binary was built from.
	Commit string
	// Date is the build date, RFC 3339 (the commit's date keeps builds reproducible).
	Date string
)

// Info is one binary's build identity.
type Info struct {
	Version   string
	Commit    string
	Date      string
	GoVersion string
}

// Get returns the stamped values, each falling back to the module version
// and VCS settings Go records in the binary (a `go install` or a plain
// `go build` in a checkout), then to "unknown".
func Get() Info {
	bi, _ := debug.ReadBuildInfo()
	return get(bi, Version, Commit, Date)
}

func get(bi *debug.BuildInfo, version, commit, date string) Info {
	i := Info{Version: version, Commit: commit, Date: date, GoVersion: "unknown"}
	if bi != nil {
		i.GoVersion = bi.GoVersion
		if i.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			i.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch {
			case s.Key == "vcs.revision" && i.Commit == "":
				i.Commit = s.Value
			case s.Key == "vcs.time" && i.Date == "":
				i.Date = s.Value
			}
		}
	}
	for _, f := range []*string{&i.Version, &i.Commit, &i.Date} {
		if *f == "" {
			*f = "unknown"
		}
	}
	return i
}

// String is the --version line: "<program> <version> (commit <c>, built <d>, <go>)".
func (i Info) String() string {
	return fmt.Sprintf("%s (commit %s, built %s, %s)", i.Version, i.Commit, i.Date, i.GoVersion)
}

// Line is what a binary prints for --version.
func Line(program string) string { return program + " " + Get().String() }

// NewCollector returns the tagger_build_info gauge: always 1, its labels say
// which build is running, so dashboards can join any metric to a version.
func NewCollector() prometheus.Collector {
	i := Get()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "tagger_build_info",
		Help: "Always 1; the labels are the running binary's version, commit and Go version.",
		ConstLabels: prometheus.Labels{
			"version": i.Version, "commit": i.Commit, "goversion": i.GoVersion,
		},
	})
	g.Set(1)
	return g
}
