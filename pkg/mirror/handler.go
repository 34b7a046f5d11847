package mirror

import (
	"net/http"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/tagger-project/tagger/pkg/pins"
	"github.com/tagger-project/tagger/pkg/registryclient"
)

// Handler serves the mirror API. It is safe for concurrent use.
type Handler struct {
	table    *pins.Table
	bundled  *registryclient.Endpoint // nil: no bundled registry
	upstream ManifestFetcher
	content  ContentOpener
	strict   func(registry string) bool
	metrics  *Metrics
	cache    *manifestCache // nil: disabled
	log      logrus.FieldLogger
	debug    func() bool
	// upstreamTimeout bounds a pinned manifest's read from the upstream.
	upstreamTimeout time.Duration
	// streamProgress bounds each chunk of a streamed body (0: no bound).
	streamProgress time.Duration
}

// ServeHTTP answers one request (see the package documentation).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	k, res := h.serve(w, r)
	h.metrics.observe(k, res, start)
	if h.debug() {
		h.log.WithFields(logrus.Fields{
			"method": r.Method, "path": r.URL.Path, "ns": r.URL.Query().Get("ns"),
			"kind": kindNames[k], "result": resultNames[res], "duration": time.Since(start),
		}).Debug("mirror request")
	}
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request) (kind, result) {
	rt := parseRoute(r.URL.EscapedPath())
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		errMethod.write(w, r)
		return rt.kind, resultMethodNotAllowed
	}
	switch {
	case rt.kind == kindPing:
		hd := w.Header()
		hd["Docker-Distribution-Api-Version"] = hdrAPIVersion
		hd["Content-Type"] = hdrJSON
		hd["Content-Length"] = hdrTwo
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			_, _ = w.Write(emptyJSON)
		}
		return kindPing, resultOK
	case rt.kind == kindOther:
		errNotServed.write(w, r)
		return kindOther, resultBadRequest
	case rt.invalid != nil:
		rt.invalid.write(w, r)
		return rt.kind, resultBadRequest
	}
	ns, ok := queryNS(r.URL.RawQuery)
	if !ok {
		errNoNamespace.write(w, r)
		return rt.kind, resultBadRequest
	}
	reg := pins.RegistryFromNS(ns)
	repo := rt.name
	if reg == pins.DockerHub && strings.IndexByte(repo, '/') < 0 {
		// containerd already sends "library/nginx"; other clients may not,
		// and Docker Hub treats both the same.
		repo = "library/" + repo
	}
	snap := h.table.Load()
	if rt.kind == kindManifestTag {
		pin, ok := snap.Lookup(reg, repo, rt.ref)
		if !ok {
			errTagNotPinned.write(w, r)
			return rt.kind, resultUnpinnedMiss
		}
		if r.Method == http.MethodHead {
			writePinHeaders(w, &pin)
			w.WriteHeader(http.StatusOK)
			return rt.kind, resultPinnedHit
		}
		return rt.kind, h.serveManifestGET(w, r, &pin)
	}
	if !snap.RepositoryPinned(reg, repo) {
		if rt.kind == kindBlob {
			errBlobRepoNotPinned.write(w, r)
		} else {
			errManifestRepoNotPinned.write(w, r)
		}
		return rt.kind, resultUnpinnedMiss
	}
	// reg and repo name a pinned repository here, so the URL built from
	// them names only what the node agent put in the bundled registry.
	return rt.kind, h.proxy(w, r, rt.kind, pins.Reference{Registry: reg, Repository: repo}, rt.ref)
}

var (
	hdrTwo    = []string{"2"}
	emptyJSON = []byte("{}")
)
