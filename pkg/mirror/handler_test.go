package mirror

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/tagger-project/tagger/pkg/pins"
)

// TestServe walks the answer table of the package documentation, one row
// per case, against a fake bundled registry and a fake upstream.
func TestServe(t *testing.T) {
	reg, srv := newRegistry(t)
	up := newUpstream()
	h := newHandler(t, srv.URL, up)

	nginxD := nginxPin.digest().String()
	blobD := blobDigest().String()
	tagPath := "/v2/library/nginx/manifests/1.27"
	blobPath := "/v2/library/nginx/blobs/" + blobD
	oneTag := func(ns string) string { return tagPath + "?ns=" + ns }
	pinHeaders := map[string]string{
		"Docker-Content-Digest": nginxD,
		"Content-Type":          nginxPin.mediaType,
		"Content-Length":        strconv.Itoa(len(nginxPin.body)),
	}

	tests := []struct {
		name    string
		method  string
		target  string
		hdr     []string // request header pairs
		status  int
		code    string            // OCI error code of the body
		headers map[string]string // expected response headers
		body    []byte            // expected body; nil: not checked
		// registry: whether the bundled registry may be asked.
		registry bool
	}{
		// Ping.
		{name: "ping GET", method: "GET", target: "/v2/", status: 200,
			headers: map[string]string{"Docker-Distribution-API-Version": "registry/2.0"}, body: []byte("{}")},
		{name: "ping HEAD without slash", method: "HEAD", target: "/v2", status: 200,
			headers: map[string]string{"Docker-Distribution-API-Version": "registry/2.0"}, body: []byte{}},

		// Pinned tag: HEAD from memory, every docker.io alias.
		{name: "HEAD pinned ns=docker.io", method: "HEAD", target: oneTag("docker.io"), status: 200, headers: pinHeaders, body: []byte{}},
		{name: "HEAD pinned ns=registry-1.docker.io", method: "HEAD", target: oneTag("registry-1.docker.io"), status: 200, headers: pinHeaders},
		{name: "HEAD pinned ns=index.docker.io", method: "HEAD", target: oneTag("index.docker.io"), status: 200, headers: pinHeaders},
		{name: "HEAD pinned without library/", method: "HEAD", target: "/v2/nginx/manifests/1.27?ns=docker.io", status: 200, headers: pinHeaders},
		{name: "HEAD pinned ns among other params", method: "HEAD", target: tagPath + "?x=1&ns=docker.io", status: 200, headers: pinHeaders},
		{name: "HEAD pinned ns with port, encoded as containerd does", method: "HEAD",
			target: "/v2/team/app/manifests/v1?ns=localhost%3A5000", status: 200,
			headers: map[string]string{"Docker-Content-Digest": appPin.digest().String(), "Content-Type": appPin.mediaType}},
		{name: "HEAD pinned ns with port, raw", method: "HEAD", target: "/v2/team/app/manifests/v1?ns=localhost:5000", status: 200,
			headers: map[string]string{"Docker-Content-Digest": appPin.digest().String()}},

		// Pinned tag: GET.
		{name: "GET pinned from bundled registry", method: "GET", target: oneTag("docker.io"), status: 200,
			hdr: []string{"Accept", "application/vnd.oci.image.index.v1+json, */*"}, headers: pinHeaders, body: nginxPin.body, registry: true},
		{name: "GET pinned from upstream when not cached", method: "GET", target: "/v2/library/redis/manifests/7?ns=docker.io", status: 200,
			headers: map[string]string{"Docker-Content-Digest": redisPin.digest().String(), "Content-Type": redisPin.mediaType},
			body:    redisPin.body, registry: true},
		{name: "GET pinned, bundled registry has wrong bytes, no upstream copy", method: "GET", target: "/v2/o/broken/manifests/v1?ns=quay.io",
			status: 503, code: "UNAVAILABLE", registry: true},

		// Not pinned: 404 from memory.
		{name: "HEAD unpinned tag", method: "HEAD", target: "/v2/library/nginx/manifests/1.28?ns=docker.io", status: 404, code: "", body: []byte{}},
		{name: "GET unpinned tag", method: "GET", target: "/v2/library/nginx/manifests/1.28?ns=docker.io", status: 404, code: "MANIFEST_UNKNOWN"},
		{name: "GET unpinned repository", method: "GET", target: "/v2/library/busybox/manifests/1.27?ns=docker.io", status: 404, code: "MANIFEST_UNKNOWN"},
		{name: "GET pinned tag of another registry", method: "GET", target: oneTag("ghcr.io"), status: 404, code: "MANIFEST_UNKNOWN"},

		// By digest, pinned repository: from the bundled registry.
		{name: "GET manifest by digest", method: "GET", target: "/v2/library/nginx/manifests/" + nginxD + "?ns=docker.io",
			hdr: []string{"Accept", nginxPin.mediaType}, status: 200, body: nginxPin.body, registry: true,
			headers: map[string]string{"Docker-Content-Digest": nginxD, "Content-Type": nginxPin.mediaType, "Etag": `"` + nginxD + `"`,
				"Content-Length": strconv.Itoa(len(nginxPin.body))}},
		{name: "GET manifest by digest, ':' encoded", method: "GET", target: "/v2/library/nginx/manifests/" + strings.Replace(nginxD, ":", "%3A", 1) + "?ns=docker.io",
			status: 200, body: nginxPin.body, registry: true},
		{name: "HEAD manifest by digest", method: "HEAD", target: "/v2/library/nginx/manifests/" + nginxD + "?ns=registry-1.docker.io",
			status: 200, body: []byte{}, registry: true,
			headers: map[string]string{"Docker-Content-Digest": nginxD, "Content-Length": strconv.Itoa(len(nginxPin.body))}},
		{name: "GET manifest by digest not cached", method: "GET", target: "/v2/library/redis/manifests/" + redisPin.digest().String() + "?ns=docker.io",
			status: 404, code: "MANIFEST_UNKNOWN", registry: true},
		{name: "GET blob", method: "GET", target: blobPath + "?ns=docker.io", status: 200, body: blob, registry: true,
			headers: map[string]string{"Docker-Content-Digest": blobD, "Content-Length": strconv.Itoa(len(blob)), "Accept-Ranges": "bytes",
				"Content-Type": "application/octet-stream"}},
		{name: "HEAD blob", method: "HEAD", target: blobPath + "?ns=docker.io", status: 200, body: []byte{}, registry: true,
			headers: map[string]string{"Content-Length": strconv.Itoa(len(blob))}},
		{name: "GET blob range", method: "GET", target: blobPath + "?ns=docker.io", hdr: []string{"Range", "bytes=16-31"},
			status: 206, body: blob[16:32], registry: true,
			headers: map[string]string{"Content-Range": "bytes 16-31/" + strconv.Itoa(len(blob)), "Content-Length": "16"}},
		{name: "GET blob open range", method: "GET", target: blobPath + "?ns=docker.io", hdr: []string{"Range", "bytes=131000-"},
			status: 206, body: blob[131000:], registry: true},
		{name: "GET blob multi-range served whole", method: "GET", target: blobPath + "?ns=docker.io", hdr: []string{"Range", "bytes=0-1,5-6"},
			status: 200, body: blob, registry: true},
		{name: "GET blob unknown to bundled registry", method: "GET", target: "/v2/library/nginx/blobs/sha256:" + strings.Repeat("0", 64) + "?ns=docker.io",
			status: 404, code: "BLOB_UNKNOWN", registry: true},

		// By digest, repository not pinned: 404 without a round trip.
		{name: "GET blob unpinned repository", method: "GET", target: "/v2/library/busybox/blobs/" + blobD + "?ns=docker.io", status: 404, code: "BLOB_UNKNOWN"},
		{name: "GET manifest by digest unpinned repository", method: "GET", target: "/v2/library/busybox/manifests/" + nginxD + "?ns=docker.io", status: 404, code: "MANIFEST_UNKNOWN"},
		{name: "GET blob, pinned repository but other registry", method: "GET", target: blobPath + "?ns=quay.io", status: 404, code: "BLOB_UNKNOWN"},

		// Missing ns.
		{name: "no ns", method: "HEAD", target: tagPath, status: 404, body: []byte{}},
		{name: "no ns GET", method: "GET", target: tagPath, status: 404, code: "NAME_UNKNOWN"},
		{name: "empty ns", method: "GET", target: tagPath + "?ns=", status: 404, code: "NAME_UNKNOWN"},
		{name: "no ns blob", method: "GET", target: blobPath + "?other=docker.io", status: 404, code: "NAME_UNKNOWN"},

		// Writes.
		{name: "PUT manifest", method: "PUT", target: oneTag("docker.io"), status: 405, code: "UNSUPPORTED", headers: map[string]string{"Allow": "GET, HEAD"}},
		{name: "POST upload", method: "POST", target: "/v2/library/nginx/blobs/uploads/?ns=docker.io", status: 405, code: "UNSUPPORTED", headers: map[string]string{"Allow": "GET, HEAD"}},
		{name: "PATCH", method: "PATCH", target: "/v2/library/nginx/blobs/uploads/x?ns=docker.io", status: 405, code: "UNSUPPORTED"},
		{name: "DELETE blob", method: "DELETE", target: blobPath + "?ns=docker.io", status: 405, code: "UNSUPPORTED"},
		{name: "OPTIONS", method: "OPTIONS", target: "/v2/", status: 405, code: "UNSUPPORTED"},

		// Invalid requests: 400 on the manifests and blobs routes.
		{name: "uppercase repository", method: "GET", target: "/v2/Library/nginx/manifests/1.27?ns=docker.io", status: 400, code: "NAME_INVALID"},
		{name: "traversal in name", method: "GET", target: "/v2/library/../nginx/manifests/1.27?ns=docker.io", status: 400, code: "NAME_INVALID"},
		{name: "dot component", method: "GET", target: "/v2/./library/nginx/blobs/" + blobD + "?ns=docker.io", status: 400, code: "NAME_INVALID"},
		{name: "encoded traversal", method: "GET", target: "/v2/library/%2e%2e/nginx/manifests/1.27?ns=docker.io", status: 400, code: "NAME_INVALID"},
		{name: "encoded traversal uppercase", method: "GET", target: "/v2/library/%2E%2E/nginx/blobs/" + blobD + "?ns=docker.io", status: 400, code: "NAME_INVALID"},
		{name: "encoded slash", method: "GET", target: "/v2/library%2fnginx/manifests/1.27?ns=docker.io", status: 400, code: "NAME_INVALID"},
		{name: "empty component", method: "GET", target: "/v2/library//nginx/manifests/1.27?ns=docker.io", status: 400, code: "NAME_INVALID"},
		{name: "empty name", method: "GET", target: "/v2//manifests/1.27?ns=docker.io", status: 400, code: "NAME_INVALID"},
		{name: "bad separator", method: "GET", target: "/v2/library/ng..inx/manifests/1.27?ns=docker.io", status: 400, code: "NAME_INVALID"},
		{name: "name too long", method: "GET", target: "/v2/" + strings.Repeat("a/", 128) + "b/manifests/1.27?ns=docker.io", status: 400, code: "NAME_INVALID"},
		{name: "tag starting with a dot", method: "GET", target: "/v2/library/nginx/manifests/.1?ns=docker.io", status: 400, code: "TAG_INVALID"},
		{name: "tag traversal", method: "GET", target: "/v2/library/nginx/manifests/..?ns=docker.io", status: 400, code: "TAG_INVALID"},
		{name: "tag encoded traversal", method: "GET", target: "/v2/library/nginx/manifests/%2e%2e%2fx?ns=docker.io", status: 400, code: "TAG_INVALID"},
		{name: "tag too long", method: "HEAD", target: "/v2/library/nginx/manifests/" + strings.Repeat("a", 129) + "?ns=docker.io", status: 400},
		{name: "empty tag", method: "GET", target: "/v2/library/nginx/manifests/?ns=docker.io", status: 400, code: "TAG_INVALID"},
		{name: "short digest", method: "GET", target: "/v2/library/nginx/manifests/sha256:abc?ns=docker.io", status: 400, code: "DIGEST_INVALID"},
		{name: "uppercase digest", method: "GET", target: "/v2/library/nginx/blobs/" + strings.ToUpper(blobD) + "?ns=docker.io", status: 400, code: "DIGEST_INVALID"},
		{name: "blob by tag", method: "GET", target: "/v2/library/nginx/blobs/latest?ns=docker.io", status: 400, code: "DIGEST_INVALID"},
		{name: "unknown algorithm", method: "GET", target: "/v2/library/nginx/blobs/md5:" + strings.Repeat("0", 32) + "?ns=docker.io", status: 400, code: "DIGEST_INVALID"},

		// Anything else: 404.
		{name: "catalog", method: "GET", target: "/v2/_catalog", status: 404, code: "UNSUPPORTED"},
		{name: "tags list", method: "GET", target: "/v2/library/nginx/tags/list?ns=docker.io", status: 404, code: "UNSUPPORTED"},
		{name: "blob upload status", method: "GET", target: "/v2/library/nginx/blobs/uploads/x?ns=docker.io", status: 404, code: "UNSUPPORTED"},
		{name: "outside /v2", method: "GET", target: "/healthz", status: 404, code: "UNSUPPORTED"},
		{name: "root", method: "GET", target: "/", status: 404, code: "UNSUPPORTED"},
		{name: "traversal outside the routes", method: "GET", target: "/v2/../../etc/passwd", status: 404, code: "UNSUPPORTED"},
		{name: "v2 prefix only", method: "GET", target: "/v2x/library/nginx/manifests/1.27?ns=docker.io", status: 404, code: "UNSUPPORTED"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(reg.seen())
			w := do(h, tc.method, tc.target, tc.hdr...)
			if w.Code != tc.status {
				t.Fatalf("status = %d, want %d; body %s", w.Code, tc.status, w.Body)
			}
			if tc.code != "" {
				if got := errorCode(w.Body.Bytes()); got != tc.code {
					t.Errorf("error code = %q, want %q; body %s", got, tc.code, w.Body)
				}
				if ct := w.Header().Get("Content-Type"); ct != "application/json" {
					t.Errorf("error Content-Type = %q", ct)
				}
				if cl := w.Header().Get("Content-Length"); cl != strconv.Itoa(w.Body.Len()) {
					t.Errorf("error Content-Length = %q, body is %d bytes", cl, w.Body.Len())
				}
			}
			for k, v := range tc.headers {
				if got := w.Header().Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
			if tc.body != nil && !bytes.Equal(w.Body.Bytes(), tc.body) {
				t.Errorf("body = %d bytes %.80q, want %d bytes %.80q", w.Body.Len(), w.Body, len(tc.body), tc.body)
			}
			if !tc.registry && len(reg.seen()) != before {
				t.Errorf("the bundled registry was asked: %+v", reg.seen()[before:])
			}
			if w.Code >= 300 && w.Code < 400 {
				t.Errorf("answered a redirect")
			}
		})
	}
}

