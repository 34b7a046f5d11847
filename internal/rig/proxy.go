package rig

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
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
// counts the requests going through it by method and Kind, and the request
// body bytes they sent (what a client uploaded). It also records
// every request that writes a whole blob (BlobWrites) and can throttle
// upload bodies (Throttle), so a test can stop a client mid-upload.
type CountingProxy struct {
	srv      *httptest.Server
	throttle throttle

	mu       sync.Mutex
	counts   map[string]int   // "METHOD kind"
	sent     map[string]int64 // "METHOD kind" -> request body bytes
	log      []string
	writes   []BlobWrite
	inFlight int
}

// BlobWrite is a request that puts a whole blob into a repository: the
// final PUT of an upload session (".../blobs/uploads/<id>?digest=") or a
// cross-repository mount (POST ".../blobs/uploads/?mount=<digest>&from=").
type BlobWrite struct {
	Method string
	// Repository is the target repository.
	Repository string
	Digest     digest.Digest
	// Mount is true for a mount POST.
	Mount bool
	// Status is the registry's answer, also when the client went away
	// after sending the whole request (its going away does not cancel the
	// request to the registry); 502 when the proxy could not complete the
	// request, e.g. because the client's body broke off.
	Status int
}

// Committed reports whether the registry stored the blob: 201 Created.
func (w BlobWrite) Committed() bool { return w.Status == http.StatusCreated }

// NewCountingProxy starts a proxy forwarding to target (a base URL, or a
// "host:port" meaning plain http) and closes it when the test ends.
func NewCountingProxy(t T, target string) *CountingProxy {
	t.Helper()
	if !strings.Contains(target, "://") {
		target = "http://" + target
	}
	u, err := url.Parse(target)
	if err != nil {
		t.Fatalf("rig registry: counting proxy target %q: %v", target, err)
	}
	p := &CountingProxy{counts: map[string]int{}, sent: map[string]int64{}}
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
		p.mu.Lock()
		p.inFlight++
		p.mu.Unlock()
		defer func() {
			p.mu.Lock()
			p.inFlight--
			p.mu.Unlock()
		}()
		if req.Body != nil && req.Body != http.NoBody {
			body := &countedBody{rc: req.Body}
			req.Body = body
			defer func() {
				p.mu.Lock()
				p.sent[req.Method+" "+string(KindOf(req.URL.Path))] += body.n.Load()
				p.mu.Unlock()
			}()
		}
		isUpload := KindOf(req.URL.Path) == KindUpload
		if isUpload && (req.Method == http.MethodPut || req.Method == http.MethodPatch) && req.Body != nil {
			req.Body = &throttledBody{rc: req.Body, th: &p.throttle, ctx: req.Context()}
		}
		write, isWrite := blobWrite(req)
		if !isWrite {
			rp.ServeHTTP(w, req)
			return
		}
		// The registry's answer is what counts: a client that goes away
		// after sending the whole blob does not cancel the commit (a body
		// broken off still aborts the request).
		sw := &statusWriter{ResponseWriter: w}
		rp.ServeHTTP(sw, req.WithContext(context.WithoutCancel(req.Context())))
		write.Status = sw.status
		p.mu.Lock()
		p.writes = append(p.writes, write)
		p.mu.Unlock()
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

// Snapshot copies the request counts and the request body bytes sent, both
// by "METHOD kind", for comparing before and after a step.
func (p *CountingProxy) Snapshot() (requests map[string]int, sent map[string]int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.counts), maps.Clone(p.sent)
}

// Reset zeroes the counts and forgets the requests and blob writes seen.
func (p *CountingProxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts = map[string]int{}
	p.sent = map[string]int64{}
	p.log = nil
	p.writes = nil
}

// BlobWrites lists the blob-writing requests that have completed, in the
// order they completed, whatever the registry answered.
func (p *CountingProxy) BlobWrites() []BlobWrite {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]BlobWrite(nil), p.writes...)
}

// Committed counts, per digest, the blob writes the registry answered with
// 201: uploads completed plus blobs mounted.
func (p *CountingProxy) Committed() map[digest.Digest]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[digest.Digest]int{}
	for _, w := range p.writes {
		if w.Committed() {
			out[w.Digest]++
		}
	}
	return out
}

// InFlight is the number of requests the proxy is serving right now.
func (p *CountingProxy) InFlight() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inFlight
}

// Throttle limits the bodies of upload requests (PATCH and PUT under
// /blobs/uploads/), all of them together, to bytesPerSecond; 0 or less
// lifts the limit. It applies to requests in flight too.
func (p *CountingProxy) Throttle(bytesPerSecond int64) { p.throttle.set(bytesPerSecond) }

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

// blobWrite describes req if it writes a whole blob (see BlobWrite).
func blobWrite(req *http.Request) (BlobWrite, bool) {
	if KindOf(req.URL.Path) != KindUpload {
		return BlobWrite{}, false
	}
	repo, _, _ := strings.Cut(strings.TrimPrefix(req.URL.Path, "/v2/"), "/blobs/uploads")
	q := req.URL.Query()
	switch {
	case req.Method == http.MethodPut && q.Get("digest") != "":
		return BlobWrite{Method: req.Method, Repository: repo, Digest: digest.Digest(q.Get("digest"))}, true
	case req.Method == http.MethodPost && q.Get("mount") != "":
		return BlobWrite{Method: req.Method, Repository: repo, Digest: digest.Digest(q.Get("mount")), Mount: true}, true
	}
	return BlobWrite{}, false
}

// statusWriter remembers the status written through it.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController (ReverseProxy's flushes) reach the
// underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// throttle paces bytes to a rate shared by every reader using it.
type throttle struct {
	mu   sync.Mutex
	rate int64     // bytes per second; <= 0: unlimited
	next time.Time // when the bytes handed out so far are paid for
}

func (th *throttle) set(bytesPerSecond int64) {
	th.mu.Lock()
	defer th.mu.Unlock()
	th.rate = bytesPerSecond
	th.next = time.Time{}
}

// throttleChunk is the most a throttled Read returns at once, so the pace
// is smooth.
const throttleChunk = 32 << 10

func (th *throttle) limited() bool {
	th.mu.Lock()
	defer th.mu.Unlock()
	return th.rate > 0
}

// wait blocks until n more bytes fit the rate, or ctx ends.
func (th *throttle) wait(ctx context.Context, n int) error {
	th.mu.Lock()
	if th.rate <= 0 {
		th.mu.Unlock()
		return nil
	}
	now := time.Now()
	if th.next.Before(now) {
		th.next = now
	}
	at := th.next
	th.next = th.next.Add(time.Duration(int64(n) * int64(time.Second) / th.rate))
	th.mu.Unlock()
	d := time.Until(at)
	if d <= 0 {
		return nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// throttledBody is a request body read at the throttle's pace.
// countedBody counts the bytes read from a request body (atomically: the
// transport may still be writing the body when the response is back).
type countedBody struct {
	rc io.ReadCloser
	n  atomic.Int64
}

func (b *countedBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.n.Add(int64(n))
	return n, err
}

func (b *countedBody) Close() error { return b.rc.Close() }

type throttledBody struct {
	rc  io.ReadCloser
	th  *throttle
	ctx context.Context
}

func (b *throttledBody) Read(p []byte) (int, error) {
	if len(p) > throttleChunk && b.th.limited() {
		p = p[:throttleChunk]
	}
	n, err := b.rc.Read(p)
	if n > 0 {
		if werr := b.th.wait(b.ctx, n); werr != nil && err == nil {
			err = werr
		}
	}
	return n, err
}

func (b *throttledBody) Close() error { return b.rc.Close() }
