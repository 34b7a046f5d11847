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
// digest they are still a 404 that sends containerd upstream.
//
// Accept: a manifest addressed by digest, or a pinned tag, has exactly one
// right answer, so the client's Accept never changes it. The mirror asks the
// bundled registry (and the upstream) with every manifest type, whatever the
// client sent (distribution answers 404 to an OCI manifest whose type the
// Accept does not name, which made "*/*", text/html or Docker-only clients
// miss the cache and go upstream), and the cache answers any Accept.
// Content-Type is always the manifest's own media type (for a pinned tag,
// the pin's): the bytes cannot be converted without changing the digest,
// and the OCI distribution spec lets a registry answer with the stored type;
// a client that cannot parse it fails as it would on such a registry, which
// is better than a 404 that sends it to an unpinned upstream. A request the
// cache cannot answer takes the registry path. A GET by digest that misses reads the manifest
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
//   - A single range that starts at or beyond the end of content the bundled
//     registry has is answered 416 SIZE_INVALID with the registry's
//     "Content-Range: bytes */<size>", without a warning (the client's
//     mistake). "bytes=-0" (a suffix of nothing) is ignored like any other
//     unsatisfiable-by-definition range: 200 with the whole content, never
//     the 206 "bytes N-(N-1)/N" Go's http.ServeContent would send.
//   - A pinned tag whose bytes cannot be produced on GET is answered 503, not
//     404 (see serveManifestGET).
//   - Streams are bounded by progress, not length: a source that sends no
//     chunk, or a client that takes no chunk, for Options.StreamProgress
//     drops both connections; a pinned manifest's read from the upstream is
//     bounded whole (Options.UpstreamTimeout). pkg/httplimits has the values.
//
// Names: ns is mapped with pins.RegistryFromNS (registry-1.docker.io and
// index.docker.io are docker.io; ports are kept, "localhost%3A5000" is
// decoded). containerd already sends Docker Hub's official images as
// "library/nginx"; a single-component docker.io name is given the "library/"
// prefix too, as Docker Hub does. The bundled registry is asked only for
// repositories the pin table holds, under pins.Reference.CacheRepository.
package mirror
