package httplimits

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// serve runs s over h on a loopback port, with ln wrapped by wrap, until
// the test ends; it returns the address.
func serve(t *testing.T, s Server, h http.Handler, wrap func(net.Listener) net.Listener) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := s.New(h)
	go func() { _ = srv.Serve(wrap(ln)) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("count open files: %v (the node agent runs on Linux, which has /proc/self/fd)", err)
	}
	return len(ents)
}

// TestIdleConnectionsClosed is defect 2: keep-alive connections left idle
// after a request are closed by the server after its idle timeout, and so
// are connections that never send a request (read-header timeout); the
// process's open files come back to where they were.
func TestIdleConnectionsClosed(t *testing.T) {
	s := Server{ReadHeader: 300 * time.Millisecond, Read: time.Second, Idle: 500 * time.Millisecond, MaxHeaderBytes: 4096}
	addr := serve(t, s, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }),
		func(ln net.Listener) net.Listener { return ln })
	before := openFDs(t)
	const n = 50
	conns := make([]net.Conn, 0, 2*n)
	for i := range 2 * n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		if i%2 == 0 {
			// One request, then idle on a kept-alive connection.
			if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
		}
	}
	open := openFDs(t)
	if open < before+2*n {
		t.Fatalf("open files %d -> %d; the test's connections are not counted", before, open)
	}
	start := time.Now()
	for i, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !isReset(err) {
			t.Fatalf("connection %d: read %v, want the server to close it", i, err)
		}
		_ = c.Close()
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("idle connections closed after %v; bounds are 300ms/500ms", took)
	}
	// Both ends are closed now; server-side descriptors go with them.
	deadline := time.Now().Add(5 * time.Second)
	for openFDs(t) > before+2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if after := openFDs(t); after > before+2 {
		t.Errorf("open files %d before, %d with the connections, %d after", before, open, after)
	}
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// TestConnectionLimit: with MaxConns 4, at most 4 connections are served
// at once; the rest wait and are served when slots free up.
func TestConnectionLimit(t *testing.T) {
	const limit, clients = 4, 12
	var inflight, peak atomic.Int32
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		n := inflight.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		<-release
		inflight.Add(-1)
		_, _ = io.WriteString(w, "ok")
	})
	s := Server{ReadHeader: 5 * time.Second, Idle: time.Second, MaxConns: limit}
	addr := serve(t, s, h, s.Listener)
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for range clients {
		wg.Go(func() {
			c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
			resp, err := c.Get("http://" + addr + "/")
			if err != nil {
				errs <- err
				return
			}
			_ = resp.Body.Close()
		})
	}
	waitFor(t, func() bool { return inflight.Load() == limit })
	// The others are connected at the kernel, not served.
	time.Sleep(200 * time.Millisecond) // give a broken limit the chance to show
	if p := peak.Load(); p != limit {
		t.Fatalf("peak %d handlers at once, want %d", p, limit)
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("client: %v", err)
	}
	if p := peak.Load(); p > limit {
		t.Errorf("peak %d handlers at once, limit %d", p, limit)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStalledPeerClient: a peer that accepts and never answers fails a
// request after ResponseHeader, not never.
func TestStalledPeerClient(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			_ = c.Close()
		}
	})
	for name, c := range map[string]Client{"Upstream": Upstream, "InCluster": InCluster, "Callback": Callback} {
		c.ResponseHeader = 300 * time.Millisecond
		start := time.Now()
		resp, err := c.HTTPClient().Get("http://" + ln.Addr().String() + "/v2/")
		if err == nil {
			_ = resp.Body.Close()
			t.Fatalf("%s: a stalled peer answered", name)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("%s: failed after %v, want about 300ms", name, took)
		}
	}
	// Every kind has every timeout set.
	for name, c := range map[string]Client{"Upstream": Upstream, "InCluster": InCluster, "Callback": Callback} {
		if c.Dial <= 0 || c.TLSHandshake <= 0 || c.ResponseHeader <= 0 || c.IdleConn <= 0 {
			t.Errorf("%s: a timeout is unset: %+v", name, c)
		}
	}
	for name, s := range map[string]Server{"Mirror": Mirror, "Probes": Probes, "Webhooks": Webhooks} {
		if s.ReadHeader <= 0 || s.Read <= 0 || s.Idle <= 0 || s.MaxHeaderBytes <= 0 || (s.Write <= 0 && s.StreamProgress <= 0) {
			t.Errorf("%s: a timeout is unset: %+v", name, s)
		}
	}
	if Mirror.MaxConns <= 0 {
		t.Error("the mirror has no connection limit")
	}
}

// TestRewriteErrors is defect 8: what Go's server rejects before any
// handler gets the server's own error format; handler answers pass as they
// are, and the connection keeps its ReadFrom.
func TestRewriteErrors(t *testing.T) {
	body := func(status int, text string) (string, []byte) {
		return "application/json", fmt.Appendf(nil, `{"status":%d,"text":%q}`, status, text)
	}
	s := Server{ReadHeader: time.Second, Read: time.Second, Idle: time.Second, MaxHeaderBytes: 1024}
	var sawReadFrom atomic.Bool
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, "handler's own")
	})
	addr := serve(t, s, h, func(ln net.Listener) net.Listener {
		l := RewriteErrors(LimitListener(ln, 8), body)
		return readFromProbe{l, &sawReadFrom}
	})
	for _, tc := range []struct {
		name, raw string
		status    int
		text      string
	}{
		{"bad percent-escape", "GET /v2/%zz/manifests/x HTTP/1.1\r\nHost: x\r\n\r\n", 400, ""},
		{"malformed request line", "GARBAGE\r\n\r\n", 400, ""},
		{"no Host", "GET / HTTP/1.1\r\n\r\n", 400, "missing required Host header"},
		{"headers too large", "GET / HTTP/1.1\r\nHost: x\r\nX: " + strings.Repeat("a", 8192) + "\r\n\r\n", 431, ""},
		{"unknown transfer coding", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := rawRequest(t, addr, tc.raw)
			got, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status || resp.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("%d %q %s; want %d JSON", resp.StatusCode, resp.Header.Get("Content-Type"), got, tc.status)
			}
			if !strings.HasPrefix(string(got), fmt.Sprintf(`{"status":%d,"text":`, tc.status)) ||
				(tc.text != "" && !strings.Contains(string(got), tc.text)) {
				t.Errorf("body %s", got)
			}
		})
	}
	resp := rawRequest(t, addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 400 || string(got) != "handler's own" {
		t.Errorf("handler answer changed: %d %q", resp.StatusCode, got)
	}
	if !sawReadFrom.Load() {
		t.Error("the wrapped connection hides ReadFrom")
	}
}

// readFromProbe records whether accepted connections still offer ReadFrom.
type readFromProbe struct {
	net.Listener
	saw *atomic.Bool
}

func (l readFromProbe) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if _, ok := c.(io.ReaderFrom); ok {
		l.saw.Store(true)
	}
	return c, err
}

func rawRequest(t *testing.T, addr, raw string) *http.Response {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = resp.Body.Close() })
	return resp
}
