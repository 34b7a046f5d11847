package registryclient

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// ErrDigestMismatch is wrapped by errors for content that does not hash to
// the digest it was asked for: it is never returned as if it were good.
var ErrDigestMismatch = errors.New("content does not match its digest")

// Error is what every Client method returns on failure: what was done (Op)
// to which reference (Ref), the HTTP status when a server answered, and the
// cause. Messages never contain credentials or tokens.
type Error struct {
	// Op is the operation: "resolve", "fetch manifest", "fetch config".
	Op string
	// Ref is the reference operated on, "docker.io/library/nginx:1.27" or
	// "docker.io/library/nginx@sha256:...".
	Ref string
	// StatusCode is the failing HTTP status (of the registry or its token
	// service), or 0 for transport and content errors.
	StatusCode int
	// RetryAfter is the server's Retry-After on a 429 or 503, else 0.
	RetryAfter time.Duration
	// Err is the cause: a transport error from net/http, a status error, or
	// a content error such as ErrDigestMismatch.
	Err error
}

func (e *Error) Error() string { return e.Op + " " + e.Ref + ": " + e.Err.Error() }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// IsNotFound reports whether err is a registry 404 (unknown tag, manifest,
// blob or repository).
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.StatusCode == http.StatusNotFound
}

// IsUnauthorized reports whether the registry or its token service refused
// the credentials (401), or refused access with them (403).
func IsUnauthorized(err error) bool {
	var e *Error
	return errors.As(err, &e) && (e.StatusCode == http.StatusUnauthorized || e.StatusCode == http.StatusForbidden)
}

// RetryAfter returns how long the server asked to wait before retrying, when
// err is a 429 or 503 that carried a positive Retry-After.
func RetryAfter(err error) (time.Duration, bool) {
	var e *Error
	if errors.As(err, &e) && e.RetryAfter > 0 {
		return e.RetryAfter, true
	}
	return 0, false
}

func newError(op, ref string, err error) *Error {
	e := &Error{Op: op, Ref: ref, Err: err}
	var se *statusError
	if errors.As(err, &se) {
		e.StatusCode = se.code
		e.RetryAfter = se.retryAfter
	}
	return e
}

// statusError is an unexpected HTTP status, with the OCI error codes the
// body carried, if any.
type statusError struct {
	method, url string
	code        int
	retryAfter  time.Duration
	details     []string // "CODE: message"
}

func (e *statusError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %d %s", e.method, e.url, e.code, http.StatusText(e.code))
	if len(e.details) > 0 {
		b.WriteString(": ")
		b.WriteString(strings.Join(e.details, "; "))
	}
	if e.retryAfter > 0 {
		fmt.Fprintf(&b, " (retry after %s)", e.retryAfter)
	}
	return b.String()
}

const (
	maxErrorBody  = 64 << 10
	maxErrDetails = 3
	maxErrMessage = 200
)

// newStatusError builds a statusError from a response whose body the
// caller has read (at most maxErrorBody of it). Only the OCI error codes and
// messages are kept; raw bodies can be anything, so they are not echoed.
func newStatusError(method, url string, resp *http.Response, body []byte) *statusError {
	e := &statusError{method: method, url: url, code: resp.StatusCode}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
			e.retryAfter = d
		}
	}
	if resp.StatusCode == http.StatusUnauthorized {
		// The challenge's error says why a token was refused
		// (invalid_token, insufficient_scope); HEAD answers have no body.
		for _, ch := range challenges(resp.Header) {
			if v := ch.Parameters["error"]; v != "" && len(v) <= maxErrMessage {
				e.details = append(e.details, schemeName(ch.Scheme)+" "+v)
			}
		}
	}
	var oci struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &oci) == nil {
		for i, x := range oci.Errors {
			if i == maxErrDetails {
				break
			}
			msg := x.Message
			if len(msg) > maxErrMessage {
				msg = msg[:maxErrMessage] + "..."
			}
			if msg == "" {
				e.details = append(e.details, x.Code)
			} else {
				e.details = append(e.details, x.Code+": "+msg)
			}
		}
	}
	return e
}

// parseRetryAfter reads a Retry-After value: delay-seconds or an HTTP-date
// (RFC 9110 10.2.3). A date in the past means "now" (0, true).
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		// Cap absurd values instead of overflowing time.Duration.
		const maxSecs = int64(30 * 24 * time.Hour / time.Second)
		return time.Duration(min(secs, maxSecs)) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}