// TestHeadPinnedNoIO checks that resolving a pinned tag needs neither the
// bundled registry nor the upstream: both are absent or broken here.
func TestHeadPinnedNoIO(t *testing.T) {
	up := newUpstream()
	h, err := New(Options{Table: newTable(t, nginxPin), RegistryURL: "http://127.0.0.1:1", Upstream: up})
	if err != nil {
		t.Fatal(err)
	}
	w := do(h, "HEAD", "/v2/library/nginx/manifests/1.27?ns=docker.io")
	if w.Code != 200 || w.Header().Get("Docker-Content-Digest") != nginxPin.digest().String() {
		t.Fatalf("HEAD = %d %v", w.Code, w.Header())
	}
	if len(up.seen()) != 0 {
		t.Fatalf("upstream asked: %v", up.seen())
	}
}

// TestTableSwap checks that answers follow the table's current snapshot.
func TestTableSwap(t *testing.T) {
	tbl := pins.NewTable()
	h, err := New(Options{Table: tbl})
	if err != nil {
		t.Fatal(err)
	}
	target := "/v2/library/nginx/manifests/1.27?ns=docker.io"
	if w := do(h, "HEAD", target); w.Code != 404 {
		t.Fatalf("empty table: %d", w.Code)
	}
	tbl.Store(newTable(t, nginxPin).Load())
	if w := do(h, "HEAD", target); w.Code != 200 {
		t.Fatalf("after Store: %d", w.Code)
	}
}

