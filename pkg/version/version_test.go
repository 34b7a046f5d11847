package version

import (
	"runtime/debug"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestGetPrefersStampedValues(t *testing.T) {
	bi := &debug.BuildInfo{
		GoVersion: "go1.26.8",
		Main:      debug.Module{Version: "v9.9.9"},
		Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "fromvcs"},
			{Key: "vcs.time", Value: "2000-01-01T00:00:00Z"},
		},
	}
	got := get(bi, "v0.1.0", "abc123", "2026-11-30T00:00:00Z")
	want := Info{Version: "v0.1.0", Commit: "abc123", Date: "2026-11-30T00:00:00Z", GoVersion: "go1.26.8"}
	if got != want {
		t.Errorf("get = %+v, want %+v", got, want)
	}
}

func TestGetFallsBackToBuildInfo(t *testing.T) {
	bi := &debug.BuildInfo{
		GoVersion: "go1.26.8",
		Main:      debug.Module{Version: "v0.2.0"},
		Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "fromvcs"},
			{Key: "vcs.time", Value: "2000-01-01T00:00:00Z"},
		},
	}
	got := get(bi, "", "", "")
	want := Info{Version: "v0.2.0", Commit: "fromvcs", Date: "2000-01-01T00:00:00Z", GoVersion: "go1.26.8"}
	if got != want {
		t.Errorf("get = %+v, want %+v", got, want)
	}
	// A checkout build says "(devel)": not a version.
	bi = &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}}
	if got := get(bi, "", "", ""); got.Version != "unknown" || got.Commit != "unknown" || got.Date != "unknown" {
		t.Errorf("get without stamps or VCS = %+v, want unknown version, commit and date", got)
	}
	if got := get(nil, "", "", ""); got.GoVersion != "unknown" {
		t.Errorf("get without build info: GoVersion %q, want unknown", got.GoVersion)
	}
}

func TestLine(t *testing.T) {
	got := Info{Version: "v0.1.0", Commit: "abc", Date: "d", GoVersion: "go1.26.8"}.String()
	if want := "v0.1.0 (commit abc, built d, go1.26.8)"; got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
	if l := Line("controller"); !strings.HasPrefix(l, "controller ") || !strings.Contains(l, "go1.") {
		t.Errorf("Line = %q, want the program name and the Go version", l)
	}
}

func TestBuildInfoMetric(t *testing.T) {
	old := [3]string{Version, Commit, Date}
	t.Cleanup(func() { Version, Commit, Date = old[0], old[1], old[2] })
	Version, Commit, Date = "v1.2.3", "deadbeef", "2026-11-30T00:00:00Z"

	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector())
	gv := Get().GoVersion
	want := `
# HELP tagger_build_info Always 1; the labels are the running binary's version, commit and Go version.
# TYPE tagger_build_info gauge
tagger_build_info{commit="deadbeef",goversion="` + gv + `",version="v1.2.3"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "tagger_build_info"); err != nil {
		t.Error(err)
	}
}
