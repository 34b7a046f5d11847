package mirror

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"

	"github.com/tagger-project/tagger/pkg/pins"
)

const userAgent = "tagger-mirror"

// copyBufferSize is the size of the pooled buffers blobs are streamed with.
const copyBufferSize = 64 << 10

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
	notCached := errBlobNotCached
	if k == kindManifestDigest {
		notCached = errManifestNotCached
	}
	resp, res := h.openBundled(r, k, repo.CacheRepository(), dgst)
	if resp == nil && h.content != nil && h.strict(repo.Registry) {
		resp, res = h.openUpstream(r, k, repo, dgst)
	}
	if resp == nil {
		notCached.write(w, r)
		return res
	}
	defer func() { _ = resp.Body.Close() }()

	hd := w.Header()
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
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	// The wrappers hide ReadFrom/WriteTo so that io.CopyBuffer uses the
	// pooled buffer rather than allocating one of its own.
	n, err := io.CopyBuffer(writerOnly{w}, readerOnly{resp.Body}, *bp)
	h.metrics.addBytes(n)
	if err != nil {
		if r.Context().Err() == nil {
			h.log.WithError(err).WithFields(logrus.Fields{"repository": repo.Name(), "digest": dgst, "bytes": n}).Warn("streaming content failed")
		}
		return resultError
	}
	return resultPinnedHit
}

// openBundled asks the bundled registry; a nil response means "not there"
// with the result to count.
func (h *Handler) openBundled(r *http.Request, k kind, cacheRepo, dgst string) (*http.Response, result) {
	if h.registry == "" {
		return nil, resultUpstreamFallback404
	}
	seg := "/blobs/"
	if k == kindManifestDigest {
		seg = "/manifests/"
	}
	u := h.registry + "/v2/" + cacheRepo + seg + dgst
	log := func() logrus.FieldLogger {
		return h.log.WithFields(logrus.Fields{"method": r.Method, "url": u})
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, u, nil)
	if err != nil {
		log().WithError(err).Warn("bundled registry: build request")
		return nil, resultError
	}
	if accept := r.Header.Values("Accept"); len(accept) > 0 {
		req.Header["Accept"] = accept
	} else if k == kindManifestDigest {
		req.Header["Accept"] = defaultAcceptHeader
	}
	if rg, ok := singleRange(r.Header); ok {
		req.Header.Set("Range", rg)
	}
	req.Header.Set("Accept-Encoding", "identity")
	req.Header.Set("User-Agent", userAgent)

	resp, err := h.client.Do(req)
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
	kindSeg := "blobs"
	accept := strings.Join(r.Header.Values("Accept"), ", ")
	if k == kindManifestDigest {
		kindSeg = "manifests"
		if accept == "" {
			accept = strings.Join(defaultAcceptHeader, ", ")
		}
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

// singleRange returns the request's Range header when it is exactly one
// "bytes=" range ("bytes=N-", "bytes=N-M", "bytes=-N"). Anything else
// (several ranges, several headers, other units, malformed) is ignored and
// the whole content served with 200, which RFC 9110 allows; forwarding
// several ranges would get a multipart body back, which no pull client wants.
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
	if !okA || !okB || (first != "" && last != "" && b < a) {
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
