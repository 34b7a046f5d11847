package mirror

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// FuzzParseRoute: any raw path parses without panicking, and whatever the
// route accepts as valid names a repository, tag or digest of the
// distribution grammar: no '%', no "." or ".." component, no empty one.
func FuzzParseRoute(f *testing.F) {
	for _, s := range []string{
		"/v2/", "/v2", "/v2/library/nginx/manifests/1.27", "/v2/a/blobs/sha256:" + strings.Repeat("a", 64),
		"/v2/a/manifests/sha256%3A" + strings.Repeat("0", 64), "/v2/../manifests/x", "/v2/a/%2e%2e/manifests/x",
		"/v2/a//b/manifests/x", "/v2/manifests/manifests/manifests", "/v2/a/blobs/uploads/", "/v2/a/manifests/%zz",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		rt := parseRoute(raw)
		if rt.kind > kindOther {
			t.Fatalf("kind %d", rt.kind)
		}
		if rt.invalid != nil || (rt.kind != kindManifestTag && rt.kind != kindManifestDigest && rt.kind != kindBlob) {
			return
		}
		if strings.Contains(rt.name, "%") || strings.Contains(rt.name, "//") || !validRepository(rt.name) {
			t.Fatalf("accepted name %q", rt.name)
		}
		for _, c := range strings.Split(rt.name, "/") {
			if c == "." || c == ".." || c == "" {
				t.Fatalf("accepted component %q in %q", c, rt.name)
			}
		}
		if rt.kind == kindManifestTag && !validTag(rt.ref) || rt.kind != kindManifestTag && !validDigest(rt.ref) {
			t.Fatalf("accepted reference %q as %s", rt.ref, kindNames[rt.kind])
		}
	})
}

// FuzzQueryNS: the ns parameter decodes without panicking and is never
// empty when accepted.
func FuzzQueryNS(f *testing.F) {
	for _, s := range []string{"ns=docker.io", "ns=localhost%3A5000", "a=b&ns=quay.io", "ns=", "ns=%zz", "ns=a+b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		if v, ok := queryNS(q); ok && v == "" {
			t.Fatal("accepted an empty ns")
		}
	})
}

// FuzzSingleRange: a Range forwarded is exactly one satisfiable-looking
// "bytes=" range; never "bytes=-0", never an inverted one.
func FuzzSingleRange(f *testing.F) {
	for _, s := range []string{"bytes=0-", "bytes=10-19", "bytes=-5", "bytes=-0", "bytes=5-1", "bytes=0-1,3-4", "items=0-1", "bytes=-", "bytes=99999999999999999999-"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		got, ok := singleRange(http.Header{"Range": {v}})
		if !ok {
			return
		}
		spec, found := strings.CutPrefix(got, "bytes=")
		first, last, dash := strings.Cut(spec, "-")
		if !found || !dash || strings.Contains(spec, ",") || (first == "" && strings.Trim(last, "0") == "") {
			t.Fatalf("forwarded %q", got)
		}
	})
}

// FuzzServeHTTP: any method, path, query and headers get an answer that is
// never a redirect and never a 5xx other than the pinned tag's 503, with an
// OCI JSON body on every error; no panic. No registry and no upstream are
// configured, so nothing leaves the process.
func FuzzServeHTTP(f *testing.F) {
	for _, s := range [][4]string{
		{"GET", "/v2/library/nginx/manifests/1.27?ns=docker.io", "", ""},
		{"HEAD", "/v2/library/nginx/manifests/1.27?ns=docker.io", "*/*", ""},
		{"GET", "/v2/library/nginx/blobs/" + blobDigest().String() + "?ns=docker.io", "", "bytes=-0"},
		{"DELETE", "/v2/library/nginx/manifests/1.27?ns=docker.io", "", ""},
		{"GET", "/v2/team/app/manifests/v1?ns=localhost%3A5000", "text/html", "bytes=0-"},
		{"OPTIONS", "*", "", ""},
		{"GET", "/v2/..%2f..%2fetc/manifests/x?ns=docker.io", "", ""},
	} {
		f.Add(s[0], s[1], s[2], s[3])
	}
	h := newFuzzHandler(f)
	f.Fuzz(func(t *testing.T, method, target, accept, rng string) {
		if method == "" || strings.ContainsAny(method, " \t\r\n") {
			return
		}
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		r := &http.Request{Method: method, URL: u, RequestURI: target, Header: http.Header{}, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
		if accept != "" {
			r.Header.Set("Accept", accept)
		}
		if rng != "" {
			r.Header.Set("Range", rng)
		}
		r = r.WithContext(t.Context())
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		switch {
		case w.Code >= 300 && w.Code < 400:
			t.Fatalf("%s %s: redirect %d", method, target, w.Code)
		case w.Code >= 500 && w.Code != http.StatusServiceUnavailable:
			t.Fatalf("%s %s: %d", method, target, w.Code)
		case w.Code >= 400 && method != http.MethodHead && !bytes.HasPrefix(w.Body.Bytes(), []byte(`{"errors":[{"code":"`)):
			t.Fatalf("%s %s: %d with body %q", method, target, w.Code, w.Body)
		}
	})
}

func newFuzzHandler(f *testing.F) *Handler {
	h, err := New(Options{Table: newTable(f, nginxPin, redisPin, appPin, brokenPin), Metrics: NewMetrics(nil)})
	if err != nil {
		f.Fatal(err)
	}
	return h
}
