// Package httplimits is the one place that defines the timeouts and limits
// of every HTTP client and server in tagger's processes: the node agent's
// mirror, metrics and health listeners and its clients of the bundled and
// upstream registries; the controller's webhook listener, its upstream and
// bundled-registry clients and its Docker Hub callbacks. docs/design.md
// ("Timeouts and limits") lists the values and why.
//
// Clients get explicit dial, TLS handshake, response header and idle
// connection timeouts; servers explicit read-header, read, write (where the
// response is not a stream) and idle timeouts and a header size bound, so a
// peer that stalls, or holds a connection open and idle, costs a goroutine
// and a file descriptor for a bounded time only.
package httplimits

import (
	"net"
	"net/http"
	"time"
)

// Client holds the timeouts of one kind of outbound HTTP client.
type Client struct {
	// Dial bounds connecting (TCP, after name resolution).
	Dial time.Duration
	// TLSHandshake bounds the TLS handshake.
	TLSHandshake time.Duration
	// ResponseHeader bounds the wait for the response headers once the
	// request is written: a peer that accepts and never answers fails here.
	ResponseHeader time.Duration
	// IdleConn closes pooled keep-alive connections idle this long.
	IdleConn time.Duration
	// MaxIdleConnsPerHost bounds the keep-alive pool per host.
	MaxIdleConnsPerHost int
	// Total, when not 0, bounds a whole exchange including reading the body
	// (http.Client.Timeout). Clients that stream layers leave it 0: their
	// request's context bounds them.
	Total time.Duration
}

// Outbound client kinds.
var (
	// Upstream is for public and private registries over the internet:
	// tag checks, manifest reads, layer copies, the strict-registry stream.
	Upstream = Client{Dial: 10 * time.Second, TLSHandshake: 10 * time.Second, ResponseHeader: 30 * time.Second,
		IdleConn: 90 * time.Second, MaxIdleConnsPerHost: 16}
	// InCluster is for the bundled registry, a Service in the same cluster:
	// connecting must be quick, because containerd waits on the mirror
	// before it tries the upstream.
	InCluster = Client{Dial: 2 * time.Second, TLSHandshake: 5 * time.Second, ResponseHeader: 30 * time.Second,
		IdleConn: 90 * time.Second, MaxIdleConnsPerHost: 32}
	// Callback is for Docker Hub's callback_url: a small POST, best effort.
	Callback = Client{Dial: 5 * time.Second, TLSHandshake: 5 * time.Second, ResponseHeader: 10 * time.Second,
		IdleConn: 30 * time.Second, MaxIdleConnsPerHost: 2, Total: 10 * time.Second}
)

// UpstreamManifest bounds the node mirror's whole read of one pinned
// manifest from the upstream (at most 4 MiB), body included: a peer that
// sends headers and then stalls cannot hold a pinned tag's GET longer.
const UpstreamManifest = 30 * time.Second

// Transport returns a new transport with c's timeouts. Compression is off:
// registry content is addressed by digest, and a transparent gunzip would
// change its bytes and length.
func (c Client) Transport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: c.Dial, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = c.TLSHandshake
	t.ResponseHeaderTimeout = c.ResponseHeader
	t.IdleConnTimeout = c.IdleConn
	t.ExpectContinueTimeout = time.Second
	if c.MaxIdleConnsPerHost > 0 {
		t.MaxIdleConnsPerHost = c.MaxIdleConnsPerHost
	}
	t.DisableCompression = true
	return t
}

// HTTPClient returns a client with c's transport and total timeout.
func (c Client) HTTPClient() *http.Client {
	return &http.Client{Transport: c.Transport(), Timeout: c.Total}
}

// Server holds the timeouts and limits of one kind of HTTP server.
type Server struct {
	// ReadHeader bounds reading a request's headers.
	ReadHeader time.Duration
	// Read bounds reading a whole request, body included.
	Read time.Duration
	// Write bounds writing a response, from the end of the request's
	// headers; 0 for servers that stream content of any size (the mirror),
	// which bound each chunk's progress instead (StreamProgress).
	Write time.Duration
	// Idle closes a keep-alive connection idle this long between requests.
	Idle time.Duration
	// MaxHeaderBytes bounds a request's headers.
	MaxHeaderBytes int
	// MaxConns, when above 0, bounds the connections served at once: the
	// listener stops accepting at the bound (LimitListener).
	MaxConns int
	// StreamProgress, when above 0, is how long a streamed body may go
	// without moving one chunk, read from its source or written to the
	// client, before both connections are dropped: neither a source that
	// stalls nor a client that stops reading holds a goroutine, a buffer
	// and two connections for longer.
	StreamProgress time.Duration
}

// Server kinds.
var (
	// Mirror is the node-local mirror: containerd sends GET and HEAD
	// without bodies and reuses connections during a pull.
	Mirror = Server{ReadHeader: 5 * time.Second, Read: 10 * time.Second, Idle: 30 * time.Second,
		MaxHeaderBytes: 64 << 10, MaxConns: 512, StreamProgress: 30 * time.Second}
	// Probes are the metrics and health listeners of both processes.
	Probes = Server{ReadHeader: 5 * time.Second, Read: 10 * time.Second, Write: 30 * time.Second,
		Idle: 30 * time.Second, MaxHeaderBytes: 64 << 10}
	// Webhooks is the controller's webhook listener: bodies up to 1 MiB from
	// the internet.
	Webhooks = Server{ReadHeader: 10 * time.Second, Read: 30 * time.Second, Write: 30 * time.Second,
		Idle: 60 * time.Second, MaxHeaderBytes: 64 << 10}
)

// New returns an http.Server for h with s's timeouts. The general OPTIONS
// handler is off so that "OPTIONS *" reaches h, which answers it as it
// answers any method it does not serve.
func (s Server) New(h http.Handler) *http.Server {
	return &http.Server{
		Handler:                      h,
		ReadHeaderTimeout:            s.ReadHeader,
		ReadTimeout:                  s.Read,
		WriteTimeout:                 s.Write,
		IdleTimeout:                  s.Idle,
		MaxHeaderBytes:               s.MaxHeaderBytes,
		DisableGeneralOptionsHandler: true,
	}
}

// Listener wraps ln with s's connection limit (none when MaxConns is 0).
func (s Server) Listener(ln net.Listener) net.Listener {
	if s.MaxConns <= 0 {
		return ln
	}
	return LimitListener(ln, s.MaxConns)
}
