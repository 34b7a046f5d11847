package ratelimit

import (
	"fmt"
	"time"
)

// RateLimitedError is the cause of the error a call gets, without anything
// being sent, while its registry's Retry-After has not passed. The
// *upstream.Error wrapping it carries the remaining wait, so
// upstream.RetryAfter reports it and the reconciler backs off.
type RateLimitedError struct {
	// Registry is the registry host, as in the reference.
	Registry string
	// Until is when the registry said we may come back.
	Until time.Time
}

func (e *RateLimitedError) Error() string {
	return fmt.Sprintf("registry %s is rate-limiting us until %s; request not sent",
		e.Registry, e.Until.UTC().Format(time.RFC3339))
}
