package registryclient

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		in     string
		want   time.Duration
		wantOK bool
	}{
		{in: "120", want: 2 * time.Minute, wantOK: true},
		{in: " 0 ", want: 0, wantOK: true},
		{in: now.Add(90 * time.Second).Format(http.TimeFormat), want: 90 * time.Second, wantOK: true},
		{in: now.Add(5 * time.Second).Format(time.RFC850), want: 5 * time.Second, wantOK: true},
		{in: now.Add(-time.Hour).Format(http.TimeFormat), want: 0, wantOK: true},
		{in: "99999999999999", want: 30 * 24 * time.Hour, wantOK: true},
		{in: "-5"},
		{in: "1.5"},
		{in: "soon"},
		{in: ""},
	}
	for _, tt := range tests {
		got, ok := parseRetryAfter(tt.in, now)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestErrorHelpers(t *testing.T) {
	status := func(code int, retry time.Duration, details ...string) error {
		return newError("resolve", "docker.io/library/nginx:1.27", &statusError{
			method: http.MethodHead, url: "https://registry-1.docker.io/v2/library/nginx/manifests/1.27",
			code: code, retryAfter: retry, details: details,
		})
	}
	tests := []struct {
		name         string
		err          error
		notFound     bool
		unauthorized bool
		retry        time.Duration
		msg          string
	}{
		{
			name: "404 with OCI code", err: status(404, 0, "MANIFEST_UNKNOWN: manifest unknown"), notFound: true,
			msg: "resolve docker.io/library/nginx:1.27: HEAD https://registry-1.docker.io/v2/library/nginx/manifests/1.27: 404 Not Found: MANIFEST_UNKNOWN: manifest unknown",
		},
		{name: "401", err: status(401, 0), unauthorized: true, msg: "401 Unauthorized"},
		{name: "403", err: status(403, 0, "DENIED: requested access to the resource is denied"), unauthorized: true, msg: "DENIED"},
		{name: "429", err: status(429, 30*time.Second, "TOOMANYREQUESTS: slow down"), retry: 30 * time.Second, msg: "429 Too Many Requests: TOOMANYREQUESTS: slow down (retry after 30s)"},
		{name: "wrapped further", err: fmt.Errorf("check tag: %w", status(404, 0)), notFound: true, msg: "check tag: resolve"},
		{name: "transport", err: newError("resolve", "quay.io/a/b:c", errors.New("dial tcp: connection refused")), msg: "resolve quay.io/a/b:c: dial tcp"},
		{name: "plain error", err: errors.New("404")},
		{name: "nil", err: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IsNotFound(tt.err); got != tt.notFound {
				t.Errorf("IsNotFound = %v", got)
			}
			if got := IsUnauthorized(tt.err); got != tt.unauthorized {
				t.Errorf("IsUnauthorized = %v", got)
			}
			d, ok := RetryAfter(tt.err)
			if d != tt.retry || ok != (tt.retry > 0) {
				t.Errorf("RetryAfter = %v, %v", d, ok)
			}
			if tt.msg != "" && !strings.Contains(tt.err.Error(), tt.msg) {
				t.Errorf("message %q does not contain %q", tt.err, tt.msg)
			}
		})
	}
}

func TestNewStatusErrorBody(t *testing.T) {
	long := strings.Repeat("x", 500)
	tests := []struct {
		name, body string
		header     http.Header
		code       int
		want       string
		notWant    string
		retry      time.Duration
	}{
		{name: "oci errors", code: 404, body: `{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry","detail":{"name":"x"}}]}`,
			want: "404 Not Found: NAME_UNKNOWN: repository name not known to registry", notWant: "detail"},
		{name: "not json", code: 500, body: `<html>secret-ish page</html>`, want: "GET u: 500 Internal Server Error", notWant: "secret"},
		{name: "long message truncated", code: 400, body: `{"errors":[{"code":"X","message":"` + long + `"}]}`, notWant: long},
		{name: "code only", code: 400, body: `{"errors":[{"code":"MANIFEST_INVALID"}]}`, want: ": MANIFEST_INVALID"},
		{name: "503 retry date", code: 503, header: http.Header{"Retry-After": {time.Now().Add(time.Hour).UTC().Format(http.TimeFormat)}}, want: "503"},
		{name: "404 ignores retry-after", code: 404, header: http.Header{"Retry-After": {"10"}}, want: "404"},
		{name: "429 seconds", code: 429, header: http.Header{"Retry-After": {"10"}}, retry: 10 * time.Second, want: "retry after 10s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.header
			if h == nil {
				h = http.Header{}
			}
			e := newStatusError("GET", "u", &http.Response{StatusCode: tt.code, Header: h}, []byte(tt.body))
			msg := e.Error()
			if tt.want != "" && !strings.Contains(msg, tt.want) {
				t.Errorf("%q does not contain %q", msg, tt.want)
			}
			if tt.notWant != "" && strings.Contains(msg, tt.notWant) {
				t.Errorf("%q contains %q", msg, tt.notWant)
			}
			if tt.code == 503 {
				if e.retryAfter < 59*time.Minute || e.retryAfter > time.Hour {
					t.Errorf("retryAfter = %v, want about 1h", e.retryAfter)
				}
			} else if e.retryAfter != tt.retry {
				t.Errorf("retryAfter = %v, want %v", e.retryAfter, tt.retry)
			}
		})
	}
}
