package mirror

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"

	"github.com/tagger-project/tagger/pkg/pins"
)

const userAgent = "tagger-mirror"

// copyBufferSize is the size of the pooled buffers blobs are streamed with:
// one per blob being streamed, back to the pool after it. Measured against
// the 32 KiB net/http copies with (docs/benchmarks.md): 64 KiB was no
// better, 1 MiB clearly so, 2-4 MiB no better than 1 MiB.
const copyBufferSize = 1 << 20

var copyBuffers = sync.Pool{New: func() any {
	b := make([]byte, copyBufferSize)
	return &b
}}

// passHeaders are copied from the bundled registry's answer to containerd.
var passHeaders = []string{"Content-Type", "Docker-Content-Digest", "Etag", "Accept-Ranges", "Content-Range"}

// proxy streams a manifest or blob of a pinned repository by digest from the
// bundled registry. Anything but a 200 or 206 from it (404, an error status,
// an unreachable registry, no registry, a redirect the client did not
// follow) becomes a 404: containerd then fetches that digest upstream, which
// is still the pinned content because it is addressed by digest. A strict
// registry has no upstream host in hosts.toml, so there the mirror itself
// streams the digest from the upstream instead.
func (h *Handler) proxy(w http.ResponseWriter, r *http.Request, k kind, repo pins.Reference, dgst string) result {
	if k == kindManifestDigest && h.cache != nil {
		// Manifests without Range go through the cache. (distribution
		// ignores Range on manifests; another bundled registry might not.)
		if _, ranged := singleRange(r.Header); !ranged {
			return h.proxyManifest(w, r, repo, dgst)
		}
	}
	notCached := errBlobNotCached
	if k == kindManifestDigest {
		notCached = errManifestNotCached
	}
	resp, res := h.open(r, k, repo, dgst)
	if resp == nil {
		notCached.write(w, r)
		return res
	}
	defer func() { _ = resp.Body.Close() }()
	return h.stream(w, r, resp, repo, dgst)
}

// open asks the bundled registry for the digest and, for a strict registry
// when the bundled registry does not have it, the upstream. A nil response
// means "not there", with the result to count.
func (h *Handler) open(r *http.Request, k kind, repo pins.Reference, dgst string) (*http.Response, result) {
	resp, res := h.openBundled(r, k, repo.CacheRepository(), dgst)
	if resp == nil && h.content != nil && h.strict(repo.Registry) {
		resp, res = h.openUpstream(r, k, repo, dgst)
	}
	return resp, res
}

// stream sends an accepted response (200 or 206, or 416 for a range past
// the end) to containerd.
func (h *Handler) stream(w http.ResponseWriter, r *http.Request, resp *http.Response, repo pins.Reference, dgst string) result {
	hd := w.Header()
	if resp.StatusCode == http.StatusRequestedRangeNotSatisfiable {
		// distribution's 416 body is Go's plain text; ours is OCI JSON,
		// with the registry's "bytes */<size>".
		if v := resp.Header.Get("Content-Range"); strings.HasPrefix(v, "bytes */") {
			hd["Content-Range"] = []string{v}
		}
		errRangeNotSatisfiable.write(w, r)
		return resultRangeNotSatisfiable
	}
	for _, name := range passHeaders {
		if v := resp.Header.Values(name); len(v) > 0 {
			hd[name] = v
		}
	}
	if resp.ContentLength >= 0 {
		hd["Content-Length"] = []string{strconv.FormatInt(resp.ContentLength, 10)}
	}
	w.WriteHeader(resp.StatusCode)
	if r.Method == http.MethodHead {
		return resultPinnedHit
	}
	var n int64
	var err error
	src := pooledReader{r: resp.Body}
	if h.streamProgress > 0 {
		// Closing the body unblocks a read from a source that stalls; the
		// write deadline drops a client that stops reading. (The server's
		// read timeout does not cut a long stream: net/http lifts the read
		// deadline when its background read starts; TestStreamOutlastsReadTimeout.)
		rc := http.NewResponseController(w)
		stall := time.AfterFunc(h.streamProgress, func() { _ = resp.Body.Close() })
		defer stall.Stop()
		src.progress = func() {
			stall.Reset(h.streamProgress)
			_ = rc.SetWriteDeadline(time.Now().Add(h.streamProgress))
		}
		src.progress()
		// The next request on this connection must not inherit it.
		defer func() { _ = rc.SetWriteDeadline(time.Time{}) }()
	}
	if rf, ok := w.(io.ReaderFrom); ok {
		// net/http's ResponseWriter: after the headers it copies straight
		// to the connection (the TCP conn's ReadFrom). Writing through it
		// instead goes through its two bufio layers, which split each
		// large write into extra copies and syscalls: measured, the
		// benchmark process spends about 20% more CPU per blob that way
		// (docs/benchmarks.md). The length is safe: a fixed Content-Length
		// was set from the registry's, whose body reader stops there.
		// pooledReader makes that copy use the pooled buffer.
		n, err = rf.ReadFrom(src)
	} else {
		n, err = src.WriteTo(w)
	}
	h.metrics.addBytes(n)
	if err != nil {
		if r.Context().Err() == nil {
			h.log.WithError(err).WithFields(logrus.Fields{"repository": repo.Name(), "digest": dgst, "bytes": n}).Warn("streaming content failed")
		}
		return resultError
	}
	return resultPinnedHit
}

