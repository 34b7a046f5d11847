package mirror

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// benchWriter is a reusable ResponseWriter, so the benchmarks measure the
// handler and not httptest.ResponseRecorder.
type benchWriter struct {
	h      http.Header
	status int
	n      int64
}

func (w *benchWriter) Header() http.Header         { return w.h }
func (w *benchWriter) WriteHeader(code int)        { w.status = code }
func (w *benchWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }

func (w *benchWriter) reset() {
	clear(w.h)
	w.status, w.n = 0, 0
}

// benchTable pins 10,000 tags: docker.io/library/app<i>:v<i>.
func benchTable(b *testing.B) []testPin {
	ps := make([]testPin, 10000)
	for i := range ps {
		ps[i] = testPin{
			image:     fmt.Sprintf("app%d:v%d", i, i),
			mediaType: ocispec.MediaTypeImageIndex,
			body:      fmt.Appendf(nil, `{"schemaVersion":2,"n":%d,"pad":"%0400d"}`, i, 0),
		}
	}
	return ps
}

// BenchmarkHeadPinned is containerd's resolve of a pinned tag: the hot path.
func BenchmarkHeadPinned(b *testing.B) {
	ps := benchTable(b)
	h, err := New(Options{Table: newTable(b, ps...), RegistryURL: "http://127.0.0.1:1"})
	if err != nil {
		b.Fatal(err)
	}
	r := httptest.NewRequest("HEAD", "/v2/library/app4242/manifests/v4242?ns=docker.io", nil)
	w := &benchWriter{h: http.Header{}}
	want := ps[4242].digest().String()
	b.ReportAllocs()
	for b.Loop() {
		w.reset()
		h.ServeHTTP(w, r)
	}
	if w.status != 200 || w.h.Get("Docker-Content-Digest") != want {
		b.Fatalf("status %d, headers %v", w.status, w.h)
	}
}

// BenchmarkHeadUnpinned is the resolve of an image nobody pinned.
func BenchmarkHeadUnpinned(b *testing.B) {
	h, err := New(Options{Table: newTable(b, benchTable(b)...)})
	if err != nil {
		b.Fatal(err)
	}
	r := httptest.NewRequest("HEAD", "/v2/library/other/manifests/1?ns=docker.io", nil)
	w := &benchWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		w.reset()
		h.ServeHTTP(w, r)
	}
	if w.status != 404 {
		b.Fatalf("status %d", w.status)
	}
}

// BenchmarkGetBlob streams a 1 MiB blob from a (loopback, fake) bundled
// registry through the handler.
func BenchmarkGetBlob(b *testing.B) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	d := digestOf(big)
	reg := &fakeRegistry{}
	reg.put("/v2/docker.io/library/nginx/blobs/"+d, content{body: big, mediaType: "application/octet-stream"})
	// No request log: the fake registry's record would grow without bound.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reg.ServeHTTP(w, r)
		reg.mu.Lock()
		reg.requests = reg.requests[:0]
		reg.mu.Unlock()
	}))
	defer srv.Close()
	h, err := New(Options{Table: newTable(b, nginxPin), RegistryURL: srv.URL})
	if err != nil {
		b.Fatal(err)
	}
	r := httptest.NewRequest("GET", "/v2/library/nginx/blobs/"+d+"?ns=docker.io", nil)
	w := &benchWriter{h: http.Header{}}
	b.SetBytes(int64(len(big)))
	b.ReportAllocs()
	for b.Loop() {
		w.reset()
		h.ServeHTTP(w, r)
	}
	if w.status != 200 || w.n != int64(len(big)) {
		b.Fatalf("status %d, %d bytes", w.status, w.n)
	}
}

// benchCached serves one manifest request against a warm manifest cache
// (a 10,000-pin table; the registry behind it is never reached again).
func benchCached(b *testing.B, method, target string, p testPin, ps []testPin) {
	reg := &fakeRegistry{}
	ref := "/v2/docker.io/library/app4242/manifests/" + p.digest().String()
	reg.put(ref, content{body: p.body, mediaType: p.mediaType})
	srv := httptest.NewServer(reg)
	defer srv.Close()
	h, err := New(Options{Table: newTable(b, ps...), RegistryURL: srv.URL})
	if err != nil {
		b.Fatal(err)
	}
	r := httptest.NewRequest(method, target, nil)
	r.Header.Set("Accept", "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, "+
		"application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*")
	w := &benchWriter{h: http.Header{}}
	h.ServeHTTP(w, r) // fills the cache
	if w.status != 200 || len(reg.seen()) != 1 {
		b.Fatalf("warm-up: status %d, registry asked %d times", w.status, len(reg.seen()))
	}
	b.ReportAllocs()
	for b.Loop() {
		w.reset()
		h.ServeHTTP(w, r)
	}
	if w.status != 200 || w.h.Get("Docker-Content-Digest") != p.digest().String() || len(reg.seen()) != 1 {
		b.Fatalf("status %d, headers %v, registry asked %d times", w.status, w.h, len(reg.seen()))
	}
}

// BenchmarkGetPinnedCached is a pinned tag's GET answered from the cache.
func BenchmarkGetPinnedCached(b *testing.B) {
	ps := benchTable(b)
	benchCached(b, "GET", "/v2/library/app4242/manifests/v4242?ns=docker.io", ps[4242], ps)
}

// BenchmarkGetDigestCached is containerd's manifest fetch by digest
// answered from the cache.
func BenchmarkGetDigestCached(b *testing.B) {
	ps := benchTable(b)
	benchCached(b, "GET", "/v2/library/app4242/manifests/"+ps[4242].digest().String()+"?ns=docker.io", ps[4242], ps)
}
