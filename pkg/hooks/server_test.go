package hooks

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
)

// TestAccepted: each provider's documented payload requests a check of
// exactly the matching Tag.
func TestAccepted(t *testing.T) {
	for provider, req := range goodRequests() {
		t.Run(provider, func(t *testing.T) {
			r := newRig(t, rigOptions{tags: defaultTags()})
			before := r.versions()
			resp := r.do(req)
			if resp.status != http.StatusAccepted || resp.body["checks"] != float64(1) {
				t.Fatalf("answer %d %s, want 202 {\"checks\":1}", resp.status, resp.raw)
			}
			cr := r.waitCheck(5 * time.Second)
			want := tagFor[provider]
			if cr.Tag != want || cr.Provider != provider || !strings.HasPrefix(cr.Value, "webhook:"+provider+":") {
				t.Fatalf("check request %+v, want Tag %s by %s", cr, want, provider)
			}
			tag := r.tag(want)
			if got := tag.Annotations[v1alpha1.CheckAnnotation]; got != cr.Value {
				t.Fatalf("annotation %q, want %q", got, cr.Value)
			}
			after := r.versions()
			for name, rv := range before {
				if name != want && after[name] != rv {
					t.Errorf("Tag %s changed too (resourceVersion %s -> %s)", name, rv, after[name])
				}
			}
			if n := r.webhooks(provider, resultAccepted); n != 1 {
				t.Errorf("tagger_webhooks_total{%s,accepted} = %d, want 1", provider, n)
			}
			if n := testutil.ToFloat64(r.srv.metrics.checks.WithLabelValues(provider, patchRequested)); n != 1 {
				t.Errorf("tagger_webhook_check_requests_total{%s,requested} = %v, want 1", provider, n)
			}
		})
	}
}

