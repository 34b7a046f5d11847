package mirror

import (
	"net/url"
	"strings"
)

// route is what a request path asks for.
type route struct {
	kind kind
	// name is the repository, as in the path ("library/nginx").
	name string
	// ref is the tag or digest, percent-decoded.
	ref string
	// invalid, when not nil, is the 400 answer for a malformed name,
	// tag or digest.
	invalid *ociError
}

// parseRoute splits a raw (still percent-encoded) request path. The route is
// decided by the last two segments, as in distribution's router: a reference
// never contains '/', so ".../manifests/<ref>" and ".../blobs/<digest>" are
// unambiguous even for a repository with a component named "manifests".
// Splitting the raw path means "%2f" never acts as a separator; the name
// must then match the repository grammar, which has no '%', "." or ".."
// components, so traversal, raw or encoded, is rejected with NAME_INVALID.
func parseRoute(raw string) route {
	if raw == "/v2/" || raw == "/v2" {
		return route{kind: kindPing}
	}
	rest, ok := strings.CutPrefix(raw, "/v2/")
	if !ok {
		return route{kind: kindOther}
	}
	i := strings.LastIndexByte(rest, '/')
	if i < 0 {
		return route{kind: kindOther}
	}
	ref, head := rest[i+1:], rest[:i]
	j := strings.LastIndexByte(head, '/')
	if j < 0 {
		return route{kind: kindOther}
	}
	seg, name := head[j+1:], head[:j]

	var rt route
	switch seg {
	case "manifests":
		rt.kind = kindManifestTag
	case "blobs":
		rt.kind = kindBlob
	default:
		return route{kind: kindOther}
	}
	// A digest's ':' may arrive as "%3A"; tags and digests have no other
	// character that needs escaping, so decoding can only reveal junk the
	// checks below reject.
	refOK := true
	if strings.IndexByte(ref, '%') >= 0 {
		d, err := url.PathUnescape(ref)
		ref, refOK = d, err == nil
	}
	if rt.kind == kindManifestTag && strings.IndexByte(ref, ':') >= 0 {
		rt.kind = kindManifestDigest
	}
	rt.name, rt.ref = name, ref
	switch {
	case !validRepository(name):
		rt.invalid = errNameInvalid
	case rt.kind == kindManifestTag && (!refOK || !validTag(ref)):
		rt.invalid = errTagInvalid
	case rt.kind != kindManifestTag && (!refOK || !validDigest(ref)):
		rt.invalid = errDigestInvalid
	}
	return rt
}
