package mirror

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
)

// TestProxyBundledRegistry covers how content by digest is read from the
// bundled registry, and that every failure there becomes a 404 (containerd
// then fetches the digest upstream), never a 3xx or a 5xx.
func TestProxyBundledRegistry(t *testing.T) {
	blobPath := "/v2/docker.io/library/nginx/blobs/" + blobDigest().String()
	target := "/v2/library/nginx/blobs/" + blobDigest().String() + "?ns=docker.io"
	serveBlob := func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != blobPath {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Docker-Content-Digest", blobDigest().String())
		http.ServeContent(w, r, "", nilTime(), bytes.NewReader(blob))
	}
	tests := []struct {
		name string
		// registry answers as the bundled registry; nil: none configured.
		registry http.HandlerFunc
		down     bool // the registry's port is closed
		noFollow bool // an HTTPClient that does not follow redirects
		method   string
		rng      string
		status   int
		body     []byte
	}{
		{name: "served", registry: serveBlob, status: 200, body: blob},
		{name: "HEAD", method: "HEAD", registry: serveBlob, status: 200},
		{name: "range", registry: serveBlob, rng: "bytes=100-199", status: 206, body: blob[100:200]},
		{name: "suffix range", registry: serveBlob, rng: "bytes=-10", status: 206, body: blob[len(blob)-10:]},
		{name: "multi-range: whole", registry: serveBlob, rng: "bytes=0-1,5-6", status: 200, body: blob},
		{name: "other unit: whole", registry: serveBlob, rng: "items=0-1", status: 200, body: blob},
		{name: "backwards range: whole", registry: serveBlob, rng: "bytes=9-1", status: 200, body: blob},
		{name: "404", registry: http.NotFound, status: 404},
		{name: "500", registry: func(w http.ResponseWriter, r *http.Request) { http.Error(w, "boom", 500) }, status: 404},
		{name: "401", registry: func(w http.ResponseWriter, r *http.Request) { http.Error(w, "auth", 401) }, status: 404},
		{name: "unreachable", registry: serveBlob, down: true, status: 404},
		{name: "no registry configured", status: 404},
		{name: "another digest", status: 404, registry: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Docker-Content-Digest", nginxPin.digest().String())
			_, _ = w.Write(nginxPin.body)
		}},
		{name: "redirect followed server side", status: 200, body: blob, registry: func(w http.ResponseWriter, r *http.Request) {
			// The S3 driver's answer; the target is the same server under
			// another path, standing in for the bucket.
			if r.URL.Path == "/bucket" {
				r.URL.Path = blobPath
				if r.Header.Get("Range") != "" {
					http.Error(w, "unexpected range", 500)
					return
				}
				serveBlob(w, r)
				return
			}
			http.Redirect(w, r, "/bucket", http.StatusTemporaryRedirect)
		}},
		{name: "redirected range", rng: "bytes=0-9", status: 206, body: blob[:10], registry: func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/bucket" {
				r.URL.Path = blobPath
				serveBlob(w, r)
				return
			}
			http.Redirect(w, r, "/bucket", http.StatusTemporaryRedirect)
		}},
		{name: "redirect not followed by the client: 404, not 307", noFollow: true, status: 404, registry: func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/bucket", http.StatusTemporaryRedirect)
		}},
		{name: "redirect loop", status: 404, registry: func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, r.URL.Path, http.StatusFound)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := Options{Table: newTable(t, nginxPin)}
			if tc.registry != nil {
				srv := httptest.NewServer(tc.registry)
				o.RegistryURL = srv.URL
				if tc.down {
					srv.Close()
				} else {
					defer srv.Close()
				}
			}
			if tc.noFollow {
				o.HTTPClient = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			}
			h, err := New(o)
			if err != nil {
				t.Fatal(err)
			}
			// Through a real server, as containerd would talk to it.
			mirror := httptest.NewServer(h)
			defer mirror.Close()
			method := tc.method
			if method == "" {
				method = "GET"
			}
			req, _ := http.NewRequest(method, mirror.URL+target, nil)
			if tc.rng != "" {
				req.Header.Set("Range", tc.rng)
			}
			client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = resp.Body.Close() }()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("status = %d, want %d; body %.200s", resp.StatusCode, tc.status, body)
			}
			switch {
			case resp.StatusCode == 404:
				if code := errorCode(body); code != "BLOB_UNKNOWN" {
					t.Errorf("code = %q, want BLOB_UNKNOWN", code)
				}
			case method == "HEAD":
				if resp.ContentLength != int64(len(blob)) || len(body) != 0 {
					t.Errorf("HEAD: ContentLength %d, body %d bytes", resp.ContentLength, len(body))
				}
			default:
				if !bytes.Equal(body, tc.body) {
					t.Errorf("body: %d bytes, want %d", len(body), len(tc.body))
				}
				if resp.ContentLength != int64(len(tc.body)) {
					t.Errorf("ContentLength %d, want %d", resp.ContentLength, len(tc.body))
				}
				if resp.Header.Get("Docker-Content-Digest") != blobDigest().String() {
					t.Errorf("Docker-Content-Digest = %q", resp.Header.Get("Docker-Content-Digest"))
				}
				if tc.status == 206 && resp.Header.Get("Content-Range") == "" {
					t.Error("206 without Content-Range")
				}
				if tc.status == 200 && resp.Header.Get("Content-Range") != "" {
					t.Errorf("200 with Content-Range %q", resp.Header.Get("Content-Range"))
				}
			}
		})
	}
}

