package check

import (
	"hash/fnv"
	"time"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
)

// Backoff bounds for failed checks.
const (
	minBackoff = 5 * time.Second
	maxBackoff = 10 * time.Minute
)

// checkReason says why a check of the upstream is due now ("" = not due).
type checkReason string

const (
	dueFirst      checkReason = "first check"
	dueSpec       checkReason = "spec changed"
	dueAnnotation checkReason = "check requested"
	dueInterval   checkReason = "scheduled"
	dueRetry      checkReason = "retry after failure"
)

// backoff is the wait after n consecutive failures: 5s doubling to 10m.
func backoff(failures int32) time.Duration {
	d := minBackoff
	for i := int32(1); i < failures && d < maxBackoff; i++ {
		d *= 2
	}
	return min(d, maxBackoff)
}

// jitter returns a stable fraction in [0, 1) for a Tag and the time of its last
// check, so reconciling twice yields the same due time while Tags created
// together still spread out over the interval.
func jitter(uid string, last time.Time) float64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(uid))
	_, _ = h.Write([]byte(last.UTC().Format(time.RFC3339Nano)))
	return float64(h.Sum64()%10000) / 10000
}

// nextCheck is when the next check is due, given the Tag's status (zero: none
// is scheduled). A failed check retries with backoff (or the upstream's
// Retry-After recorded in lastCheck, whichever is later); a successful one waits checkInterval,
// jittered into [0.9, 1.1) of it.
func nextCheck(tag *v1alpha1.Tag) time.Time {
	lc := tag.Status.LastCheck
	if lc == nil {
		return time.Time{}
	}
	last := lc.Time.Time
	if lc.Result == v1alpha1.CheckFailed {
		wait := backoff(lc.ConsecutiveFailures)
		if lc.RetryAfter != nil {
			wait = max(wait, lc.RetryAfter.Duration)
		}
		return last.Add(wait)
	}
	if tag.Spec.CheckInterval == nil || tag.Spec.CheckInterval.Duration <= 0 {
		return time.Time{}
	}
	iv := tag.Spec.CheckInterval.Duration
	f := 0.9 + 0.2*jitter(string(tag.UID), last)
	return last.Add(time.Duration(float64(iv) * f))
}

// checkDue decides whether the upstream must be checked now and why.
func checkDue(tag *v1alpha1.Tag, now time.Time) checkReason {
	st := tag.Status
	switch {
	case st.LastCheck == nil:
		return dueFirst
	case st.ObservedGeneration != tag.Generation:
		return dueSpec
	case tag.Annotations[v1alpha1.CheckAnnotation] != st.CheckAnnotation:
		return dueAnnotation
	}
	next := nextCheck(tag)
	if next.IsZero() || now.Before(next) {
		return ""
	}
	if st.LastCheck.Result == v1alpha1.CheckFailed {
		return dueRetry
	}
	return dueInterval
}
