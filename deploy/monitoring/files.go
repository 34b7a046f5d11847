package monitoring

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"sigs.k8s.io/yaml"
)

// Paths of what the chart ships, relative to this package's directory.
var (
	RulesFile     = filepath.Join("..", "chart", "tagger", "files", "rules.yaml")
	DashboardFile = filepath.Join("..", "chart", "tagger", "files", "dashboard.json")
	RunbooksFile  = filepath.Join("..", "..", "docs", "runbooks.md")
)

// RuleGroups is a Prometheus rule file.
type RuleGroups struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []Rule `json:"rules"`
	} `json:"groups"`
}

// Rule is one alerting or recording rule.
type Rule struct {
	Alert       string            `json:"alert"`
	Record      string            `json:"record"`
	Expr        string            `json:"expr"`
	For         string            `json:"for"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

// LoadRules reads a rule file.
func LoadRules(path string) (*RuleGroups, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read rules: %w", err)
	}
	var g RuleGroups
	if err := yaml.UnmarshalStrict(b, &g); err != nil {
		return nil, fmt.Errorf("parse rules %s: %w", path, err)
	}
	return &g, nil
}

// Alerts returns every alerting rule.
func (g *RuleGroups) Alerts() []Rule {
	var out []Rule
	for _, grp := range g.Groups {
		for _, r := range grp.Rules {
			if r.Alert != "" {
				out = append(out, r)
			}
		}
	}
	return out
}

// Dashboard is the part of a Grafana dashboard the tests read.
type Dashboard struct {
	Title  string  `json:"title"`
	UID    string  `json:"uid"`
	Panels []Panel `json:"panels"`
}

// Panel is a Grafana panel; rows nest panels.
type Panel struct {
	Type    string   `json:"type"`
	Title   string   `json:"title"`
	Targets []Target `json:"targets"`
	Panels  []Panel  `json:"panels"`
}

// Target is one query of a panel.
type Target struct {
	RefID string `json:"refId"`
	Expr  string `json:"expr"`
}

// LoadDashboard reads a dashboard JSON file.
func LoadDashboard(path string) (*Dashboard, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read dashboard: %w", err)
	}
	var d Dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("parse dashboard %s: %w", path, err)
	}
	return &d, nil
}

// Exprs returns every panel's PromQL expressions, keyed "panel/refId".
func (d *Dashboard) Exprs() map[string]string {
	out := map[string]string{}
	var walk func([]Panel)
	walk = func(ps []Panel) {
		for _, p := range ps {
			for _, t := range p.Targets {
				out[p.Title+"/"+t.RefID] = t.Expr
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}
