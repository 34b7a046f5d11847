package check

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/pkg/controller/reconcilertest"
)

// The metrics are package globals shared with the other tests: this one
// uses its own Tag names and registry host, and compares deltas.
func TestMetricsPerTagAndRegistry(t *testing.T) {
	const host = "metrics.example.com"
	tag := appTag(nil)
	tag.Name, tag.Spec.Image = "metrics-app", host+"/app:v1"
	cl := reconcilertest.FakeClient(t, nil, tag)
	res := &fakeResolver{digest: d1}
	clock := t0
	r, _ := newReconciler(cl, res, &clock)

	reconcilertest.Reconcile(t, r, tag.Name)
	if got := testutil.ToFloat64(checksTotal.WithLabelValues(host, v1alpha1.CheckNewGeneration)); got != 1 {
		t.Errorf("tagger_checks_total{registry=%q,result=NewGeneration} = %v, want 1", host, got)
	}
	if got := testutil.ToFloat64(lastSuccess.WithLabelValues(tag.Name)); got != float64(t0.Unix()) {
		t.Errorf("last successful check = %v, want %d (the check's time)", got, t0.Unix())
	}
	wantConditions(t, tag.Name, map[string]float64{"Ready": 1, "Resolved": 1, "Conflict": 0})

	// A failing check an hour later keeps the last success where it was.
	clock = t0.Add(time.Hour)
	res.err = errors.New("connection refused")
	reconcilertest.Reconcile(t, r, tag.Name)
	// Only a spec change or the annotation makes it due: request a check.
	fresh := reconcilertest.GetTag(t, cl, tag.Name)
	fresh.Annotations = map[string]string{v1alpha1.CheckAnnotation: "1"}
	if err := cl.Update(context.Background(), fresh); err != nil {
		t.Fatal(err)
	}
	reconcilertest.Reconcile(t, r, tag.Name)
	if got := testutil.ToFloat64(checksTotal.WithLabelValues(host, v1alpha1.CheckFailed)); got != 1 {
		t.Errorf("tagger_checks_total{registry=%q,result=Failed} = %v, want 1", host, got)
	}
	if got := testutil.ToFloat64(lastSuccess.WithLabelValues(tag.Name)); got != float64(t0.Unix()) {
		t.Errorf("last successful check after a failure = %v, want %d (unchanged)", got, t0.Unix())
	}
	// Ready follows the failed check too (the old generation stays served).
	wantConditions(t, tag.Name, map[string]float64{"Ready": 0, "Resolved": 0, "Conflict": 0})

	// The Tag goes: so do its series.
	if err := cl.Delete(context.Background(), fresh); err != nil {
		t.Fatal(err)
	}
	reconcilertest.Reconcile(t, r, tag.Name)
	if n := seriesOf(t, "tagger_tag_last_successful_check_timestamp_seconds", tag.Name) +
		seriesOf(t, "tagger_tag_condition", tag.Name); n != 0 {
		t.Errorf("%d series of deleted Tag %s left", n, tag.Name)
	}
}

// After a restart during a failure streak the status holds no success
// time: the gauge starts at the time the failures began.
func TestLastSuccessEstimatedFromStatus(t *testing.T) {
	tag := appTag(func(t *v1alpha1.Tag) { checked(t, 1, gen(1, d1, false)) })
	tag.Name = "metrics-restarted"
	tag.Status.LastCheck.Result = v1alpha1.CheckFailed
	failingSince := t0.Add(-30 * time.Minute)
	tag.Status.Conditions = []metav1.Condition{{Type: v1alpha1.ConditionResolved, Status: "False", Reason: "Unreachable",
		LastTransitionTime: metav1.NewTime(failingSince)}}
	recordTag(tag)
	if got := testutil.ToFloat64(lastSuccess.WithLabelValues(tag.Name)); got != float64(failingSince.Unix()) {
		t.Errorf("estimated last success = %v, want %d (Resolved turned False)", got, failingSince.Unix())
	}

	never := appTag(nil)
	never.Name = "metrics-never"
	never.Status.LastCheck = &v1alpha1.CheckStatus{Result: v1alpha1.CheckFailed}
	recordTag(never)
	if n := seriesOf(t, "tagger_tag_last_successful_check_timestamp_seconds", never.Name); n != 0 {
		t.Errorf("a Tag never resolved has %d last-success series, want none", n)
	}
	forgetTag(tag.Name)
	forgetTag(never.Name)
}

func wantConditions(t *testing.T, tag string, want map[string]float64) {
	t.Helper()
	for c, v := range want {
		if got := testutil.ToFloat64(tagCondition.WithLabelValues(tag, c)); got != v {
			t.Errorf("tagger_tag_condition{tag=%q,condition=%q} = %v, want %v", tag, c, got, v)
		}
	}
}

// seriesOf counts the series of family name labelled tag=name.
func seriesOf(t *testing.T, family, name string) int {
	t.Helper()
	fams, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range fams {
		if f.GetName() != family {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "tag" && l.GetValue() == name {
					n++
				}
			}
		}
	}
	return n
}
