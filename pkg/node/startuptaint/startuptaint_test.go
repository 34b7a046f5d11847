package startuptaint

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var (
	startup  = corev1.Taint{Key: DefaultKey, Effect: corev1.TaintEffectNoSchedule}
	other    = corev1.Taint{Key: "dedicated", Value: "gpu", Effect: corev1.TaintEffectNoSchedule}
	timed    = corev1.Taint{Key: "node.kubernetes.io/not-ready", Effect: corev1.TaintEffectNoExecute, TimeAdded: &metav1.Time{Time: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)}}
	execTwin = corev1.Taint{Key: DefaultKey, Effect: corev1.TaintEffectNoExecute}
)

func decode(t *testing.T, patch []byte) []op {
	t.Helper()
	var ops []op
	if err := json.Unmarshal(patch, &ops); err != nil {
		t.Fatalf("patch %s: %v", patch, err)
	}
	return ops
}

func TestPatch(t *testing.T) {
	tests := []struct {
		name   string
		taints []corev1.Taint
		want   []corev1.Taint // the replace value; nil: no patch
	}{
		{name: "only the startup taint", taints: []corev1.Taint{startup}, want: []corev1.Taint{}},
		{name: "others kept in order", taints: []corev1.Taint{other, startup, timed}, want: []corev1.Taint{other, timed}},
		{name: "every effect of the key", taints: []corev1.Taint{startup, other, execTwin}, want: []corev1.Taint{other}},
		{name: "absent", taints: []corev1.Taint{other, timed}},
		{name: "no taints", taints: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			patch, ok, err := Patch(tt.taints, DefaultKey)
			if err != nil {
				t.Fatal(err)
			}
			if ok != (tt.want != nil) {
				t.Fatalf("ok = %v, want %v (patch %s)", ok, tt.want != nil, patch)
			}
			if !ok {
				if patch != nil {
					t.Fatalf("no-op returned a patch: %s", patch)
				}
				return
			}
			ops := decode(t, patch)
			if len(ops) != 2 {
				t.Fatalf("want test then replace, got %s", patch)
			}
			if ops[0].Op != "test" || ops[0].Path != "/spec/taints" || !equality.Semantic.DeepEqual(ops[0].Value, tt.taints) {
				t.Errorf("first op %+v, want a test of /spec/taints == %+v", ops[0], tt.taints)
			}
			if ops[1].Op != "replace" || ops[1].Path != "/spec/taints" || !equality.Semantic.DeepEqual(ops[1].Value, tt.want) {
				t.Errorf("second op %+v, want a replace of /spec/taints with %+v", ops[1], tt.want)
			}
		})
	}
}

// The replace value is a JSON list even when no taint is left: null would
// make the test of a later removal compare against a missing list.
func TestPatchEmptyListIsAList(t *testing.T) {
	patch, _, err := Patch([]corev1.Taint{startup}, DefaultKey)
	if err != nil {
		t.Fatal(err)
	}
	var raw []map[string]json.RawMessage
	if err := json.Unmarshal(patch, &raw); err != nil {
		t.Fatal(err)
	}
	if got := string(raw[1]["value"]); got != "[]" {
		t.Fatalf("replace value %s, want []", got)
	}
}

func TestWithoutLeavesInputAlone(t *testing.T) {
	in := []corev1.Taint{startup, other}
	out, ok := Without(in, DefaultKey)
	if !ok || !reflect.DeepEqual(out, []corev1.Taint{other}) {
		t.Fatalf("Without = %+v, %v", out, ok)
	}
	if !reflect.DeepEqual(in, []corev1.Taint{startup, other}) {
		t.Fatalf("input changed: %+v", in)
	}
}
