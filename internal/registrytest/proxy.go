package registrytest

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sort"
	"strings"
	"sync"
)

// Kind classifies registry API paths for counting.
type Kind string

const (
	KindPing     Kind = "ping"     // /v2/
	KindManifest Kind = "manifest" // /v2/<repo>/manifests/<ref>
	KindBlob     Kind = "blob"     // /v2/<repo>/blobs/<digest>
	KindUpload   Kind = "upload"   // /v2/<repo>/blobs/uploads/...
	KindOther    Kind = "other"
)

// CountingProxy is a loopback reverse proxy in front of a registry that
// counts the requests going through it by method and Kind.
type CountingProxy struct {
	srv *httptest.Server

	mu     sync.Mutex
	counts map[string]int // "METHOD kind"
	log    []string
}

// NewCountingProxy starts a proxy forwarding to target (a base URL, or a
// "host:port" meaning plain http) and closes it when the test ends.
func NewCountingProxy(t T, target string) *CountingProxy {
	t.Helper()
	if !strings.Contains(target, "://") {
		target = "http://" + target
	}
	u, err := url.Parse(target)
	if err != nil {
		t.Fatalf("registrytest: counting proxy target %q: %v", target, err)
	}
	p := &CountingProxy{counts: map[string]int{}}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			// Keep the client's Host so registry-built Location URLs point
			// back through the proxy.
			pr.Out.Host = pr.In.Host
		},
	}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		p.record(req.Method, req.URL.Path)
		rp.ServeHTTP(w, req)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// Host is the proxy's "127.0.0.1:port".
func (p *CountingProxy) Host() string { return strings.TrimPrefix(p.srv.URL, "http://") }

// URL is the proxy's base URL.
func (p *CountingProxy) URL() string { return p.srv.URL }

// Count is the number of requests seen with method and kind.
func (p *CountingProxy) Count(method string, kind Kind) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts[method+" "+string(kind)]
}

// Total is the number of requests seen.
func (p *CountingProxy) Total() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.log)
}

// Requests lists "METHOD path" of every request seen, in order; handy in
// failure messages.
func (p *CountingProxy) Requests() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.log...)
}

// String lists the counts sorted, as in "GET blob=2 HEAD manifest=1".
func (p *CountingProxy) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	keys := make([]string, 0, len(p.counts))
	for k := range p.counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%d ", k, p.counts[k])
	}
	return strings.TrimSpace(b.String())
}

// Reset zeroes the counts.
func (p *CountingProxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts = map[string]int{}
	p.log = nil
}

func (p *CountingProxy) record(method, path string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts[method+" "+string(KindOf(path))]++
	p.log = append(p.log, method+" "+path)
}

// KindOf classifies a registry API path.
func KindOf(path string) Kind {
	if path == "/v2/" || path == "/v2" {
		return KindPing
	}
	if !strings.HasPrefix(path, "/v2/") {
		return KindOther
	}
	// The repository name may itself contain "manifests" or "blobs"
	// segments, so look for the last marker.
	segs := strings.Split(strings.TrimPrefix(path, "/v2/"), "/")
	for i := len(segs) - 2; i >= 1; i-- {
		switch segs[i] {
		case "manifests":
			if i == len(segs)-2 {
				return KindManifest
			}
		case "blobs":
			if i == len(segs)-2 {
				return KindBlob
			}
		case "uploads":
			if segs[i-1] == "blobs" {
				return KindUpload
			}
		}
	}
	return KindOther
}
