// Package mirror is the node-local OCI pull API that containerd asks before
// the real registry (through hosts.toml, which makes containerd append
// ?ns=<registry> to every request).
//
// It answers from the pin table: a HEAD of a pinned tag is answered from
// memory alone (that is how containerd resolves), a GET of a pinned tag
// returns exactly the pinned manifest bytes (verified against the pinned
// digest), and content of pinned repositories is streamed by digest from the
// bundled registry. Everything else gets a 404 at once so containerd falls
// through to the next host, the upstream registry: content fetched there by
// digest is still the pinned content.
//
// Manifest cache: verified manifest bytes are kept in memory, bounded by
// Options.ManifestCacheBytes (16 MiB by default, negative disables; least
// recently used out first; a manifest over an eighth of the bound is not
// kept), keyed by registry, repository and digest. Bytes are inserted only
// after they hashed to the digest (the cache checks it itself), so a hit can
// never send bytes under a digest they do not hash to, and since the key is
// a digest an entry is never stale: a pin that moves needs no invalidation.
// It answers a pinned tag's GET and a manifest GET or HEAD by digest without
// Range, with no round trip, and it answers only what the bundled registry
// would have: an entry answers by digest only in the repository it was read
// from and only if it was read from the bundled registry (or, for a strict
// registry, from the upstream by digest); bytes a pinned tag's GET fetched
// from the upstream of an ordinary registry serve that tag only, so by
// digest they are still a 404 that sends containerd upstream. distribution's
// Accept rule is kept: an OCI image manifest or index is answered from the
// cache only when the request's Accept names its media type ("*/*" alone is
// not enough; no Accept at all is, since the mirror then asks with every
// manifest type); Docker media types always. Any other request takes the
// registry path unchanged. A GET by digest that misses reads the manifest
// whole (when its Content-Length is within the per-entry bound), checks it,
// caches it, then sends it; bytes that do not hash to the digest get a 404
// and are never sent. Concurrent misses of one manifest are collapsed into
// one read of the bundled registry.
//
// Status decisions where the protocol leaves room:
//   - No response is ever a 3xx: containerd treats a redirect it does not
//     follow as a hard failure. Redirects of the bundled registry (an S3
//     driver's 307) are followed server side, and the handler does not use
//     http.ServeMux, which would answer unclean paths with a 301.
//   - A syntactically invalid request on the manifests or blobs routes (bad
//     repository name, path traversal raw or percent-encoded, bad tag, bad
//     digest) is answered 400 with NAME_INVALID, TAG_INVALID or
//     DIGEST_INVALID, always, before the pin table is consulted: the client
//     sent something no registry can serve, and containerd moves on to the
//     next host on any status above 399 just as on a 404.
//   - A request without ?ns= is answered 404 NAME_UNKNOWN: the mirror cannot
//     know which registry it is about.
//   - Any method other than GET and HEAD is answered 405 UNSUPPORTED with
//     Allow: GET, HEAD, whatever the path.
//   - Other paths (/v2/_catalog, tags/list, ...) are answered 404 UNSUPPORTED.
//   - A Range header that is not one "bytes=" range (several ranges, another
//     unit, malformed) is ignored and the whole content is served with 200,
//     as RFC 9110 section 14.2 allows; containerd only sends "bytes=N-" and
//     copes with a 200 by discarding up to its offset.
//   - A pinned tag whose bytes cannot be produced on GET is answered 503, not
//     404 (see serveManifestGET).
//
// Names: ns is mapped with pins.RegistryFromNS (registry-1.docker.io and
// index.docker.io are docker.io; ports are kept, "localhost%3A5000" is
// decoded). containerd already sends Docker Hub's official images as
// "library/nginx"; a single-component docker.io name is given the "library/"
// prefix too, as Docker Hub does. The bundled registry is asked only for
// repositories the pin table holds, under pins.Reference.CacheRepository.
package mirror
