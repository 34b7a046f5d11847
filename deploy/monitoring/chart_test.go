package monitoring

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/tagger-project/tagger/internal/rig"
)

const allOn = `
monitoring:
  labels: {release: kps}
  serviceMonitor: {enabled: true, interval: 15s, relabelings: [{targetLabel: cluster, replacement: c1}]}
  podMonitor: {enabled: true, labels: {team: infra}}
  prometheusRule: {enabled: true}
  dashboard: {enabled: true, namespace: grafana}
`

// helmTemplate renders the chart offline with values and returns the
// objects by kind.
func helmTemplate(t *testing.T, values string) (map[string]*unstructured.Unstructured, error) {
	t.Helper()
	dir := t.TempDir()
	vals := filepath.Join(dir, "values.yaml")
	if err := os.WriteFile(vals, []byte(values), 0o644); err != nil {
		t.Fatal(err)
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	r := rig.HelmRunner{Dir: root, Home: dir, Kubeconfig: filepath.Join(dir, "no-kubeconfig")}
	out, err := r.Run(context.Background(), "template", "tagger", "deploy/chart/tagger", "--namespace", "tagger-system", "--values", vals)
	if err != nil {
		return nil, err
	}
	objs := map[string]*unstructured.Unstructured{}
	for _, doc := range strings.Split(out, "\n---") {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			t.Fatalf("decode rendered document: %v\n%s", err, doc)
		}
		if m == nil {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		objs[u.GetKind()+"/"+u.GetName()] = u
	}
	return objs, nil
}

func TestChartMonitoringOffByDefault(t *testing.T) {
	objs, err := helmTemplate(t, "")
	if err != nil {
		t.Fatal(err)
	}
	for k := range objs {
		if strings.HasPrefix(k, "ServiceMonitor/") || strings.HasPrefix(k, "PodMonitor/") ||
			strings.HasPrefix(k, "PrometheusRule/") || k == "ConfigMap/tagger-dashboard" {
			t.Errorf("%s rendered with default values", k)
		}
	}
}

func TestChartMonitoring(t *testing.T) {
	objs, err := helmTemplate(t, allOn)
	if err != nil {
		t.Fatal(err)
	}
	get := func(key string) *unstructured.Unstructured {
		t.Helper()
		o := objs[key]
		if o == nil {
			t.Fatalf("%s not rendered", key)
		}
		if o.GetLabels()["release"] != "kps" && o.GetKind() != "ConfigMap" {
			t.Errorf("%s lacks monitoring.labels (release: kps): %v", key, o.GetLabels())
		}
		return o
	}

	sm := get("ServiceMonitor/tagger-controller")
	ep := field[map[string]any](t, sm.Object, "spec", "endpoints", 0)
	if ep["port"] != "metrics" || ep["interval"] != "15s" {
		t.Errorf("ServiceMonitor endpoint %v: want port metrics (the Service's), interval 15s", ep)
	}
	wantRelabels(t, "ServiceMonitor", ep, map[string]string{"job": "tagger-controller", "cluster": "c1"})

	pm := get("PodMonitor/tagger-node-agent")
	if pm.GetLabels()["team"] != "infra" {
		t.Errorf("PodMonitor lacks its own labels: %v", pm.GetLabels())
	}
	pep := field[map[string]any](t, pm.Object, "spec", "podMetricsEndpoints", 0)
	if _, ok := pep["port"]; ok {
		t.Errorf("PodMonitor names a port %v: the agent declares none", pep["port"])
	}
	wantRelabels(t, "PodMonitor", pep, map[string]string{"job": "tagger-node-agent", "__address__": "${1}:9091", "node": ""})

	// The PrometheusRule holds the rule file, as promtool tested it.
	pr := get("PrometheusRule/tagger")
	rendered, err := json.Marshal(pr.Object["spec"])
	if err != nil {
		t.Fatal(err)
	}
	file, err := os.ReadFile(RulesFile)
	if err != nil {
		t.Fatal(err)
	}
	fromFile, err := yaml.YAMLToJSON(file)
	if err != nil {
		t.Fatal(err)
	}
	if !jsonEqual(t, rendered, fromFile) {
		t.Errorf("PrometheusRule spec differs from %s", RulesFile)
	}

	cm := objs["ConfigMap/tagger-dashboard"]
	if cm == nil {
		t.Fatal("dashboard ConfigMap not rendered")
	}
	if cm.GetNamespace() != "grafana" || cm.GetLabels()["grafana_dashboard"] != "1" {
		t.Errorf("dashboard ConfigMap in %q with labels %v, want namespace grafana and grafana_dashboard: \"1\"", cm.GetNamespace(), cm.GetLabels())
	}
	dash, err := os.ReadFile(DashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	if got := field[string](t, cm.Object, "data", "tagger.json"); !jsonEqual(t, []byte(got), dash) {
		t.Errorf("dashboard ConfigMap data differs from %s", DashboardFile)
	}
}

// The PodMonitor follows nodeAgent.metricsAddr, and the templates refuse
// what cannot be scraped.
func TestChartMonitoringValues(t *testing.T) {
	objs, err := helmTemplate(t, "nodeAgent: {metricsAddr: \"0.0.0.0:9500\"}\nmonitoring: {podMonitor: {enabled: true}, prometheusRule: {enabled: true, runbookBaseURL: \"https://wiki.example/tagger/\"}}\n")
	if err != nil {
		t.Fatal(err)
	}
	wantRelabels(t, "PodMonitor", field[map[string]any](t, objs["PodMonitor/tagger-node-agent"].Object, "spec", "podMetricsEndpoints", 0),
		map[string]string{"__address__": "${1}:9500"})
	rules, err := json.Marshal(objs["PrometheusRule/tagger"].Object["spec"])
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(rules), runbookBase) || !strings.Contains(string(rules), `https://wiki.example/tagger#taggerhostsconfignotread`) {
		t.Errorf("runbookBaseURL not applied to the runbook links: %s", rules)
	}

	for _, c := range []struct{ values, want string }{
		{"nodeAgent: {metricsAddr: \"0\"}\nmonitoring: {podMonitor: {enabled: true}}\n", "needs nodeAgent.metricsAddr with a port"},
		{"nodeAgent: {metricsAddr: \"127.0.0.1:9091\"}\nmonitoring: {podMonitor: {enabled: true}}\n", "loopback"},
		{"controller: {metrics: {service: {enabled: false}}}\nmonitoring: {serviceMonitor: {enabled: true}}\n", "needs controller.metrics.service.enabled"},
	} {
		if _, err := helmTemplate(t, c.values); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("values %q: error %v, want one saying %q", c.values, err, c.want)
		}
	}
}

