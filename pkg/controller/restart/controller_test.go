package restart

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/sirupsen/logrus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/pkg/controller/reconcilertest"
)

// fakeWaver records the generations it ran waves for; err fails them.
type fakeWaver struct {
	waves []int64
	err   error
}

func (f *fakeWaver) Restart(_ context.Context, tag *v1alpha1.Tag, _ string, _, _ *metav1.LabelSelector) (Result, error) {
	f.waves = append(f.waves, tag.Status.ServedGeneration)
	return Result{Generation: tag.Status.ServedGeneration}, f.err
}

func rolloutTag(served, rolledOut int64, mutate func(*v1alpha1.Tag)) *v1alpha1.Tag {
	t := &v1alpha1.Tag{
		ObjectMeta: metav1.ObjectMeta{Name: "app"},
		Spec:       v1alpha1.TagSpec{Image: "example.com/app:v1", Rollout: &v1alpha1.RolloutSpec{Restart: true}},
		Status:     v1alpha1.TagStatus{ServedGeneration: served, RolledOutGeneration: rolledOut},
	}
	if mutate != nil {
		mutate(t)
	}
	return t
}

func TestReconcileWaves(t *testing.T) {
	cases := []struct {
		name          string
		tag           *v1alpha1.Tag
		waveErr       error
		wantWaves     []int64
		wantRolledOut int64
		wantErr       bool
	}{
		{"first generation served: baseline, no restart", rolloutTag(1, 0, nil), nil, nil, 1, false},
		{"served generation changed: one wave", rolloutTag(3, 2, nil), nil, []int64{3}, 3, false},
		{"rolled back: one wave", rolloutTag(1, 2, nil), nil, []int64{1}, 1, false},
		{"already rolled out: nothing", rolloutTag(2, 2, nil), nil, nil, 2, false},
		{"nothing served yet: nothing", rolloutTag(0, 0, nil), nil, nil, 0, false},
		{"rollout off: nothing, no baseline", rolloutTag(2, 0, func(t *v1alpha1.Tag) { t.Spec.Rollout = nil }), nil, nil, 0, false},
		{"conflicting Tag: not served, nothing", rolloutTag(2, 1, func(t *v1alpha1.Tag) {
			t.Status.Conditions = []metav1.Condition{{Type: v1alpha1.ConditionConflict, Status: metav1.ConditionTrue, Reason: "ImageAlreadyPinned", LastTransitionTime: metav1.Now()}}
		}), nil, nil, 1, false},
		{"wave fails: error, not recorded, retried later", rolloutTag(3, 2, nil), errors.New("patch refused"), []int64{3}, 2, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cl := reconcilertest.FakeClient(t, nil, c.tag)
			w := &fakeWaver{err: c.waveErr}
			r := &Reconciler{Client: cl, APIReader: cl, Waver: w, Log: logrus.New()}
			_, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: types.NamespacedName{Name: "app"}})
			if (err != nil) != c.wantErr {
				t.Fatalf("err %v, want error: %v", err, c.wantErr)
			}
			if !slices.Equal(w.waves, c.wantWaves) {
				t.Errorf("waves %v, want %v", w.waves, c.wantWaves)
			}
			if got := reconcilertest.GetTag(t, cl, "app").Status.RolledOutGeneration; got != c.wantRolledOut {
				t.Errorf("rolledOutGeneration %d, want %d", got, c.wantRolledOut)
			}
		})
	}
}

// Exactly one wave per served-generation change, across reconciles and
// across new controllers (a restart or a failover) built from status alone.
func TestOneWavePerChange(t *testing.T) {
	cl := reconcilertest.FakeClient(t, nil, rolloutTag(1, 0, nil))
	w := &fakeWaver{}
	step := func(served int64) {
		t.Helper()
		if served > 0 {
			tag := reconcilertest.GetTag(t, cl, "app")
			tag.Status.ServedGeneration = served
			if err := cl.Status().Update(context.Background(), tag); err != nil {
				t.Fatal(err)
			}
		}
		for i := 0; i < 2; i++ { // a fresh controller each time, reconciling twice
			r := &Reconciler{Client: cl, APIReader: cl, Waver: w, Log: logrus.New()}
			if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: types.NamespacedName{Name: "app"}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	step(0) // baseline 1
	step(2)
	step(0) // nothing changed
	step(3)
	step(1) // rollback
	if !slices.Equal(w.waves, []int64{2, 3, 1}) {
		t.Fatalf("waves %v, want exactly [2 3 1]", w.waves)
	}
}
