package mirror

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"

	"github.com/tagger-project/tagger/pkg/httplimits"
	"github.com/tagger-project/tagger/pkg/pins"
	"github.com/tagger-project/tagger/pkg/registryclient"
)

// ManifestFetcher reads a manifest by digest from the upstream registry; the
// mirror uses it for a pinned tag's GET when the bundled registry does not
// have the pinned manifest.
type ManifestFetcher interface {
	FetchManifest(ctx context.Context, ref pins.Reference, dgst digest.Digest, accept []string) (body []byte, mediaType string, err error)
}

// Options configure a Handler.
// ContentOpener opens a manifest or blob by digest at the upstream registry
// for streaming (kind "manifests" or "blobs"); the caller closes the body.
type ContentOpener interface {
	Open(ctx context.Context, ref pins.Reference, method, kind string, dgst digest.Digest, accept, rangeHeader string) (*http.Response, error)
}

type Options struct {
	// Table is the pin table to serve; required.
	Table *pins.Table
	// RegistryURL is the bundled registry's base URL
	// ("http://tagger-registry.tagger-system.svc:5000"). Empty means there is
	// none: content by digest is always answered 404.
	RegistryURL string
	// Upstream fetches a pinned manifest by digest when the bundled registry
	// lacks it; may be nil.
	Upstream ManifestFetcher
	// Content streams by-digest content from the upstream for strict
	// registries, where containerd has no other host to fall back to. Nil:
	// never.
	Content ContentOpener
	// Strict reports the registries whose hosts.toml names only the mirror.
	Strict func(registry string) bool
	// HTTPClient talks to the bundled registry; nil means one with
	// httplimits.InCluster's timeouts. It should follow
	// redirects, as http.Client does by default: a 3xx it returns is
	// answered 404, never passed on.
	HTTPClient *http.Client
	// ManifestCacheBytes bounds the cache of verified manifest bytes that
	// answers a pinned tag's GET and manifest GET/HEAD by digest from memory
	// (see the package documentation). 0 means DefaultManifestCacheBytes
	// (16 MiB); a negative value disables the cache. Only manifest bodies
	// are counted, not the few hundred bytes of bookkeeping per entry; a
	// manifest larger than an eighth of the bound is not cached.
	ManifestCacheBytes int64
	// UpstreamTimeout bounds reading a pinned manifest from Upstream, body
	// included; 0 means httplimits.UpstreamManifest.
	UpstreamTimeout time.Duration
	// StreamProgress is how long a streamed manifest or blob may go without
	// a chunk read from the registry and written to the client before both
	// connections are dropped; 0 means httplimits.Mirror.StreamProgress,
	// negative no bound.
	StreamProgress time.Duration
	// Metrics, if nil, are created unregistered.
	Metrics *Metrics
	// Log, if nil, discards.
	Log logrus.FieldLogger
}

// New returns the mirror handler. It is a plain http.Handler on purpose:
// http.ServeMux would answer paths with ".." or "//" with a 301, and
// containerd fails hard on a redirect it does not follow.
func New(o Options) (*Handler, error) {
	if o.Table == nil {
		return nil, errors.New("mirror: Options.Table is required")
	}
	h := &Handler{
		table:    o.Table,
		upstream: o.Upstream,
		content:  o.Content,
		strict:   o.Strict,
		metrics:  o.Metrics,
		log:      o.Log,
	}
	if o.RegistryURL != "" {
		u, err := url.Parse(o.RegistryURL)
		if err != nil {
			// url.Error quotes the whole URL, credentials included.
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err
			}
			return nil, fmt.Errorf("mirror: parse bundled registry URL: %w", err)
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return nil, fmt.Errorf("mirror: bundled registry URL %q: want http(s)://host[:port][/path] without credentials", u.Redacted())
		}
		hc := o.HTTPClient
		if hc == nil {
			// No overall timeout: a large blob may stream for long; the
			// request's context ends it when containerd goes away.
			hc = httplimits.InCluster.HTTPClient()
		}
		if h.bundled, err = registryclient.NewEndpoint(strings.TrimRight(u.String(), "/"), hc); err != nil {
			return nil, fmt.Errorf("mirror: %w", err)
		}
	}
	if h.strict == nil {
		h.strict = func(string) bool { return false }
	}
	if h.metrics == nil {
		h.metrics = NewMetrics(nil)
	}
	h.cache = newManifestCache(o.ManifestCacheBytes, h.metrics)
	if h.log == nil {
		l := logrus.New()
		l.SetLevel(logrus.PanicLevel)
		h.log = l
	}
	h.debug = debugEnabled(h.log)
	h.upstreamTimeout = o.UpstreamTimeout
	if h.upstreamTimeout <= 0 {
		h.upstreamTimeout = httplimits.UpstreamManifest
	}
	switch h.streamProgress = o.StreamProgress; {
	case h.streamProgress == 0:
		h.streamProgress = httplimits.Mirror.StreamProgress
	case h.streamProgress < 0:
		h.streamProgress = 0
	}
	return h, nil
}

// debugEnabled returns a cheap check of whether debug logs would be written,
// so the hot path builds no log fields for nothing.
func debugEnabled(l logrus.FieldLogger) func() bool {
	switch l := l.(type) {
	case *logrus.Logger:
		return func() bool { return l.IsLevelEnabled(logrus.DebugLevel) }
	case *logrus.Entry:
		return func() bool { return l.Logger.IsLevelEnabled(logrus.DebugLevel) }
	}
	return func() bool { return true }
}