// wantRelabels checks that an endpoint's relabelings set each target label
// (to replacement, when not "").
func wantRelabels(t *testing.T, what string, ep map[string]any, want map[string]string) {
	t.Helper()
	rels, _ := ep["relabelings"].([]any)
	got := map[string][]string{}
	for _, r := range rels {
		m, _ := r.(map[string]any)
		if tl, ok := m["targetLabel"].(string); ok {
			repl, _ := m["replacement"].(string)
			got[tl] = append(got[tl], repl)
		}
	}
	for label, repl := range want {
		vals, ok := got[label]
		if !ok {
			t.Errorf("%s: no relabeling sets %s (%v)", what, label, rels)
			continue
		}
		if repl != "" && !contains(vals, repl) {
			t.Errorf("%s: %s set to %q, want %q", what, label, vals, repl)
		}
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// field digs a value out of nested maps and lists.
func field[V any](t *testing.T, obj any, path ...any) V {
	t.Helper()
	cur := obj
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := cur.(map[string]any)
			cur = m[k]
		case int:
			l, _ := cur.([]any)
			if k >= len(l) {
				t.Fatalf("%v: index %d of %d", path, k, len(l))
			}
			cur = l[k]
		}
	}
	v, ok := cur.(V)
	if !ok {
		t.Fatalf("%v: %T, not %T", path, cur, v)
	}
	return v
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	ja, _ := json.Marshal(x)
	jb, _ := json.Marshal(y)
	return string(ja) == string(jb)
}
