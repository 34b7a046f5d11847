package hooks

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestErrorEchoBounded is defect 4: a payload field of almost 1 MiB is not
// echoed whole, neither in the answer nor in the log line.
func TestErrorEchoBounded(t *testing.T) {
	r := newRig(t, rigOptions{tags: defaultTags()})
	huge := strings.Repeat("A", MaxBodyBytes-100)
	for _, req := range []request{
		{path: "/hooks/generic/" + testSecrets.Generic, body: `{"image":"` + huge + `"}`},
		{path: "/hooks/quay/" + testSecrets.Quay, body: `{"docker_url":"` + huge + `","updated_tags":["v1"]}`},
		{path: "/hooks/harbor", header: map[string]string{"Authorization": testSecrets.Harbor}, body: `{"type":"` + huge + `"}`},
	} {
		before := len(r.logBuf.String())
		resp := r.do(req)
		if resp.status/100 != 2 && resp.status != http.StatusBadRequest {
			t.Fatalf("%s: status %d", req.path[:12], resp.status)
		}
		if len(resp.raw) > 1024 {
			t.Errorf("%s: answer of %d bytes echoes the payload", req.path[:12], len(resp.raw))
		}
		if n := len(r.logBuf.String()) - before; n > 2048 {
			t.Errorf("%s: log line of %d bytes", req.path[:12], n)
		}
	}
}

// TestGitHubUnauthorizedFirst is defect 5: without a valid signature over
// the body, every GitHub delivery gets 401, whatever else is wrong with it.
func TestGitHubUnauthorizedFirst(t *testing.T) {
	r := newRig(t, rigOptions{tags: defaultTags()})
	gh := goodRequests()[ProviderGitHub]
	with := func(mod func(*request)) request {
		req := gh
		req.header = map[string]string{}
		for k, v := range gh.header {
			req.header[k] = v
		}
		mod(&req)
		return req
	}
	big := strings.Repeat(" ", MaxBodyBytes+10)
	for name, req := range map[string]request{
		"form content type": with(func(q *request) {
			q.contentType = "application/x-www-form-urlencoded"
			q.header["X-Hub-Signature-256"] = "sha256=00"
		}),
		"no content type":      with(func(q *request) { q.contentType = "-"; delete(q.header, "X-Hub-Signature-256") }),
		"empty body":           with(func(q *request) { q.body = ""; q.header["X-Hub-Signature-256"] = Signature([]byte("x"), "guess") }),
		"too large":            with(func(q *request) { q.body = big; q.header["X-Hub-Signature-256"] = Signature([]byte(big), "guess") }),
		"too large, chunked":   with(func(q *request) { q.body, q.chunked = big, true }),
		"GET":                  with(func(q *request) { q.method = http.MethodGet; q.body = ""; delete(q.header, "X-Hub-Signature-256") }),
		"malformed JSON":       with(func(q *request) { q.body = "{"; q.header["X-Hub-Signature-256"] = Signature([]byte("{"), "guess") }),
		"unsupported event":    with(func(q *request) { q.header["X-GitHub-Event"] = "push"; q.header["X-Hub-Signature-256"] = "sha256=zz" }),
		"signature of another": with(func(q *request) { q.header["X-Hub-Signature-256"] = Signature([]byte("{}"), testSecrets.GitHub) }),
	} {
		if resp := r.do(req); resp.status != http.StatusUnauthorized || resp.body["error"] != "unauthorized" {
			t.Errorf("%s: %d %s, want 401 unauthorized", name, resp.status, resp.raw)
		}
	}
	// With a valid signature, the other checks speak.
	signed := with(func(q *request) { q.contentType = "text/plain" })
	if resp := r.do(signed); resp.status != http.StatusUnsupportedMediaType {
		t.Errorf("signed, text/plain: %d, want 415", resp.status)
	}
	emptySigned := with(func(q *request) { q.body = ""; q.header["X-Hub-Signature-256"] = Signature(nil, testSecrets.GitHub) })
	if resp := r.do(emptySigned); resp.status != http.StatusBadRequest || resp.body["error"] != "empty body" {
		t.Errorf("signed, empty: %d %s, want 400 empty body", resp.status, resp.raw)
	}
	emptySigned.method = http.MethodGet
	if resp := r.do(emptySigned); resp.status != http.StatusMethodNotAllowed {
		t.Errorf("signed GET: %d, want 405", resp.status)
	}
	if r.checkCount() != 0 {
		t.Errorf("%d checks requested", r.checkCount())
	}
}