// TestRefused: every kind of bad delivery gets its 4xx, a JSON error, its
// metric, and changes nothing.
func TestRefused(t *testing.T) {
	good := goodRequests()
	gh := good[ProviderGitHub]
	withHeader := func(req request, k, v string) request {
		h := map[string]string{}
		for hk, hv := range req.header {
			h[hk] = hv
		}
		if v == "" {
			delete(h, k)
		} else {
			h[k] = v
		}
		req.header = h
		return req
	}
	withBody := func(req request, body string) request { req.body = body; return req }
	withType := func(req request, ct string) request { req.contentType = ct; return req }
	withMethod := func(req request, m string) request { req.method = m; return req }
	big := `{"image":"registry.example.com/ci/tool:main"}` + strings.Repeat(" ", MaxBodyBytes)

	cases := []struct {
		name     string
		req      request
		status   int
		provider string
		result   result
	}{
		{"unknown provider", request{path: "/hooks/gitlab/x", body: `{}`}, 404, providerUnknown, resultNotFound},
		{"no provider", request{path: "/hooks/", body: `{}`}, 404, providerUnknown, resultNotFound},
		{"outside /hooks", request{path: "/generic/" + testSecrets.Generic, body: `{}`}, 404, providerUnknown, resultNotFound},
		{"GET", request{method: http.MethodGet, path: good[ProviderGeneric].path, contentType: "-"}, 405, ProviderGeneric, resultMethodNotAllowed},
		{"PUT", withMethod(good[ProviderGeneric], http.MethodPut), 405, ProviderGeneric, resultMethodNotAllowed},
		{"GET with a wrong token", request{method: http.MethodGet, path: "/hooks/generic/x", contentType: "-"}, 405, ProviderGeneric, resultMethodNotAllowed},
		{"wrong token", request{path: "/hooks/dockerhub/wrong", body: good[ProviderDockerHub].body}, 401, ProviderDockerHub, resultUnauthorized},
		{"another provider's token", request{path: "/hooks/quay/" + testSecrets.DockerHub, body: good[ProviderQuay].body}, 401, ProviderQuay, resultUnauthorized},
		{"token prefix", request{path: "/hooks/generic/" + testSecrets.Generic[:5], body: good[ProviderGeneric].body}, 401, ProviderGeneric, resultUnauthorized},
		{"token with suffix", request{path: "/hooks/generic/" + testSecrets.Generic + "x", body: good[ProviderGeneric].body}, 401, ProviderGeneric, resultUnauthorized},
		{"no token", request{path: "/hooks/generic", body: good[ProviderGeneric].body}, 401, ProviderGeneric, resultUnauthorized},
		{"empty token", request{path: "/hooks/generic/", body: good[ProviderGeneric].body}, 401, ProviderGeneric, resultUnauthorized},
		{"github without signature", withHeader(gh, "X-Hub-Signature-256", ""), 401, ProviderGitHub, resultUnauthorized},
		{"github signed with another secret", withHeader(gh, "X-Hub-Signature-256", Signature([]byte(gh.body), "other")), 401, ProviderGitHub, resultUnauthorized},
		{"github body changed after signing", withBody(gh, strings.Replace(gh.body, `"v1"`, `"v2"`, 1)), 401, ProviderGitHub, resultUnauthorized},
		{"github sha1 signature", withHeader(gh, "X-Hub-Signature-256", "sha1=0123"), 401, ProviderGitHub, resultUnauthorized},
		{"github token in path", request{path: "/hooks/github/x", body: gh.body, header: gh.header}, 404, ProviderGitHub, resultNotFound},
		{"harbor wrong Authorization", withHeader(good[ProviderHarbor], "Authorization", "Bearer nope"), 401, ProviderHarbor, resultUnauthorized},
		{"harbor no Authorization", withHeader(good[ProviderHarbor], "Authorization", ""), 401, ProviderHarbor, resultUnauthorized},
		{"harbor Authorization prefix", withHeader(good[ProviderHarbor], "Authorization", "Bearer"), 401, ProviderHarbor, resultUnauthorized},
		{"no Content-Type", withType(good[ProviderGeneric], "-"), 415, ProviderGeneric, resultUnsupportedMedia},
		{"form Content-Type", withType(good[ProviderGeneric], "application/x-www-form-urlencoded"), 415, ProviderGeneric, resultUnsupportedMedia},
		{"too large, announced", withBody(good[ProviderGeneric], big), 413, ProviderGeneric, resultTooLarge},
		{"too large, chunked", request{path: good[ProviderGeneric].path, body: big, chunked: true}, 413, ProviderGeneric, resultTooLarge},
		{"empty body", withBody(good[ProviderGeneric], ""), 400, ProviderGeneric, resultBadRequest},
		{"malformed JSON", withBody(good[ProviderDockerHub], `{"push_data":`), 400, ProviderDockerHub, resultBadRequest},
		{"missing fields", withBody(good[ProviderQuay], `{"docker_url":"quay.io/team/api"}`), 400, ProviderQuay, resultBadRequest},
		{"harbor missing resources", withBody(good[ProviderHarbor], `{"type":"PUSH_ARTIFACT","event_data":{}}`), 400, ProviderHarbor, resultBadRequest},
		{"github unsupported event", withHeader(gh, "X-GitHub-Event", "push"), 400, ProviderGitHub, resultBadRequest},
		{"no matching Tag", withBody(good[ProviderGeneric], genericSample("registry.example.com/ci/tool:other")), 404, ProviderGeneric, resultNotFound},
		{"no matching repository", withBody(good[ProviderDockerHub], dockerHubSample("someone/else", "1.27", "")), 404, ProviderDockerHub, resultNotFound},
	}
	r := newRig(t, rigOptions{tags: defaultTags()})
	before := r.versions()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			was := r.webhooks(c.provider, c.result)
			resp := r.do(c.req)
			if resp.status != c.status {
				t.Fatalf("status %d %s, want %d", resp.status, resp.raw, c.status)
			}
			if msg, _ := resp.body["error"].(string); msg == "" || len(resp.body) != 1 {
				t.Fatalf("answer %s, want {\"error\": \"...\"}", resp.raw)
			}
			if c.status == http.StatusMethodNotAllowed && resp.header.Get("Allow") != http.MethodPost {
				t.Errorf("405 without Allow: POST")
			}
			if got := r.webhooks(c.provider, c.result); got != was+1 {
				t.Errorf("tagger_webhooks_total{%s,%s} went %d -> %d, want +1", c.provider, c.result, was, got)
			}
		})
	}
	// Give any wrongly queued check time to be flushed, then prove none was.
	time.Sleep(10 * r.srv.queue.window)
	if n := r.checkCount(); n != 0 {
		t.Fatalf("%d checks requested by refused deliveries: %+v", n, r.checks)
	}
	if after := r.versions(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("Tags changed: resourceVersions %v -> %v", before, after)
	}
	if n := r.srv.queue.len(); n != 0 {
		t.Fatalf("%d checks pending", n)
	}
}

