package httplimits

import (
	"bytes"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
)

// ErrorBody renders an error that net/http's server answers by itself,
// before any handler runs (a malformed request line, a bad percent-escape
// in the target, headers over MaxHeaderBytes, an unknown transfer coding),
// in the server's own error format: it returns the Content-Type and body
// for status and Go's text (such as "Bad Request" or "missing required Host
// header").
type ErrorBody func(status int, text string) (contentType string, body []byte)

// LimitListener returns ln accepting at most n connections at once: Accept
// waits for a served connection to close. Connections beyond the bound wait
// in the kernel's accept queue rather than being refused, so a burst is
// served late instead of failing; the server's read-header and idle
// timeouts make sure a slot held by an idle or slow peer comes free.
func LimitListener(ln net.Listener, n int) net.Listener {
	return &listener{Listener: ln, sem: make(chan struct{}, n), done: make(chan struct{})}
}

// RewriteErrors returns ln whose connections rewrite net/http's plain-text
// pre-handler error responses with body. Go writes those in one Write
// straight to the connection, in a fixed shape no handler response has
// (status line, then exactly "Content-Type: text/plain; charset=utf-8" and
// "Connection: close"); every other write passes unchanged.
func RewriteErrors(ln net.Listener, body ErrorBody) net.Listener {
	if l, ok := ln.(*listener); ok {
		l.errBody = body
		return l
	}
	return &listener{Listener: ln, errBody: body}
}

type listener struct {
	net.Listener
	sem       chan struct{} // nil: no limit
	done      chan struct{}
	closeOnce sync.Once
	errBody   ErrorBody
}

func (l *listener) Accept() (net.Conn, error) {
	if l.sem != nil {
		select {
		case l.sem <- struct{}{}:
		case <-l.done:
			return nil, net.ErrClosed
		}
	}
	c, err := l.Listener.Accept()
	if err != nil {
		l.release()
		return nil, err
	}
	lc := &conn{Conn: c, errBody: l.errBody}
	if l.sem != nil {
		lc.release = l.release
	}
	return lc, nil
}

func (l *listener) release() {
	if l.sem != nil {
		<-l.sem
	}
}

func (l *listener) Close() error {
	if l.done != nil {
		l.closeOnce.Do(func() { close(l.done) })
	}
	return l.Listener.Close()
}

// conn frees its slot once on Close. It keeps the TCP connection's ReadFrom
// and CloseWrite visible: net/http streams a response body through the
// connection's ReadFrom when it has one (the mirror's blob path depends on
// it), and half-closes through CloseWrite.
type conn struct {
	net.Conn
	release   func()
	closeOnce sync.Once
	errBody   ErrorBody
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	if c.release != nil {
		c.closeOnce.Do(c.release)
	}
	return err
}

func (c *conn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(writerOnly{c.Conn}, r)
}

func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

type writerOnly struct{ io.Writer }

// goErrorHeaders is what net/http writes after the status line of an error
// it answers before any handler runs.
const goErrorHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"

func (c *conn) Write(b []byte) (int, error) {
	if c.errBody == nil || !bytes.HasPrefix(b, []byte("HTTP/1.1 ")) {
		return c.Conn.Write(b)
	}
	status, text, ok := parseGoError(b)
	if !ok {
		return c.Conn.Write(b)
	}
	ct, body := c.errBody(status, text)
	out := make([]byte, 0, 128+len(body))
	out = append(out, b[:bytes.Index(b, []byte("\r\n"))]...)
	out = append(out, "\r\nContent-Type: "...)
	out = append(out, ct...)
	out = append(out, "\r\nContent-Length: "...)
	out = strconv.AppendInt(out, int64(len(body)), 10)
	out = append(out, "\r\nConnection: close\r\n\r\n"...)
	out = append(out, body...)
	if _, err := c.Conn.Write(out); err != nil {
		return 0, err
	}
	return len(b), nil
}

// parseGoError recognises one of net/http's pre-handler error responses
// and returns its status and text ("Bad Request", or the detail Go gives,
// such as "missing required Host header").
func parseGoError(b []byte) (int, string, bool) {
	line, rest, ok := bytes.Cut(b, []byte("\r\n"))
	if !ok || len(line) < len("HTTP/1.1 400") || !bytes.HasPrefix(rest, []byte(goErrorHeaders[2:])) {
		return 0, "", false
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil || status < 400 || status > 599 {
		return 0, "", false
	}
	body := rest[len(goErrorHeaders)-2:]
	// The body repeats the status line: "400 Bad Request[: detail]".
	text := string(bytes.TrimSpace(body))
	if len(text) > 4 && text[:3] == string(line[9:12]) {
		text = text[4:]
	}
	if _, detail, ok := strings.Cut(text, ": "); ok {
		text = detail
	}
	return status, text, true
}
