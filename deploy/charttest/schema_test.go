package charttest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// freeFormKeys name the values that are maps with keys of the user's
// choosing (Kubernetes objects passed through as they are): the schema
// leaves them open. Every other object in the schema is closed
// (additionalProperties: false), so a typo'd key is refused. A new free-form
// value has to be added here on purpose.
var freeFormKeys = []string{
	"annotations", "podAnnotations", "podLabels", "commonLabels", "nodeSelector",
	"resources", "affinity", "podSecurityContext", "securityContext",
	"livenessProbe", "readinessProbe", "updateStrategy", "labels",
}

// schemaNode is the part of JSON Schema values.schema.json uses.
type schemaNode struct {
	Type                 any                    `json:"type"`
	Properties           map[string]*schemaNode `json:"properties"`
	AdditionalProperties *bool                  `json:"additionalProperties"`
	Items                *schemaNode            `json:"items"`
}

func (n *schemaNode) closed() bool {
	return n.AdditionalProperties != nil && !*n.AdditionalProperties
}

func loadSchema(t *testing.T) *schemaNode {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), chartDir, "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var s schemaNode
	if err := json.Unmarshal(data, &s); err != nil {
		t.Fatalf("values.schema.json: %v", err)
	}
	return &s
}

func loadValues(t *testing.T) map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := yaml.Unmarshal(data, &v); err != nil {
		t.Fatalf("values.yaml: %v", err)
	}
	return v
}

// TestValuesSchemaMatchesValues: every key of values.yaml is in the schema
// with a type, and every property of a closed schema object is a key of
// values.yaml, so neither can drift from the other. A value added to
// values.yaml without the schema (or the reverse) fails here.
func TestValuesSchemaMatchesValues(t *testing.T) {
	s := loadSchema(t)
	if !s.closed() {
		t.Error("values.schema.json: the top level must set additionalProperties: false")
	}
	for _, p := range schemaDrift(s, loadValues(t), "") {
		t.Error(p)
	}
}

// schemaDrift lists the differences between a closed schema object and the
// values map at path.
func schemaDrift(s *schemaNode, values map[string]any, path string) []string {
	var problems []string
	for k, v := range values {
		key := strings.TrimPrefix(path+"."+k, ".")
		p, ok := s.Properties[k]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("values.yaml %s is not in values.schema.json", key))
		case p.Type == nil:
			problems = append(problems, fmt.Sprintf("values.schema.json %s has no type", key))
		case p.closed():
			m, isMap := v.(map[string]any)
			if !isMap {
				problems = append(problems, fmt.Sprintf("values.yaml %s is %T; the schema describes an object", key, v))
				continue
			}
			problems = append(problems, schemaDrift(p, m, key)...)
		case p.Type == "object":
			if !slices.Contains(freeFormKeys, k) || len(p.Properties) > 0 {
				problems = append(problems, fmt.Sprintf("values.schema.json %s is an open object: close it "+
					"(additionalProperties: false, every key a property) or, for a map of the user's own keys, "+
					"name it in charttest's freeFormKeys", key))
			}
		}
	}
	for k := range s.Properties {
		if _, ok := values[k]; !ok {
			problems = append(problems, fmt.Sprintf("values.schema.json %s is not in values.yaml (give it a default there)",
				strings.TrimPrefix(path+"."+k, ".")))
		}
	}
	slices.Sort(problems)
	return problems
}

// schemaRefusals are values that values.schema.json refuses, each with
// what helm says.
var schemaRefusals = []struct{ name, values, want string }{
	{"unknown top-level key", "controlller:\n  replicas: 1\n", "additional properties 'controlller' not allowed"},
	{"unknown nested key", "controller:\n  replicaz: 1\n", "additional properties 'replicaz' not allowed"},
	{"unknown deeply nested key", "registry:\n  storage:\n    s3:\n      bukket: b\n", "additional properties 'bukket' not allowed"},
	{"wrong type", "controller:\n  replicas: two\n", "at '/controller/replicas': got string, want integer"},
	{"wrong type of an object", "nodeAgent:\n  startupTaint: true\n", "at '/nodeAgent/startupTaint': got boolean, want object"},
	{"value out of its enum", "controller:\n  logFormat: yaml\n", "/controller/logFormat"},
}

// TestValuesSchemaRefuses: helm template refuses typo'd and wrong-typed
// values (helm install, on a real apiserver, in TestCRDUpgrade), and
// accepts what the free-form maps and numbers-as-strings allow.
func TestValuesSchemaRefuses(t *testing.T) {
	for _, tt := range schemaRefusals {
		t.Run(tt.name, func(t *testing.T) {
			_, err := runHelm(t, renderArgs("--values", writeValues(t, tt.values))...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("helm template with\n%s\nanswered %v, want %q", tt.values, err, tt.want)
			}
		})
	}
	t.Run("accepted", func(t *testing.T) {
		// --set types "3" and "0" as numbers; free-form maps take any key.
		_, err := runHelm(t, renderArgs("--set", "image.tag=3", "--set", "registry.image.tag=3", "--set", "nodeAgent.metricsAddr=0",
			"--set", "controller.podAnnotations.example\\.com/any=x", "--set", "controller.resources.limits.cpu=1",
			"--set", "controller.podDisruptionBudget.minAvailable=50%")...)
		if err != nil {
			t.Error(err)
		}
	})
}

// TestChartReadmeDescribesEveryValue: the chart README (helm-docs, `make
// docs`; `make lint` checks it is current) has a description for every value,
// so every value in values.yaml carries a "# --" comment.
func TestChartReadmeDescribesEveryValue(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot(t), chartDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, values, ok := strings.Cut(string(data), "\n## Values\n")
	if !ok {
		t.Fatal("chart README has no \"## Values\" section: run `make docs`")
	}
	rows := 0
	for line := range strings.Lines(values) {
		if !strings.HasPrefix(line, "| ") || strings.HasPrefix(line, "| Key ") {
			continue
		}
		rows++
		cells := strings.Split(strings.TrimSpace(line), " | ")
		if len(cells) < 4 || strings.TrimSpace(strings.TrimSuffix(cells[len(cells)-1], "|")) == "" {
			t.Errorf("chart README: %s has no description: add a `# --` comment above it in values.yaml and run `make docs`",
				strings.TrimPrefix(cells[0], "| "))
		}
	}
	if rows < len(loadValues(t)) {
		t.Errorf("chart README lists %d values; run `make docs`", rows)
	}
}
