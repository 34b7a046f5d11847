// WaitFor is the one poll loop the tests and benchmarks that drive
// real components use to wait on a condition: never a bare sleep as
// synchronization, always a timeout and the last reason it did not hold.

package rig

import "time"

// WaitInterval is how often a condition is polled.
const WaitInterval = 50 * time.Millisecond

// WaitFor polls cond until it reports true, and fails t when timeout passes
// first, with what and cond's last message. cond runs at least once, and
// once more at the deadline.
func WaitFor(t T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, msg := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %s", timeout, what, msg)
			return
		}
		time.Sleep(WaitInterval)
	}
}
