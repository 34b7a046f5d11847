package hooks

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestCallbackAllowed(t *testing.T) {
	hosts := DefaultDockerHubCallbackHosts
	for _, c := range []struct {
		url string
		ok  bool
	}{
		{dockerHubCallbackURL, true},
		{"https://hub.docker.com/u/a/b/hook/123/", true},
		{"https://registry.hub.docker.com:443/u/a/b/hook/1/", true},
		{"https://Registry.Hub.Docker.com/x", true},
		{"https://registry.hub.docker.com:8443/x", false},
		{"http://registry.hub.docker.com/x", false},
		{"https://user:pw@registry.hub.docker.com/x", false},
		{"https://registry.hub.docker.com.evil.example.com/x", false},
		{"https://evil.example.com/registry.hub.docker.com", false},
		{"https://evil.example.com#@registry.hub.docker.com", false},
		{"https://evil.example.com\\@registry.hub.docker.com/", false},
		{"//registry.hub.docker.com/x", false},
		{"https:registry.hub.docker.com", false},
		{"https://127.0.0.1/x", false},
		{"https://169.254.169.254/latest/meta-data", false},
		{"", false},
	} {
		if _, ok := callbackAllowed(c.url, hosts); ok != c.ok {
			t.Errorf("callbackAllowed(%q) = %v, want %v", c.url, ok, c.ok)
		}
	}
	if _, ok := callbackAllowed("https://127.0.0.1:8443/x", []string{"127.0.0.1:8443"}); !ok {
		t.Error("host:port entry does not match")
	}
	if _, ok := callbackAllowed("https://127.0.0.1:9443/x", []string{"127.0.0.1:8443"}); ok {
		t.Error("host:port entry matches another port")
	}
}

// hubStub is a TLS server standing in for Docker Hub's callback endpoint.
type hubStub struct {
	srv   *httptest.Server
	mu    sync.Mutex
	hits  []string // "METHOD path body"
	reply func(w http.ResponseWriter, r *http.Request)
}

func newHubStub(t *testing.T, tls bool) *hubStub {
	h := &hubStub{}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		h.hits = append(h.hits, r.Method+" "+r.URL.Path+" "+r.Header.Get("Content-Type")+" "+string(b))
		reply := h.reply
		h.mu.Unlock()
		if reply != nil {
			reply(w, r)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	if tls {
		h.srv = httptest.NewTLSServer(handler)
	} else {
		h.srv = httptest.NewServer(handler)
	}
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hubStub) host() string {
	return strings.TrimPrefix(strings.TrimPrefix(h.srv.URL, "https://"), "http://")
}

func (h *hubStub) hitList() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.hits...)
}

func TestDockerHubCallback(t *testing.T) {
	hub := newHubStub(t, true)
	other := newHubStub(t, true)
	plain := newHubStub(t, false)
	r := newRig(t, rigOptions{tags: defaultTags(), opts: Options{
		DockerHubCallback:      true,
		DockerHubCallbackHosts: []string{hub.host(), plain.host()},
		HTTPClient:             hub.srv.Client(), // trusts the test CA (both TLS stubs share it)
	}})
	deliver := func(callback string) response {
		t.Helper()
		return r.do(request{path: "/hooks/dockerhub/" + testSecrets.DockerHub, body: dockerHubSample("library/nginx", "1.27", callback)})
	}

	// Allowed: one POST with the documented body, after the 202.
	if resp := deliver(hub.srv.URL + "/u/svendowideit/testhook/hook/2141b5bi5i5b02bec211i4eeih0242eg11000a/"); resp.status != http.StatusAccepted {
		t.Fatalf("%d %s", resp.status, resp.raw)
	}
	r.srv.waitCallbacks()
	hits := hub.hitList()
	if len(hits) != 1 {
		t.Fatalf("hub hits %q, want 1", hits)
	}
	method, rest, _ := strings.Cut(hits[0], " ")
	path, rest, _ := strings.Cut(rest, " ")
	ctype, body, _ := strings.Cut(rest, " ")
	var got map[string]string
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("callback body %q: %v", body, err)
	}
	if method != http.MethodPost || path != "/u/svendowideit/testhook/hook/2141b5bi5i5b02bec211i4eeih0242eg11000a/" || ctype != "application/json" ||
		got["state"] != "success" || got["description"] != "tagger check requested" || got["context"] != "tagger" || len(got) != 3 {
		t.Fatalf("callback %q", hits[0])
	}

	// Refused: another host, plain http, and a redirect elsewhere.
	for _, u := range []string{other.srv.URL + "/x", plain.srv.URL + "/x", "http://" + hub.host() + "/x"} {
		deliver(u)
	}
	hub.mu.Lock()
	hub.reply = func(w http.ResponseWriter, req *http.Request) {
		http.Redirect(w, req, other.srv.URL+"/stolen", http.StatusFound)
	}
	hub.mu.Unlock()
	deliver(hub.srv.URL + "/redirect")
	r.srv.waitCallbacks()
	if h := other.hitList(); len(h) != 0 {
		t.Fatalf("a host off the allowlist was contacted: %q", h)
	}
	if h := plain.hitList(); len(h) != 0 {
		t.Fatalf("a plain-http callback was sent: %q", h)
	}
	if n := testutil.ToFloat64(r.srv.metrics.callbacks.WithLabelValues(callbackRefused)); n != 3 {
		t.Errorf("refused callbacks %v, want 3", n)
	}
	if n := testutil.ToFloat64(r.srv.metrics.callbacks.WithLabelValues(callbackFailed)); n != 1 {
		t.Errorf("failed callbacks %v, want 1 (the redirect)", n)
	}

	// No callback for a refused delivery.
	before := len(hub.hitList())
	r.do(request{path: "/hooks/dockerhub/" + testSecrets.DockerHub, body: dockerHubSample("nobody/here", "1", hub.srv.URL+"/x")})
	r.do(request{path: "/hooks/dockerhub/wrong", body: dockerHubSample("library/nginx", "1.27", hub.srv.URL+"/x")})
	r.srv.waitCallbacks()
	if n := len(hub.hitList()); n != before {
		t.Fatalf("callback sent for a refused delivery")
	}
}

func TestDockerHubCallbackOff(t *testing.T) {
	hub := newHubStub(t, true)
	r := newRig(t, rigOptions{tags: defaultTags(), opts: Options{
		DockerHubCallbackHosts: []string{hub.host()}, HTTPClient: hub.srv.Client(),
	}})
	resp := r.do(request{path: "/hooks/dockerhub/" + testSecrets.DockerHub, body: dockerHubSample("library/nginx", "1.27", hub.srv.URL+"/x")})
	if resp.status != http.StatusAccepted {
		t.Fatalf("%d %s", resp.status, resp.raw)
	}
	r.srv.waitCallbacks()
	time.Sleep(20 * time.Millisecond)
	if h := hub.hitList(); len(h) != 0 {
		t.Fatalf("callback sent while DockerHubCallback is off: %q", h)
	}
}
