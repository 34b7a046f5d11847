package mirror

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// ociError is a prebuilt OCI error response. Every error the mirror answers
// has a fixed message, so bodies and header values are built once: a miss
// costs no encoding.
type ociError struct {
	status int
	body   []byte
	// length is the Content-Length header value; shared, read-only.
	length []string
}

func newOCIError(status int, code, message string) *ociError {
	type entry struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	body, err := json.Marshal(struct {
		Errors []entry `json:"errors"`
	}{[]entry{{code, message}}})
	if err != nil {
		panic(err) // static input
	}
	return &ociError{status: status, body: body, length: []string{strconv.Itoa(len(body))}}
}

var (
	errTagNotPinned = newOCIError(http.StatusNotFound, "MANIFEST_UNKNOWN",
		"tag is not pinned on this node; ask the next host")
	errManifestRepoNotPinned = newOCIError(http.StatusNotFound, "MANIFEST_UNKNOWN",
		"repository is not pinned on this node; ask the next host")
	errBlobRepoNotPinned = newOCIError(http.StatusNotFound, "BLOB_UNKNOWN",
		"repository is not pinned on this node; ask the next host")
	errManifestNotCached = newOCIError(http.StatusNotFound, "MANIFEST_UNKNOWN",
		"manifest is not in the bundled registry; fetch it upstream by digest")
	errBlobNotCached = newOCIError(http.StatusNotFound, "BLOB_UNKNOWN",
		"blob is not in the bundled registry; fetch it upstream by digest")
	errNoNamespace = newOCIError(http.StatusNotFound, "NAME_UNKNOWN",
		"mirror requests need ?ns=<registry host>, as containerd sends for a hosts.toml mirror")
	errNotServed = newOCIError(http.StatusNotFound, "UNSUPPORTED",
		"the node mirror serves only /v2/, manifests and blobs")
	errMethod = newOCIError(http.StatusMethodNotAllowed, "UNSUPPORTED",
		"the node mirror is read-only: GET and HEAD only")
	errNameInvalid = newOCIError(http.StatusBadRequest, "NAME_INVALID",
		"invalid repository name")
	errTagInvalid = newOCIError(http.StatusBadRequest, "TAG_INVALID",
		"invalid tag")
	errDigestInvalid = newOCIError(http.StatusBadRequest, "DIGEST_INVALID",
		"invalid digest")
	errRangeNotSatisfiable = newOCIError(http.StatusRequestedRangeNotSatisfiable, "SIZE_INVALID",
		"the requested range starts beyond the end of the content")
	errPinnedUnavailable = newOCIError(http.StatusServiceUnavailable, "UNAVAILABLE",
		"the pinned manifest could not be read from the bundled registry or upstream")
)

// Shared, read-only header values.
var (
	hdrJSON       = []string{"application/json"}
	hdrAPIVersion = []string{"registry/2.0"}
	hdrAllow      = []string{"GET, HEAD"}
)

// write sends the error; a HEAD gets the headers only.
func (e *ociError) write(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h["Content-Type"] = hdrJSON
	h["Content-Length"] = e.length
	if e.status == http.StatusMethodNotAllowed {
		h["Allow"] = hdrAllow
	}
	w.WriteHeader(e.status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(e.body)
	}
}

// ServerError renders an error net/http's server answers before the
// handler runs (malformed request line, bad percent-escape, headers too
// large) as OCI error JSON, for httplimits.RewriteErrors: such a request
// never named anything the mirror serves, so the code is UNSUPPORTED.
func ServerError(status int, text string) (string, []byte) {
	const code = "UNSUPPORTED"
	if text == "" {
		text = http.StatusText(status)
	}
	return hdrJSON[0], newOCIError(status, code, "rejected before routing: "+text).body
}