// TestProxyForwardedRange checks exactly which Range reaches the registry.
func TestProxyForwardedRange(t *testing.T) {
	for _, tc := range []struct{ in, out string }{
		{"bytes=0-", "bytes=0-"},
		{"bytes=5-9", "bytes=5-9"},
		{"bytes=-5", "bytes=-5"},
		{"", ""},
		{"bytes=0-1,5-6", ""},
		{"bytes=-", ""},
		{"bytes=a-b", ""},
		{"bytes= 0-1", ""},
		{"bytes=9-1", ""},
		{"bytes=99999999999999999999-", ""},
	} {
		t.Run(tc.in, func(t *testing.T) {
			reg, srv := newRegistry(t)
			h, err := New(Options{Table: newTable(t, nginxPin), RegistryURL: srv.URL})
			if err != nil {
				t.Fatal(err)
			}
			var hdr []string
			if tc.in != "" {
				hdr = []string{"Range", tc.in}
			}
			do(h, "GET", "/v2/library/nginx/blobs/"+blobDigest().String()+"?ns=docker.io", hdr...)
			seen := reg.seen()
			if len(seen) != 1 || seen[0].rng != tc.out {
				t.Fatalf("registry saw %+v, want Range %q", seen, tc.out)
			}
		})
	}
}

