package monitoring

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tagger-project/tagger/internal/rig"
)

// grafanaVars are the dashboard variables Grafana substitutes before a
// query reaches Prometheus, with a value of the same kind.
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h")

func TestDashboardShape(t *testing.T) {
	d, err := LoadDashboard(DashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("dashboard uid %q, title %q: both are needed for provisioning", d.UID, d.Title)
	}
	exprs := d.Exprs()
	if len(exprs) < 10 {
		t.Fatalf("%d queries in the dashboard, want the panels docs/install.md describes", len(exprs))
	}
	for k, e := range exprs {
		if strings.TrimSpace(e) == "" {
			t.Errorf("%s: empty expr", k)
		}
	}
}

// Every dashboard query parses as PromQL (promtool's parser, through its
// experimental `promql format`).
func TestDashboardPromQLParses(t *testing.T) {
	promtool := filepath.Join(rig.RequireBins(t, "promtool"), "promtool")
	d, err := LoadDashboard(DashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	for k, e := range d.Exprs() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		out, err := exec.CommandContext(ctx, promtool, "--experimental", "promql", "format", grafanaVars.Replace(e)).CombinedOutput()
		cancel()
		if err != nil {
			t.Errorf("%s: %q does not parse: %v\n%s", k, e, err, out)
		}
	}
}
