package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/tagger-project/tagger/internal/registrytest"
)

// byteProxy is a loopback reverse proxy in front of the bundled registry
// that counts the request body bytes sent through it (what a client
// uploads), per method and kind of path, and the requests.
type byteProxy struct {
	srv *httptest.Server

	mu       sync.Mutex
	bytes    map[string]int64 // "METHOD kind" -> request body bytes
	requests map[string]int   // "METHOD kind" -> requests
}

func newByteProxy(target string) (*byteProxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	p := &byteProxy{bytes: map[string]int64{}, requests: map[string]int{}}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			// Keep the client's Host so the registry's Location URLs point
			// back through the proxy.
			pr.Out.Host = pr.In.Host
		},
	}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		key := req.Method + " " + string(registrytest.KindOf(req.URL.Path))
		c := &countReader{r: req.Body}
		if req.Body != nil && req.Body != http.NoBody {
			req.Body = c
		}
		rp.ServeHTTP(w, req)
		p.mu.Lock()
		p.bytes[key] += c.n.Load()
		p.requests[key]++
		p.mu.Unlock()
	}))
	return p, nil
}

func (p *byteProxy) URL() string { return p.srv.URL }
func (p *byteProxy) close()      { p.srv.Close() }

// snapshot returns the body bytes sent so far in total and by key, and the
// requests by key.
func (p *byteProxy) snapshot() (total int64, bytes map[string]int64, requests map[string]int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	bytes, requests = map[string]int64{}, map[string]int{}
	for k, v := range p.bytes {
		bytes[k] = v
		total += v
	}
	for k, v := range p.requests {
		requests[k] = v
	}
	return total, bytes, requests
}

type countReader struct {
	r io.ReadCloser
	n atomic.Int64
}

func (c *countReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n.Add(int64(n))
	return n, err
}

func (c *countReader) Close() error { return c.r.Close() }

// diffCounts is after - before, keys with no change left out, as
// "PUT upload=3 (100.0 MiB) HEAD blob=11".
func diffCounts(b0, b1 map[string]int64, r0, r1 map[string]int) string {
	var keys []string
	for k := range r1 {
		if r1[k] != r0[k] {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var sb strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&sb, "%s=%d", k, r1[k]-r0[k])
		if d := b1[k] - b0[k]; d > 0 {
			fmt.Fprintf(&sb, " (%s)", fmtBytes(d))
		}
		sb.WriteString(", ")
	}
	return strings.TrimSuffix(sb.String(), ", ")
}
