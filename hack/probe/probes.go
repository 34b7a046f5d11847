package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tagger-project/tagger/pkg/hooks"
)

// rawDo sends raw on a new connection and reads one response; status 0
// means the server closed without answering (what Go does for some garbage).
func rawDo(addr, raw string) (int, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		return 0, nil // the server may close before reading everything
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, nil
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

func request(method, target, host string, hdr ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", method, target, host)
	for i := 0; i+1 < len(hdr); i += 2 {
		fmt.Fprintf(&b, "%s: %s\r\n", hdr[i], hdr[i+1])
	}
	b.WriteString("\r\n")
	return b.String()
}

// malformed are requests Go's server rejects (or closes on) before any
// handler runs.
func malformed(host string) []string {
	return []string{
		"GET /v2/%zz/manifests/x HTTP/1.1\r\nHost: " + host + "\r\n\r\n",
		"GARBAGE\r\n\r\n",
		"GET / HTTP/1.1\r\n\r\n",
		"GET / HTTP/9.9\r\nHost: " + host + "\r\n\r\n",
		"GET /v2/ HTTP/1.1\r\nHost: " + host + "\r\nX: " + strings.Repeat("a", 100<<10) + "\r\n\r\n",
		"POST /v2/ HTTP/1.1\r\nHost: " + host + "\r\nTransfer-Encoding: gzip\r\n\r\n",
		"POST /v2/ HTTP/1.1\r\nHost: " + host + "\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"GET /v2/ HTTP/1.1\r\nHost: " + host + "\r\nContent-Length: -1\r\n\r\n",
		"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
		"GET /v2/\x00 HTTP/1.1\r\nHost: " + host + "\r\n\r\n",
	}
}

func probeMirror(ctx context.Context, e *env, rep *report) {
	d := e.image.Digest.String()
	layer := e.image.Layers[0]
	paths := []string{
		"/v2/", "/v2", "/", "/v2/_catalog", "/v2/" + e.repo + "/tags/list", "/v2/" + e.repo + "/manifests/v1",
		"/v2/" + e.repo + "/manifests/" + d, "/v2/" + e.repo + "/blobs/" + layer.Digest.String(), "/v2/" + e.repo + "/blobs/uploads/",
		"/v2/../../etc/passwd/manifests/x", "/v2/probe/%2e%2e/manifests/v1", "/v2/" + e.repo + "/manifests/..%2f..%2fx",
		"/v2/" + strings.Repeat("a/", 2000) + "manifests/v1", "/v2/" + e.repo + "/manifests/" + strings.Repeat("v", 200),
		"/v2/" + e.repo + "/blobs/sha256:zz", "/v2/" + e.repo + "/blobs/sha256:" + strings.Repeat("0", 64), "/v2/PROBE/APP/manifests/v1",
		"/v2/" + e.repo + "/manifests/v1%00", "/v2/" + e.repo + "/manifests/" + strings.Replace(d, ":", "%3A", 1),
		"//v2//probe//app//manifests//v1", "/v2/" + e.repo + "/manifests/v1/../v2", "/hooks/generic/x", "*",
	}
	queries := []string{"?ns=" + e.ns, "", "?ns=", "?ns=%zz", "?ns=" + e.ns + "&ns=docker.io", "?ns=localhost%3A1"}
	methods := []string{"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND", "get"}
	var jobs []string
	for _, p := range paths {
		for _, q := range queries {
			if p == "*" && q != "" {
				continue
			}
			for _, m := range methods {
				jobs = append(jobs, request(m, p+q, e.mirror))
			}
		}
	}
	size := strconv.FormatInt(layer.Size, 10)
	blob := "/v2/" + e.repo + "/blobs/" + layer.Digest.String() + "?ns=" + e.ns
	for _, rg := range []string{"bytes=0-", "bytes=" + size + "-", "bytes=" + size + "00-", "bytes=-0", "bytes=-1", "bytes=5-1",
		"bytes=0-0,5-6", "bytes=99999999999999999999-", "items=0-1", "bytes=abc", "bytes=-", "bytes=0-" + size} {
		for _, m := range []string{"GET", "HEAD"} {
			jobs = append(jobs, request(m, blob, e.mirror, "Range", rg))
			jobs = append(jobs, request(m, "/v2/"+e.repo+"/manifests/"+d+"?ns="+e.ns, e.mirror, "Range", rg))
		}
	}
	for _, accept := range []string{"", "*/*", "text/html", "application/vnd.docker.distribution.manifest.v2+json", "a/b;q=0", strings.Repeat("x,", 4000)} {
		for _, p := range []string{"/v2/" + e.repo + "/manifests/v1", "/v2/" + e.repo + "/manifests/" + d} {
			jobs = append(jobs, request("GET", p+"?ns="+e.ns, e.mirror, "Accept", accept))
		}
	}
	// Bodies on a read-only API.
	jobs = append(jobs,
		"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 1048576\r\n\r\n"+strings.Repeat("b", 1<<20),
		"PUT /v2/"+e.repo+"/manifests/v1?ns="+e.ns+" HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n100000\r\n"+strings.Repeat("c", 1<<20)+"\r\n0\r\n\r\n",
	)
	rep.runRaw("mirror", e.mirror, jobs)
	rep.runRaw("mirror, malformed", e.mirror, malformed(e.mirror))
	for _, addr := range []struct{ name, addr string }{{"metrics/health, hostile", e.metrics}, {"metrics/health, hostile", e.health}} {
		var js []string
		for _, p := range []string{"/metrics", "/healthz", "/readyz", "/../../etc/passwd", "/debug/pprof/", "/%zz"} {
			for _, m := range []string{"GET", "POST", "DELETE", "OPTIONS"} {
				js = append(js, request(m, p, addr.addr))
			}
		}
		rep.runRaw(addr.name, addr.addr, append(js, malformed(addr.addr)...))
	}
	// A burst: 64 clients, 3,000 requests, containerd's mix (HEAD by tag,
	// GET by digest, blob ranges).
	targets := []struct{ method, url string }{
		{"HEAD", "http://" + e.mirror + "/v2/" + e.repo + "/manifests/v1?ns=" + e.ns},
		{"GET", "http://" + e.mirror + "/v2/" + e.repo + "/manifests/" + d + "?ns=" + e.ns},
		{"GET", "http://" + e.mirror + blob},
		{"GET", "http://" + e.mirror + "/v2/unpinned/x/manifests/latest?ns=" + e.ns},
	}
	rep.burst(ctx, "mirror, burst", 64, 3000, func(i int) (*http.Request, error) {
		t := targets[i%len(targets)]
		return http.NewRequestWithContext(ctx, t.method, t.url, nil)
	})
}

func probeWebhooks(ctx context.Context, e *env, rep *report) {
	gen := "/hooks/generic/" + genericToken
	img := e.upstream.Host() + "/probe/app:v1"
	bodies := []string{`{}`, `{`, `[]`, `null`, `{"image":""}`, `{"image":"` + img + `"}`, `{"image":"` + strings.Repeat("A", 1<<20-20) + `"}`,
		`{"image":"nginx@sha256:` + strings.Repeat("0", 64) + `"}`, strings.Repeat("[", 100000), `{"image":"\u0000\ud800"}`,
		`{"image":"` + img + `"}` + strings.Repeat(" ", 1<<20)}
	var jobs []string
	for _, path := range []string{gen, "/hooks/generic/wrong", "/hooks/generic/", "/hooks/github", "/hooks/github/x", "/hooks/quay/x", "/hooks/x", "/", "/hooks/../hooks/generic/" + genericToken} {
		for _, b := range bodies {
			for _, ct := range []string{"application/json", "text/plain"} {
				jobs = append(jobs, fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s", path, ct, len(b), b))
			}
		}
		for _, m := range []string{"GET", "PUT", "OPTIONS", "DELETE"} {
			jobs = append(jobs, request(m, path, e.webhooks))
		}
	}
	// GitHub: bad signatures, replays of a signed delivery.
	gh := `{"action":"published","package":{"name":"app","package_type":"container","owner":{"login":"probe"},"package_version":{"container_metadata":{"tag":{"name":"v1"}}}}}`
	for _, sig := range []string{"", "sha256=00", "sha1=00", hooks.Signature([]byte(gh), "guess"), hooks.Signature([]byte(gh), githubSecret)} {
		for range 3 {
			jobs = append(jobs, fmt.Sprintf("POST /hooks/github HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nX-GitHub-Event: package\r\nX-GitHub-Delivery: d-1\r\nX-Hub-Signature-256: %s\r\nContent-Length: %d\r\n\r\n%s", sig, len(gh), gh))
		}
	}
	rep.runRaw("webhooks", e.webhooks, jobs)
	rep.runRaw("webhooks, malformed", e.webhooks, malformed(e.webhooks))
	body := `{"image":"` + img + `"}`
	rep.burst(ctx, "webhooks, burst", 32, 500, func(i int) (*http.Request, error) {
		path := gen
		if i%2 == 1 {
			path = "/hooks/generic/wrong"
		}
		r, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+e.webhooks+path, strings.NewReader(body))
		if err == nil {
			r.Header.Set("Content-Type", "application/json")
		}
		return r, err
	})
}

// timing is how long the slowest of a group of connections was kept.
type timing struct {
	name  string
	conns int
	max   time.Duration
	open  int // still open at the end
}

// probeSlow holds connections that send a request header one byte a second
// (slowloris); the read-header timeout must close each.
func probeSlow(e *env) []timing {
	var out []timing
	for _, s := range []struct{ name, addr string }{{"mirror", e.mirror}, {"webhooks", e.webhooks}, {"health", e.health}} {
		out = append(out, hold(s.name+", 1 header byte/s", s.addr, 50, func(c net.Conn) {
			for _, b := range []byte("GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: " + strings.Repeat("s", 100)) {
				if _, err := c.Write([]byte{b}); err != nil {
					return
				}
				time.Sleep(time.Second)
			}
		}))
	}
	return out
}

// probeIdle holds keep-alive connections idle after one request, and
// connections that never send anything; the idle and read-header timeouts
// must close each. Then it holds more connections than the mirror's limit
// and times a pinned HEAD meanwhile.
func probeIdle(e *env) []timing {
	var out []timing
	for _, s := range []struct{ name, addr, path string }{
		{"mirror", e.mirror, "/v2/"}, {"metrics", e.metrics, "/healthz"}, {"health", e.health, "/healthz"}, {"webhooks", e.webhooks, "/hooks/x"},
	} {
		out = append(out, hold(s.name+", idle keep-alive", s.addr, 100, func(c net.Conn) {
			_, _ = io.WriteString(c, "GET "+s.path+" HTTP/1.1\r\nHost: x\r\n\r\n")
			if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			}
		}))
		out = append(out, hold(s.name+", silent", s.addr, 100, func(net.Conn) {}))
	}
	// Over the limit: 600 silent connections, then a real HEAD.
	var flood []net.Conn
	for range 600 {
		if c, err := net.DialTimeout("tcp", e.mirror, 5*time.Second); err == nil {
			flood = append(flood, c)
		}
	}
	start := time.Now()
	status, _ := rawDo(e.mirror, request("HEAD", "/v2/"+e.repo+"/manifests/v1?ns="+e.ns, e.mirror))
	out = append(out, timing{name: fmt.Sprintf("mirror, pinned HEAD (status %d) behind 600 silent connections", status), conns: 1, max: time.Since(start)})
	for _, c := range flood {
		_ = c.Close()
	}
	return out
}

// hold opens n connections, runs act on each, then waits until the server
// closes each (a read returns), at most 90s; it reports the longest.
func hold(name, addr string, n int, act func(net.Conn)) timing {
	var wg sync.WaitGroup
	var mu sync.Mutex
	t := timing{name: name, conns: n}
	for range n {
		wg.Go(func() {
			start := time.Now()
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				return
			}
			defer func() { _ = c.Close() }()
			go act(c)
			_ = c.SetReadDeadline(time.Now().Add(90 * time.Second))
			buf := make([]byte, 4096)
			var rerr error
			for rerr == nil {
				_, rerr = c.Read(buf)
			}
			mu.Lock()
			defer mu.Unlock()
			if ne, ok := rerr.(net.Error); ok && ne.Timeout() {
				t.open++
			}
			if d := time.Since(start); d > t.max {
				t.max = d
			}
		})
	}
	wg.Wait()
	return t
}
