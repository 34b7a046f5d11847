package check

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
)

func TestBackoff(t *testing.T) {
	want := []time.Duration{5 * time.Second, 5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second}
	for n, w := range want {
		if got := backoff(int32(n)); got != w {
			t.Errorf("backoff(%d) = %v, want %v", n, got, w)
		}
	}
	if got := backoff(50); got != maxBackoff {
		t.Errorf("backoff(50) = %v, want cap %v", got, maxBackoff)
	}
}

func TestCheckDue(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	base := func() *v1alpha1.Tag {
		return &v1alpha1.Tag{
			ObjectMeta: metav1.ObjectMeta{UID: types.UID("u1"), Generation: 2, Annotations: map[string]string{}},
			Status: v1alpha1.TagStatus{
				ObservedGeneration: 2,
				LastCheck:          &v1alpha1.CheckStatus{Time: metav1.NewTime(t0), Result: v1alpha1.CheckUnchanged},
			},
		}
	}
	cases := []struct {
		name   string
		mutate func(*v1alpha1.Tag)
		now    time.Time
		retry  time.Duration
		want   checkReason
	}{
		{"never checked", func(tg *v1alpha1.Tag) { tg.Status.LastCheck = nil }, t0, 0, dueFirst},
		{"up to date, no interval", func(*v1alpha1.Tag) {}, t0.Add(24 * time.Hour), 0, ""},
		{"spec changed", func(tg *v1alpha1.Tag) { tg.Generation = 3 }, t0, 0, dueSpec},
		{"annotation changed", func(tg *v1alpha1.Tag) { tg.Annotations[v1alpha1.CheckAnnotation] = "x" }, t0, 0, dueAnnotation},
		{"annotation acted on", func(tg *v1alpha1.Tag) {
			tg.Annotations[v1alpha1.CheckAnnotation] = "x"
			tg.Status.CheckAnnotation = "x"
		}, t0, 0, ""},
		{"interval not yet", func(tg *v1alpha1.Tag) { tg.Spec.CheckInterval = &metav1.Duration{Duration: time.Hour} }, t0.Add(50 * time.Minute), 0, ""},
		{"interval passed", func(tg *v1alpha1.Tag) { tg.Spec.CheckInterval = &metav1.Duration{Duration: time.Hour} }, t0.Add(70 * time.Minute), 0, dueInterval},
		{"failed, backoff not over", func(tg *v1alpha1.Tag) {
			tg.Status.LastCheck.Result = v1alpha1.CheckFailed
			tg.Status.LastCheck.ConsecutiveFailures = 2
		}, t0.Add(9 * time.Second), 0, ""},
		{"failed, backoff over", func(tg *v1alpha1.Tag) {
			tg.Status.LastCheck.Result = v1alpha1.CheckFailed
			tg.Status.LastCheck.ConsecutiveFailures = 2
		}, t0.Add(11 * time.Second), 0, dueRetry},
		{"failed, retry-after longer than backoff", func(tg *v1alpha1.Tag) {
			tg.Status.LastCheck.Result = v1alpha1.CheckFailed
			tg.Status.LastCheck.ConsecutiveFailures = 1
		}, t0.Add(30 * time.Second), time.Minute, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tg := base()
			c.mutate(tg)
			if c.retry > 0 {
				tg.Status.LastCheck.RetryAfter = &metav1.Duration{Duration: c.retry}
			}
			if got := checkDue(tg, c.now); got != c.want {
				t.Fatalf("checkDue = %q, want %q", got, c.want)
			}
		})
	}
}

func TestNextCheckSpreads(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	iv := 15 * time.Minute
	lo, hi := t0.Add(iv*9/10), t0.Add(iv*11/10)
	buckets := map[int]int{}
	for i := 0; i < 1000; i++ {
		tg := &v1alpha1.Tag{
			ObjectMeta: metav1.ObjectMeta{UID: types.UID(string(rune('a'+i%26)) + time.Duration(i).String())},
			Spec:       v1alpha1.TagSpec{CheckInterval: &metav1.Duration{Duration: iv}},
			Status:     v1alpha1.TagStatus{LastCheck: &v1alpha1.CheckStatus{Time: metav1.NewTime(t0)}},
		}
		n := nextCheck(tg)
		if n.Before(lo) || !n.Before(hi) {
			t.Fatalf("nextCheck = %v, outside [%v, %v)", n, lo, hi)
		}
		if again := nextCheck(tg); !again.Equal(n) {
			t.Fatalf("nextCheck not stable: %v then %v", n, again)
		}
		buckets[int(n.Sub(lo)/(iv/50))]++
	}
	// 1000 Tags over 10 buckets of 18s: none may be empty or hold a third.
	for b := 0; b < 10; b++ {
		if buckets[b] == 0 || buckets[b] > 333 {
			t.Fatalf("uneven spread: bucket %d has %d of 1000 (%v)", b, buckets[b], buckets)
		}
	}
}
