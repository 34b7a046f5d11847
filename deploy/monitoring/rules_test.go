package monitoring

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/tagger-project/tagger/internal/rig"
)

const runbookBase = "https://github.com/tagger-project/tagger/blob/main/docs/runbooks.md"

// Every alert carries what an operator needs: a severity, a summary and a
// description, and a runbook link to its own section of docs/runbooks.md.
func TestAlertsAreDocumented(t *testing.T) {
	g, err := LoadRules(RulesFile)
	if err != nil {
		t.Fatal(err)
	}
	runbooks, err := os.ReadFile(RunbooksFile)
	if err != nil {
		t.Fatal(err)
	}
	sections := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^## (\S+)\s*$`).FindAllStringSubmatch(string(runbooks), -1) {
		sections[m[1]] = true
	}
	alerts := g.Alerts()
	if len(alerts) < 8 {
		t.Fatalf("%d alerts in %s, want the 8 or more docs/runbooks.md covers", len(alerts), RulesFile)
	}
	for _, a := range alerts {
		if s := a.Labels["severity"]; s != "critical" && s != "warning" {
			t.Errorf("%s: severity %q, want critical or warning", a.Alert, s)
		}
		for _, k := range []string{"summary", "description"} {
			if strings.TrimSpace(a.Annotations[k]) == "" {
				t.Errorf("%s: no %s annotation", a.Alert, k)
			}
		}
		if want := runbookBase + "#" + strings.ToLower(a.Alert); a.Annotations["runbook_url"] != want {
			t.Errorf("%s: runbook_url %q, want %q", a.Alert, a.Annotations["runbook_url"], want)
		}
		if !sections[a.Alert] {
			t.Errorf("%s: docs/runbooks.md has no section \"## %s\"", a.Alert, a.Alert)
		}
		delete(sections, a.Alert)
	}
	for s := range sections {
		if strings.HasPrefix(s, "Tagger") {
			t.Errorf("docs/runbooks.md documents %s, which no rule defines", s)
		}
	}
}

// ruleTests is the part of promtool's unit-test file read here.
type ruleTests struct {
	RuleFiles []string `json:"rule_files"`
	Tests     []struct {
		AlertRuleTest []struct {
			Alertname string `json:"alertname"`
			ExpAlerts []any  `json:"exp_alerts"`
		} `json:"alert_rule_test"`
	} `json:"tests"`
}

// The unit tests show every alert both firing and not firing, and test the
// chart's rule file itself.
func TestEveryAlertUnitTested(t *testing.T) {
	g, err := LoadRules(RulesFile)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("rules_test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rt ruleTests
	if err := yaml.Unmarshal(b, &rt); err != nil {
		t.Fatalf("parse rules_test.yaml: %v", err)
	}
	if len(rt.RuleFiles) != 1 || filepath.Clean(rt.RuleFiles[0]) != filepath.Clean(RulesFile) {
		t.Errorf("rules_test.yaml tests %q, want [%s]", rt.RuleFiles, RulesFile)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range rt.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	for _, a := range g.Alerts() {
		if !fires[a.Alert] {
			t.Errorf("%s: no unit test in rules_test.yaml where it fires", a.Alert)
		}
		if !quiet[a.Alert] {
			t.Errorf("%s: no unit test in rules_test.yaml where it does not fire", a.Alert)
		}
	}
}

// promtool checks the rule file and runs its unit tests (rules_test.yaml).
func TestRulesPromtool(t *testing.T) {
	promtool := filepath.Join(rig.RequireBins(t, "promtool"), "promtool")
	runPromtool(t, promtool, "check", "rules", RulesFile)
	runPromtool(t, promtool, "test", "rules", "rules_test.yaml")
}

func runPromtool(t *testing.T, promtool string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, promtool, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