// TestDisabledProvider: a provider without a secret is indistinguishable
// from an unknown one.
func TestDisabledProvider(t *testing.T) {
	r := newRig(t, rigOptions{tags: defaultTags(), opts: Options{Secrets: Secrets{Generic: testSecrets.Generic}}})
	for provider, req := range goodRequests() {
		resp := r.do(req)
		want := http.StatusNotFound
		if provider == ProviderGeneric {
			want = http.StatusAccepted
		}
		if resp.status != want {
			t.Errorf("%s: status %d %s, want %d", provider, resp.status, resp.raw, want)
		}
	}
	// Disabled and unknown answer the very same bytes.
	a := r.do(request{path: "/hooks/dockerhub/" + testSecrets.DockerHub, body: `{}`})
	b := r.do(request{path: "/hooks/nosuch/" + testSecrets.DockerHub, body: `{}`})
	if a.status != b.status || a.raw != b.raw {
		t.Errorf("disabled %d %q vs unknown %d %q", a.status, a.raw, b.status, b.raw)
	}
}

// TestIgnored: authenticated, well-formed deliveries that name nothing to
// check answer 200 and change nothing.
func TestIgnored(t *testing.T) {
	r := newRig(t, rigOptions{tags: defaultTags()})
	before := r.versions()
	sign := func(event, body string) request {
		return request{path: "/hooks/github", body: body, header: map[string]string{
			"X-GitHub-Event": event, "X-Hub-Signature-256": Signature([]byte(body), testSecrets.GitHub)}}
	}
	harbor := func(body string) request {
		return request{path: "/hooks/harbor", body: body, header: map[string]string{"Authorization": testSecrets.Harbor}}
	}
	for name, req := range map[string]request{
		"github ping":        sign("ping", githubPingSample),
		"github untagged":    sign("package", githubSample("package", "published", "octo-org", "app", "")),
		"github updated":     sign("package", githubSample("package", "updated", "octo-org", "app", "v1")),
		"github npm":         sign("package", githubNPMSample),
		"harbor delete":      harbor(harborSample("DELETE_ARTIFACT", "["+harborResourceJSON(harborDigest, "1.0", "harbor.example.com/proj/svc:1.0")+"]", "proj/svc")),
		"harbor digest push": harbor(harborSample("PUSH_ARTIFACT", "["+harborResourceJSON(harborDigest, harborDigest, "harbor.example.com/proj/svc@"+harborDigest)+"]", "proj/svc")),
	} {
		resp := r.do(req)
		if resp.status != http.StatusOK || resp.body["checks"] != float64(0) || resp.body["ignored"] == "" {
			t.Errorf("%s: %d %s, want 200 {\"checks\":0,\"ignored\":...}", name, resp.status, resp.raw)
		}
	}
	time.Sleep(10 * r.srv.queue.window)
	if n := r.checkCount(); n != 0 {
		t.Fatalf("%d checks requested", n)
	}
	if after := r.versions(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("Tags changed: %v -> %v", before, after)
	}
}

// TestBodyLimit: exactly MaxBodyBytes is read, one more byte is 413.
func TestBodyLimit(t *testing.T) {
	r := newRig(t, rigOptions{tags: defaultTags()})
	good := goodRequests()[ProviderGeneric]
	pad := func(n int) string { return good.body + strings.Repeat(" ", n-len(good.body)) }
	for _, c := range []struct {
		name    string
		size    int
		chunked bool
		want    int
	}{
		{"at the limit", MaxBodyBytes, false, http.StatusAccepted},
		{"at the limit, chunked", MaxBodyBytes, true, http.StatusAccepted},
		{"one byte over", MaxBodyBytes + 1, false, http.StatusRequestEntityTooLarge},
		{"one byte over, chunked", MaxBodyBytes + 1, true, http.StatusRequestEntityTooLarge},
	} {
		req := good
		req.body, req.chunked = pad(c.size), c.chunked
		if resp := r.do(req); resp.status != c.want {
			t.Errorf("%s: status %d %s, want %d", c.name, resp.status, resp.raw, c.want)
		}
	}
}