func TestNew(t *testing.T) {
	tbl := pins.NewTable()
	for _, tc := range []struct {
		name string
		o    Options
		ok   bool
	}{
		{"minimal", Options{Table: tbl}, true},
		{"registry", Options{Table: tbl, RegistryURL: "http://tagger-registry.tagger-system.svc:5000/"}, true},
		{"https registry", Options{Table: tbl, RegistryURL: "https://r.example"}, true},
		{"no table", Options{RegistryURL: "http://r:5000"}, false},
		{"no scheme", Options{Table: tbl, RegistryURL: "tagger-registry:5000"}, false},
		{"bad scheme", Options{Table: tbl, RegistryURL: "ftp://r"}, false},
		{"query", Options{Table: tbl, RegistryURL: "http://r:5000?x=1"}, false},
		{"credentials", Options{Table: tbl, RegistryURL: "http://u:p@r:5000"}, false},
		{"unparsable", Options{Table: tbl, RegistryURL: "http://[::1"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := New(tc.o)
			if (err == nil) != tc.ok {
				t.Fatalf("New: %v, want ok=%v", err, tc.ok)
			}
			if err != nil && strings.Contains(err.Error(), "u:p@") {
				t.Errorf("error leaks credentials: %v", err)
			}
			if tc.ok && h.bundled != nil && strings.HasSuffix(h.bundled.URL(), "/") {
				t.Errorf("registry %q keeps a trailing slash", h.bundled.URL())
			}
		})
	}
}

// TestHeaderNames makes sure the headers set by direct map assignment use
// canonical keys, or Get would not find them.
func TestHeaderNames(t *testing.T) {
	for _, k := range append([]string{"Docker-Content-Digest", "Docker-Distribution-Api-Version", "Content-Type", "Content-Length", "Allow"}, passHeaders...) {
		if c := http.CanonicalHeaderKey(k); c != k {
			t.Errorf("%q is not canonical (%q)", k, c)
		}
	}
}
