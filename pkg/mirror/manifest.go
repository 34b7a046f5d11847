package mirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sirupsen/logrus"

	"github.com/tagger-project/tagger/pkg/pins"
	"github.com/tagger-project/tagger/pkg/registryclient"
)

// maxManifestSize bounds what is read of a manifest, as containerd does.
const maxManifestSize = 4 << 20

// Manifest media types, and the Accept the mirror sends the bundled
// registry and the upstream for every manifest, whatever the client sent:
// distribution answers 404 to a GET of an OCI manifest whose Accept does not
// name its type ("*/*", only Docker types), but a manifest addressed by
// digest, or a pinned tag, has exactly one right answer, so the client's
// Accept is not passed on (see the package documentation).
const (
	mediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
)

var (
	defaultAccept = []string{
		ocispec.MediaTypeImageIndex, ocispec.MediaTypeImageManifest,
		mediaTypeDockerManifestList, mediaTypeDockerManifest,
	}
	// defaultAcceptHeader is defaultAccept as one header line: some
	// registries read only the first Accept line.
	defaultAcceptHeader = []string{strings.Join(defaultAccept, ", ")}
)

// writePinHeaders sets the headers of a pinned tag from the pin alone. This
// is containerd's resolve (a HEAD), the hot path: the three value slices
// share one allocation.
func writePinHeaders(w http.ResponseWriter, p *pins.Pin) {
	h := w.Header()
	vals := make([]string, 3)
	vals[0] = p.Digest
	h["Docker-Content-Digest"] = vals[0:1:1]
	if p.MediaType != "" {
		vals[1] = p.MediaType
		h["Content-Type"] = vals[1:2:2]
	}
	// A pin with an unknown size gets no Content-Length: containerd then
	// GETs the manifest from us, rather than recording a size of 0.
	if p.Size > 0 {
		vals[2] = strconv.FormatInt(p.Size, 10)
		h["Content-Length"] = vals[2:3:3]
	}
}

// serveManifestGET sends the bytes of exactly the pinned digest: from the
// bundled registry, else from the upstream by digest, verified against the
// pin's digest and size before anything is written.
//
// When neither source produces them the answer is 503, not 404. The tag is
// pinned, so MANIFEST_UNKNOWN would be false. For containerd the two are the
// same on an ordinary mirror (any status above 399 moves on to the next
// host), but on a strict registry, where the mirror is the last host,
// containerd retries a 503 and gives up on a 404 at once; and a transient
// failure here should be retried, not reported as a missing image.
func (h *Handler) serveManifestGET(w http.ResponseWriter, r *http.Request, p *pins.Pin) result {
	if !validDigest(p.Digest) {
		h.log.WithFields(logrus.Fields{"pin": p.Ref.String(), "digest": p.Digest}).Warn("pin has an invalid digest; not serving it")
		errPinnedUnavailable.write(w, r)
		return resultError
	}
	if p.Size > maxManifestSize {
		h.log.WithFields(logrus.Fields{"pin": p.Ref.String(), "size": p.Size}).Warn("pinned manifest is larger than the mirror serves")
		errPinnedUnavailable.write(w, r)
		return resultError
	}
	if h.cache != nil {
		key := cacheKey{p.Ref.Registry, p.Ref.Repository, p.Digest}
		// The bytes already hash to the pinned digest; they must also have
		// the pinned size, as verify requires of any other source.
		e, release := h.lookup(r.Context(), key, true, func(e *cacheEntry) bool {
			return p.Size <= 0 || int64(len(e.body)) == p.Size
		})
		if e != nil {
			return h.writePinnedManifest(w, p, e.body, e.mediaType, e)
		}
		if release != nil {
			defer release()
		}
	}
	body, mediaType, err := h.pinnedManifest(r.Context(), p)
	if err != nil {
		if r.Context().Err() == nil {
			h.log.WithError(err).WithField("pin", p.Ref.String()).Warn("pinned manifest not served; answered 503")
		}
		errPinnedUnavailable.write(w, r)
		return resultError
	}
	return h.writePinnedManifest(w, p, body, mediaType, nil)
}

// lookup asks the manifest cache for key, and counts one hit or one miss.
// An entry answers only when ok agrees (whatever the request's Accept: the
// digest names one manifest, see the package documentation). On a miss, a
// request that will fill the cache (fill) claims the key: release is then
// not nil and must be called when the fetch is over. If another request was
// already fetching the same manifest, lookup waits for it and looks again.
func (h *Handler) lookup(ctx context.Context, key cacheKey, fill bool, ok func(*cacheEntry) bool) (e *cacheEntry, release func()) {
	e = h.cache.get(key)
	if e == nil && fill {
		e, release = h.cache.claim(ctx, key)
	}
	if e != nil && (ok == nil || ok(e)) {
		h.metrics.cacheHits.Inc()
		return e, nil
	}
	h.metrics.cacheMisses.Inc()
	return nil, release
}