// proxyManifest answers a manifest GET or HEAD by digest with the cache on:
// from memory when the cache holds the digest for this repository (read
// from the bundled registry, so the registry would answer it too) and the
// request's Accept admits its media type; otherwise from the bundled
// registry as proxy does. A GET that the registry answers with a manifest
// of known length is read whole, checked against the digest, cached, then
// sent: bytes that do not hash to the digest are answered 404 (containerd
// then fetches upstream), never sent.
func (h *Handler) proxyManifest(w http.ResponseWriter, r *http.Request, repo pins.Reference, dgst string) result {
	key := cacheKey{repo.Registry, repo.Repository, dgst}
	get := r.Method == http.MethodGet
	e, release := h.lookup(r.Context(), key, get, func(e *cacheEntry) bool { return e.byDigest })
	if e != nil {
		return h.writeCached(w, r, e)
	}
	if release != nil {
		defer release()
	}
	resp, res := h.open(r, kindManifestDigest, repo, dgst)
	if resp == nil {
		errManifestNotCached.write(w, r)
		return res
	}
	defer func() { _ = resp.Body.Close() }()
	if !get || resp.StatusCode != http.StatusOK || resp.ContentLength < 0 || resp.ContentLength > h.cache.maxEntry ||
		!digest.Digest(dgst).Algorithm().Available() {
		return h.stream(w, r, resp, repo, dgst)
	}
	log := func() logrus.FieldLogger {
		return h.log.WithFields(logrus.Fields{"repository": repo.Name(), "digest": dgst})
	}
	body := make([]byte, resp.ContentLength)
	if h.streamProgress > 0 {
		stall := time.AfterFunc(h.streamProgress, func() { _ = resp.Body.Close() })
		defer stall.Stop()
	}
	if _, err := io.ReadFull(resp.Body, body); err != nil {
		if r.Context().Err() == nil {
			log().WithError(err).Warn("reading a manifest failed; containerd will fetch it upstream")
		}
		errManifestNotCached.write(w, r)
		return resultError
	}
	// add verifies; the length and algorithm were checked above, so nil
	// means the bytes do not hash to the digest.
	if e = h.cache.add(key, body, resp.Header.Get("Content-Type"), true); e == nil {
		log().WithField("got", digest.Digest(dgst).Algorithm().FromBytes(body).String()).
			Warn("manifest bytes do not hash to the requested digest; answered 404 so containerd fetches it upstream")
		errManifestNotCached.write(w, r)
		return resultError
	}
	return h.writeCached(w, r, e)
}

// writeCached answers a manifest request by digest from a cache entry, with
// the headers the registry sends: Docker-Content-Digest, Content-Type,
// Content-Length, Etag.
func (h *Handler) writeCached(w http.ResponseWriter, r *http.Request, e *cacheEntry) result {
	hd := w.Header()
	hd["Docker-Content-Digest"] = e.hDigest
	if e.mediaType != "" {
		hd["Content-Type"] = e.hType
	}
	hd["Content-Length"] = e.hLength
	hd["Etag"] = e.hEtag
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return resultPinnedHit
	}
	n, err := w.Write(e.body)
	h.metrics.addBytes(int64(n))
	if err != nil {
		return resultError
	}
	return resultPinnedHit
}

// openBundled asks the bundled registry; a nil response means "not there"
// with the result to count.
func (h *Handler) openBundled(r *http.Request, k kind, cacheRepo, dgst string) (*http.Response, result) {
	if h.bundled == nil {
		return nil, resultUpstreamFallback404
	}
	// A blob ignores Accept; a manifest by digest is asked for with every
	// manifest type, whatever the client accepts (see defaultAccept).
	kindSeg, accept := "blobs", []string(nil)
	if k == kindManifestDigest {
		kindSeg, accept = "manifests", defaultAcceptHeader
	}
	rg, _ := singleRange(r.Header)
	log := func() logrus.FieldLogger {
		return h.log.WithFields(logrus.Fields{"method": r.Method, "repository": cacheRepo, "digest": dgst})
	}
	resp, err := h.bundled.Open(r.Context(), r.Method, cacheRepo, kindSeg, digest.Digest(dgst), accept, rg, userAgent)
	if err != nil {
		if r.Context().Err() == nil {
			log().WithError(err).Warn("bundled registry unreachable; containerd will fetch upstream")
		}
		return nil, resultError
	}
	return h.accept(resp, dgst, log)
}