func TestContentType(t *testing.T) {
	for _, c := range []struct {
		ct string
		ok bool
	}{
		{"application/json", true},
		{"application/json; charset=utf-8", true},
		{"application/json;charset=UTF-8", true},
		{"Application/JSON", true},
		{"text/plain", false},
		{"application/x-www-form-urlencoded", false},
		{"application/json; charset=iso-8859-1", false},
		{"application/jsonp", false},
		{"application/json; charset", false},
		{"application/vnd.docker+json", false},
		{"", false},
	} {
		if got := jsonContentType(c.ct); got != c.ok {
			t.Errorf("jsonContentType(%q) = %v, want %v", c.ct, got, c.ok)
		}
	}
}

// TestSecretsNeverLeak: neither logs nor metrics carry a secret or a request
// path, whatever the delivery.
func TestSecretsNeverLeak(t *testing.T) {
	r := newRig(t, rigOptions{tags: defaultTags(), opts: Options{DockerHubCallback: true}})
	for _, req := range goodRequests() {
		r.do(req)
		bad := req
		bad.path = strings.Replace(req.path, "/hooks/", "/hooks/x", 1)
		r.do(bad)
	}
	// A wrong provider's secret in the path, and a secret-looking path.
	r.do(request{path: "/hooks/quay/" + testSecrets.Generic, body: `{}`})
	r.do(request{path: "/hooks/" + testSecrets.DockerHub, body: `{}`})
	// A callback_url that is refused must not be logged either.
	r.do(request{path: "/hooks/dockerhub/" + testSecrets.DockerHub, body: dockerHubSample("library/nginx", "1.27", "https://evil.example.com/"+testSecrets.Quay)})
	r.waitCheck(5 * time.Second)
	r.srv.waitCallbacks()

	logs := r.logBuf.String()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	metrics := fmt.Sprint(mfs)
	for _, s := range allSecrets(testSecrets) {
		if strings.Contains(logs, s) {
			t.Errorf("secret %q in logs:\n%s", s, logs)
		}
		if strings.Contains(metrics, s) {
			t.Errorf("secret %q in metrics", s)
		}
	}
	if strings.Contains(logs, "/hooks/") {
		t.Errorf("request path in logs:\n%s", logs)
	}
	if !strings.Contains(logs, `"provider":"quay"`) || !strings.Contains(logs, "quay.io/team/api:v2") {
		t.Errorf("logs lack provider and image:\n%s", logs)
	}
}

// TestMatchesEveryTag: every Tag pinning the image is checked (a Tag in
// conflict too), and a deleted-meanwhile Tag is simply skipped.
func TestMatchesEveryTag(t *testing.T) {
	tags := []*v1alpha1.Tag{newTag("a", "nginx:1.27"), newTag("b", "docker.io/library/nginx:1.27"), newTag("c", "index.docker.io/nginx:1.27"), newTag("other", "nginx:1.26")}
	r := newRig(t, rigOptions{tags: tags})
	resp := r.do(goodRequests()[ProviderDockerHub])
	if resp.status != http.StatusAccepted || resp.body["checks"] != float64(3) {
		t.Fatalf("answer %d %s, want 202 {\"checks\":3}", resp.status, resp.raw)
	}
	got := map[string]bool{}
	for range 3 {
		got[r.waitCheck(5*time.Second).Tag] = true
	}
	if !got["a"] || !got["b"] || !got["c"] {
		t.Fatalf("checked %v, want a, b and c", got)
	}
	if _, ok := r.tag("other").Annotations[v1alpha1.CheckAnnotation]; ok {
		t.Fatal("Tag other was checked")
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Error("New without Client succeeded")
	}
	r := newRig(t, rigOptions{})
	if _, err := New(Options{Client: r.c, Coalesce: -time.Second}); err == nil {
		t.Error("New with a negative Coalesce succeeded")
	}
	if _, err := New(Options{Client: r.c, Metrics: r.reg}); err == nil {
		t.Error("a second Server on the same metrics registry succeeded")
	}
}
