package cache

import "time"

// Copy backoff bounds and timeouts.
const (
	minBackoff = 5 * time.Second
	maxBackoff = 10 * time.Minute
	// copyTimeout bounds one attempt to copy a generation; an unfinished
	// copy resumes on the next attempt without re-sending what is complete.
	copyTimeout = 30 * time.Minute
	// cleanupGiveUp is how long a deleted Tag's cache cleanup is retried
	// before the finalizer is released anyway: a bundled registry that stays
	// down must not keep a Tag (and an uninstall) from going away.
	cleanupGiveUp = 10 * time.Minute
)

// backoff is the wait after n consecutive failures: 5s doubling to 10m.
func backoff(failures int32) time.Duration {
	d := minBackoff
	for i := int32(1); i < failures && d < maxBackoff; i++ {
		d *= 2
	}
	return min(d, maxBackoff)
}