// openUpstream streams the digest from the upstream registry (strict mode).
func (h *Handler) openUpstream(r *http.Request, k kind, repo pins.Reference, dgst string) (*http.Response, result) {
	kindSeg, accept := "blobs", ""
	if k == kindManifestDigest {
		kindSeg, accept = "manifests", defaultAcceptHeader[0]
	}
	rg, _ := singleRange(r.Header)
	log := func() logrus.FieldLogger {
		return h.log.WithFields(logrus.Fields{"method": r.Method, "repository": repo.Name(), "digest": dgst})
	}
	resp, err := h.content.Open(r.Context(), repo, r.Method, kindSeg, digest.Digest(dgst), accept, rg)
	if err != nil {
		if r.Context().Err() == nil {
			log().WithError(err).Warn("strict registry: upstream unreachable")
		}
		return nil, resultError
	}
	return h.accept(resp, dgst, log)
}

// accept keeps a 200/206 answer for dgst and closes anything else.
func (h *Handler) accept(resp *http.Response, dgst string, log func() logrus.FieldLogger) (*http.Response, result) {
	switch resp.StatusCode {
	case http.StatusOK, http.StatusPartialContent:
	case http.StatusRequestedRangeNotSatisfiable:
		// The content is there, the range is not: the client's mistake,
		// answered as the registry answered it (stream), without a warning.
		return resp, resultRangeNotSatisfiable
	case http.StatusNotFound:
		_ = resp.Body.Close()
		return nil, resultUpstreamFallback404
	default:
		log().WithField("status", resp.Status).Warn("unexpected status for content by digest")
		_ = resp.Body.Close()
		return nil, resultError
	}
	// The source is content-addressed, but a wrong answer must not reach
	// containerd under a digest it did not ask for.
	if got := resp.Header.Get("Docker-Content-Digest"); got != "" && got != dgst {
		log().WithField("got", got).Warn("answered another digest")
		_ = resp.Body.Close()
		return nil, resultError
	}
	return resp, resultPinnedHit
}

type writerOnly struct{ io.Writer }

type readerOnly struct{ io.Reader }

// pooledReader copies its reader with a pooled copyBufferSize buffer when
// asked to write itself out (WriteTo). It is what stream hands to the
// ResponseWriter's ReadFrom: net/http copies the first 512 bytes through
// its own buffer, then calls the TCP connection's ReadFrom, which can
// neither splice nor sendfile from an HTTP response body and falls back to
// io.Copy, which calls WriteTo when the source has one: without it, that
// copy uses a fresh 32 KiB buffer, one read and one write syscall per 32
// KiB (docs/benchmarks.md). Read is the body's own, for the 512-byte sniff.
// progress, when set, is called before each chunk is written: it moves the
// stall timer and the connection's write deadline (see stream).
type pooledReader struct {
	r        io.Reader
	progress func()
}

func (p pooledReader) Read(b []byte) (int, error) { return p.r.Read(b) }

// WriteTo copies until EOF with a pooled buffer; the wrappers keep
// io.CopyBuffer from handing the copy back to WriteTo or ReadFrom.
func (p pooledReader) WriteTo(w io.Writer) (int64, error) {
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	if p.progress == nil {
		return io.CopyBuffer(writerOnly{w}, readerOnly{p.r}, *bp)
	}
	buf := *bp
	var n int64
	for {
		nr, rerr := p.r.Read(buf)
		if nr > 0 {
			p.progress()
			nw, werr := w.Write(buf[:nr])
			n += int64(nw)
			if werr != nil {
				return n, werr
			}
			if nw != nr {
				return n, io.ErrShortWrite
			}
		}
		if errors.Is(rerr, io.EOF) {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

// singleRange returns the request's Range header when it is exactly one
// "bytes=" range ("bytes=N-", "bytes=N-M", "bytes=-N" with N above 0).
// Anything else (several ranges, several headers, other units, malformed)
// is ignored and the whole content served with 200, which RFC 9110 allows;
// forwarding several ranges would get a multipart body back, which no pull
// client wants. "bytes=-0" is ignored too: it asks for nothing, which RFC
// 9110 makes unsatisfiable, yet Go's http.ServeContent (distribution's)
// answers it 206 with an inverted "Content-Range: bytes N-(N-1)/N".
func singleRange(h http.Header) (string, bool) {
	vs := h.Values("Range")
	if len(vs) != 1 {
		return "", false
	}
	spec, ok := strings.CutPrefix(vs[0], "bytes=")
	if !ok {
		return "", false
	}
	first, last, ok := strings.Cut(spec, "-")
	if !ok || (first == "" && last == "") {
		return "", false
	}
	a, okA := rangeBound(first)
	b, okB := rangeBound(last)
	if !okA || !okB || (first != "" && last != "" && b < a) || (first == "" && b == 0) {
		return "", false
	}
	return vs[0], true
}

// rangeBound parses one side of a byte range; "" is an open side.
func rangeBound(s string) (uint64, bool) {
	if s == "" {
		return 0, true
	}
	if !digits(s) {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 63)
	return n, err == nil
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