// TestReplay is defect 5: a signed GitHub delivery (or a Harbor one) sent
// again after the coalescing window is answered "already received" and
// checks nothing, under its own X-GitHub-Delivery id or a fresh one; a new
// delivery is processed. Generic deliveries carry no identity and are not
// refused.
func TestReplay(t *testing.T) {
	r := newRig(t, rigOptions{tags: defaultTags()})
	good := goodRequests()
	gh := good[ProviderGitHub]
	withID := func(req request, id string) request {
		h := map[string]string{"X-GitHub-Delivery": id}
		for k, v := range req.header {
			h[k] = v
		}
		req.header = h
		return req
	}
	afterWindow := func() {
		r.waitCheck(5 * time.Second)
		// The rig's coalescing window is 20ms: a replay after it is no
		// longer merged by the queue.
		time.Sleep(100 * time.Millisecond)
	}
	if resp := r.do(withID(gh, "d-1")); resp.status != http.StatusAccepted {
		t.Fatalf("first delivery: %d %s", resp.status, resp.raw)
	}
	afterWindow()
	for name, req := range map[string]request{"same id": withID(gh, "d-1"), "fresh id": withID(gh, "d-2"), "no id": gh} {
		if resp := r.do(req); resp.status != http.StatusOK || resp.body["ignored"] != "delivery already received" {
			t.Errorf("replay, %s: %d %s", name, resp.status, resp.raw)
		}
	}
	other := githubSample("package", "published", "Octo-Org", "app", "v1")
	other = strings.Replace(other, `"published"`, `"published" `, 1) // another delivery's bytes
	next := request{path: gh.path, body: other, header: map[string]string{
		"X-GitHub-Event": "package", "X-Hub-Signature-256": Signature([]byte(other), testSecrets.GitHub), "X-GitHub-Delivery": "d-3"}}
	if resp := r.do(next); resp.status != http.StatusAccepted {
		t.Errorf("a new delivery: %d %s", resp.status, resp.raw)
	}
	afterWindow()

	if resp := r.do(good[ProviderHarbor]); resp.status != http.StatusAccepted {
		t.Fatalf("harbor: %d", resp.status)
	}
	afterWindow()
	if resp := r.do(good[ProviderHarbor]); resp.status != http.StatusOK || resp.body["ignored"] != "delivery already received" {
		t.Errorf("harbor replay: %d %s", resp.status, resp.raw)
	}
	for range 2 {
		if resp := r.do(good[ProviderGeneric]); resp.status != http.StatusAccepted {
			t.Errorf("generic, identical: %d %s", resp.status, resp.raw)
		}
		afterWindow()
	}
	if n := r.webhooks(ProviderGitHub, resultReplayed); n != 3 {
		t.Errorf("tagger_webhooks_total{github,replayed} = %d, want 3", n)
	}
	if n := r.checkCount(); n != 5 {
		t.Errorf("%d checks, want 5 (github twice, harbor once, generic twice)", n)
	}
}

// TestReplayMemoryBounded: the memory keeps the newest entries only.
func TestReplayMemoryBounded(t *testing.T) {
	m := newReplayMemory(4)
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		if !m.add(k) {
			t.Fatalf("%s seen", k)
		}
	}
	if len(m.keys) != 4 || !m.add("a") || m.add("e") {
		t.Errorf("want a forgotten, e remembered; keys %v", m.keys)
	}
	m.remove("e")
	if !m.add("e") {
		t.Error("removed key still seen")
	}
}

// TestUnauthorizedLogRateLimited is defect 6: a flood of unauthenticated
// deliveries writes a few warnings, not one per request, and counts the
// rest.
func TestUnauthorizedLogRateLimited(t *testing.T) {
	r := newRig(t, rigOptions{tags: defaultTags()})
	const n = 100
	for range n {
		if resp := r.do(request{path: "/hooks/generic/wrong", body: `{}`}); resp.status != http.StatusUnauthorized {
			t.Fatalf("status %d", resp.status)
		}
	}
	lines := strings.Count(r.logBuf.String(), `"msg":"webhook: unauthorized"`)
	if lines < 1 || lines > 5 {
		t.Errorf("%d warning lines for %d unauthorized deliveries, want 1-5", lines, n)
	}
	if got := testutil.ToFloat64(r.srv.metrics.logsSuppressed); int(got) != n-lines {
		t.Errorf("tagger_webhook_log_suppressed_total = %v, want %d", got, n-lines)
	}
	if got := r.webhooks(ProviderGeneric, resultUnauthorized); got != n {
		t.Errorf("tagger_webhooks_total{generic,unauthorized} = %d, want %d", got, n)
	}
}