// TestNeverRedirect sends paths that http.ServeMux would redirect (and a
// redirecting registry behind) through a real server: no answer is a 3xx.
func TestNeverRedirect(t *testing.T) {
	redirecting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/elsewhere", http.StatusMovedPermanently)
	}))
	defer redirecting.Close()
	h, err := New(Options{
		Table: newTable(t, nginxPin), RegistryURL: redirecting.URL,
		HTTPClient: &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	for _, p := range []string{
		"/v2", "/v2//", "//v2/", "/v2/library/../library/nginx/manifests/1.27?ns=docker.io",
		"/v2/library/nginx/manifests/1.27/?ns=docker.io", "/v2/./library/nginx/blobs/x",
		"/v2/library/nginx/blobs/" + blobDigest().String() + "?ns=docker.io",
		"/v2/library/nginx/manifests/" + nginxPin.digest().String() + "?ns=docker.io",
		"/v2/library/nginx/manifests/1.27?ns=docker.io",
	} {
		for _, m := range []string{"GET", "HEAD"} {
			req, _ := http.NewRequest(m, srv.URL, nil)
			req.URL.Opaque = p // sent as is, uncleaned
			if i := indexQuery(p); i >= 0 {
				req.URL.Opaque, req.URL.RawQuery = p[:i], p[i+1:]
			}
			resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode >= 300 && resp.StatusCode < 400 {
				t.Errorf("%s %s: %d", m, p, resp.StatusCode)
			}
		}
	}
}

func indexQuery(p string) int {
	for i := range len(p) {
		if p[i] == '?' {
			return i
		}
	}
	return -1
}

// TestProxyLargeBlob streams more than one copy buffer and counts bytes.
func TestProxyLargeBlob(t *testing.T) {
	big := bytes.Repeat([]byte{7}, 3*copyBufferSize+123)
	reg := &fakeRegistry{}
	d := digestOf(big)
	reg.put("/v2/docker.io/library/nginx/blobs/"+d, content{body: big, mediaType: "application/octet-stream"})
	srv := httptest.NewServer(reg)
	defer srv.Close()
	m := NewMetrics(nil)
	h, err := New(Options{Table: newTable(t, nginxPin), RegistryURL: srv.URL, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	w := do(h, "GET", "/v2/library/nginx/blobs/"+d+"?ns=docker.io")
	if w.Code != 200 || !bytes.Equal(w.Body.Bytes(), big) || w.Header().Get("Content-Length") != strconv.Itoa(len(big)) {
		t.Fatalf("status %d, %d bytes, Content-Length %q", w.Code, w.Body.Len(), w.Header().Get("Content-Length"))
	}
	if got := counterValue(t, m.bytes); got != float64(len(big)) {
		t.Fatalf("bytes counted %v, want %d", got, len(big))
	}
}

// TestStreamOverNetHTTP streams content through a real net/http server,
// where the mirror hands the body to the ResponseWriter's ReadFrom (straight
// to the connection): whole, ranged, HEAD, and a manifest by digest, on one
// kept-alive connection, so a length error would corrupt the next answer.
func TestStreamOverNetHTTP(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	reg, regSrv := newRegistry(t)
	reg.put("/v2/docker.io/library/nginx/blobs/"+digestOf(big), content{body: big, mediaType: "application/octet-stream"})
	h, err := New(Options{Table: newTable(t, nginxPin), RegistryURL: regSrv.URL, ManifestCacheBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	client := srv.Client()
	get := func(method, path, rng string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path+"?ns=docker.io", nil)
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		req.Header.Set("Accept", nginxPin.mediaType)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, b
	}
	bigPath := "/v2/library/nginx/blobs/" + digestOf(big)
	for range 2 {
		if resp, b := get("GET", bigPath, ""); resp.StatusCode != 200 || !bytes.Equal(b, big) || resp.ContentLength != int64(len(big)) {
			t.Fatalf("GET: %d, %d bytes (Content-Length %d)", resp.StatusCode, len(b), resp.ContentLength)
		}
		if resp, b := get("GET", bigPath, "bytes=1000-"); resp.StatusCode != 206 || !bytes.Equal(b, big[1000:]) {
			t.Fatalf("ranged GET: %d, %d bytes", resp.StatusCode, len(b))
		}
		if resp, b := get("HEAD", bigPath, ""); resp.StatusCode != 200 || len(b) != 0 || resp.ContentLength != int64(len(big)) {
			t.Fatalf("HEAD: %d, %d bytes, Content-Length %d", resp.StatusCode, len(b), resp.ContentLength)
		}
		if resp, b := get("GET", "/v2/library/nginx/manifests/"+nginxPin.digest().String(), ""); resp.StatusCode != 200 || !bytes.Equal(b, nginxPin.body) {
			t.Fatalf("manifest: %d %q", resp.StatusCode, b)
		}
		if resp, b := get("GET", "/v2/library/nginx/blobs/"+blobDigest().String(), "bytes=0-99"); resp.StatusCode != 206 || !bytes.Equal(b, blob[:100]) {
			t.Fatalf("small range: %d, %d bytes", resp.StatusCode, len(b))
		}
	}
}

// maxReader records the largest read asked of it.
type maxReader struct {
	r   io.Reader
	max int
}

func (m *maxReader) Read(p []byte) (int, error) {
	m.max = max(m.max, len(p))
	return m.r.Read(p)
}

// TestStreamCopyBuffer checks that a body handed to a net/http
// ResponseWriter's ReadFrom is copied with the pooled buffer: the TCP
// connection's ReadFrom can neither splice nor sendfile from it, and without
// pooledReader's WriteTo it would copy in 32 KiB reads and writes.
func TestStreamCopyBuffer(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 3*copyBufferSize/16+7)
	largest := make(chan int, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		src := &maxReader{r: bytes.NewReader(big)}
		w.Header().Set("Content-Length", strconv.Itoa(len(big)))
		w.WriteHeader(http.StatusOK)
		if _, err := w.(io.ReaderFrom).ReadFrom(pooledReader{r: src}); err != nil {
			t.Error(err)
		}
		largest <- src.max
	}))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil || !bytes.Equal(body, big) {
		t.Fatalf("%d bytes, want %d (%v)", len(body), len(big), err)
	}
	if n := <-largest; n != copyBufferSize {
		t.Fatalf("largest read %d bytes, want %d", n, copyBufferSize)
	}
}