// writePinnedManifest sends a pinned tag's verified manifest. The pin's
// media type wins over the source's, as the pin is what HEAD answered. e,
// when the bytes come from the cache, lends its prebuilt header values.
func (h *Handler) writePinnedManifest(w http.ResponseWriter, p *pins.Pin, body []byte, mediaType string, e *cacheEntry) result {
	hd := w.Header()
	if e != nil && (p.MediaType == "" || p.MediaType == e.mediaType) {
		// The entry's digest is the pin's (it is the key).
		hd["Docker-Content-Digest"] = e.hDigest
		if e.mediaType != "" {
			hd["Content-Type"] = e.hType
		}
		hd["Content-Length"] = e.hLength
	} else {
		if p.MediaType != "" {
			mediaType = p.MediaType
		}
		hd["Docker-Content-Digest"] = []string{p.Digest}
		if mediaType != "" {
			hd["Content-Type"] = []string{mediaType}
		}
		hd["Content-Length"] = []string{strconv.Itoa(len(body))}
	}
	w.WriteHeader(http.StatusOK)
	n, err := w.Write(body)
	h.metrics.addBytes(int64(n))
	if err != nil {
		return resultError
	}
	return resultPinnedHit
}

// pinnedManifest returns the verified bytes of the pin's manifest and their
// media type: from the bundled registry, else from the upstream. Verified
// bytes go into the manifest cache.
func (h *Handler) pinnedManifest(ctx context.Context, p *pins.Pin) ([]byte, string, error) {
	dgst := digest.Digest(p.Digest)
	key := cacheKey{p.Ref.Registry, p.Ref.Repository, p.Digest}
	bundledErr := errNoRegistry
	if h.bundled != nil {
		body, ct, err := h.bundledManifest(ctx, p)
		if err == nil {
			err = verify(body, dgst, p.Size)
		}
		if err == nil {
			if h.cache != nil {
				// The registry's Content-Type: what it answers by digest too.
				h.cache.add(key, body, ct, true)
			}
			return body, p.MediaType, nil
		}
		if !errors.Is(err, errNotCached) && ctx.Err() == nil {
			h.log.WithError(err).WithField("pin", p.Ref.String()).Warn("bundled registry: pinned manifest not served from it")
		}
		bundledErr = err
	}
	if h.upstream == nil {
		return nil, "", fmt.Errorf("%s@%s: %w, and no upstream fetcher", p.Ref.Name(), p.Digest, bundledErr)
	}
	// A pinned tag's GET waits on this read; a peer that stalls must not
	// hold it past the bound (the transport bounds only the headers).
	uctx, cancel := context.WithTimeout(ctx, h.upstreamTimeout)
	defer cancel()
	body, mt, err := h.upstream.FetchManifest(uctx, p.Ref, dgst, defaultAccept)
	if err == nil {
		err = verify(body, dgst, p.Size)
	}
	if err != nil {
		return nil, "", fmt.Errorf("%s@%s: bundled registry: %w; upstream: %w", p.Ref.Name(), p.Digest, bundledErr, err)
	}
	if p.MediaType != "" {
		mt = p.MediaType
	}
	if h.cache != nil {
		// By digest the mirror streams a strict registry's content from the
		// upstream itself; for any other registry it answers 404 and lets
		// containerd go upstream, so these bytes serve only this pinned tag.
		h.cache.add(key, body, mt, h.content != nil && h.strict(p.Ref.Registry))
	}
	return body, mt, nil
}

var (
	// errNotCached: the bundled registry answered 404; not worth a warning.
	errNotCached  = errors.New("not in the bundled registry")
	errNoRegistry = errors.New("no bundled registry configured")
)

// bundledManifest reads the pinned manifest by digest from the bundled
// registry, accepting every manifest type; it returns the body and the
// registry's Content-Type.
func (h *Handler) bundledManifest(ctx context.Context, p *pins.Pin) ([]byte, string, error) {
	dgst := digest.Digest(p.Digest)
	resp, err := h.bundled.Open(ctx, http.MethodGet, p.Ref.CacheRepository(), "manifests", dgst, defaultAcceptHeader, "", userAgent)
	if err != nil {
		return nil, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	name := p.Ref.CacheRepository() + "@" + p.Digest
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return nil, "", errNotCached
	default:
		return nil, "", registryclient.ResponseError("fetch manifest", name, resp)
	}
	limit := int64(maxManifestSize)
	if p.Size > 0 {
		limit = p.Size
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, "", fmt.Errorf("fetch manifest %s: read body: %w", name, err)
	}
	return body, resp.Header.Get("Content-Type"), nil
}

// verify checks a manifest against the pinned digest and, when known, size.
func verify(body []byte, dgst digest.Digest, size int64) error {
	if size > 0 && int64(len(body)) != size {
		return fmt.Errorf("manifest %s: got %d bytes, pinned size is %d", dgst, len(body), size)
	}
	if len(body) > maxManifestSize {
		return fmt.Errorf("manifest %s: more than %d bytes", dgst, maxManifestSize)
	}
	if got := dgst.Algorithm().FromBytes(body); got != dgst {
		return fmt.Errorf("manifest %s: content hashes to %s", dgst, got)
	}
	return nil
}
