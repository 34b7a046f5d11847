package mirror

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestManifestGET covers where a pinned tag's GET gets its bytes, and that
// nothing but the pinned digest is ever served.
func TestManifestGET(t *testing.T) {
	wrong := testPin{image: nginxPin.image, mediaType: nginxPin.mediaType, body: nginxPin.body, size: int64(len(nginxPin.body)) + 1}
	huge := testPin{image: "docker.io/library/huge:1", mediaType: ocispec.MediaTypeImageManifest, body: []byte("{}"), size: maxManifestSize + 1}
	tests := []struct {
		name     string
		pin      testPin
		target   string
		registry map[string]content // fake bundled registry; nil: no RegistryURL
		down     bool               // RegistryURL points at a closed port
		upstream map[string]content // by digest; nil: no Upstream
		accept   string
		status   int
		body     []byte
		// asked: the bundled registry / upstream calls expected.
		asked, upstreamAsked int
	}{
		{name: "bundled registry", pin: nginxPin, target: "/v2/library/nginx/manifests/1.27?ns=docker.io",
			registry: map[string]content{"/v2/docker.io/library/nginx/manifests/" + nginxPin.digest().String(): {body: nginxPin.body, mediaType: nginxPin.mediaType}},
			upstream: map[string]content{}, status: 200, body: nginxPin.body, asked: 1},
		{name: "bundled registry lacks it: upstream", pin: nginxPin, target: "/v2/library/nginx/manifests/1.27?ns=docker.io",
			registry: map[string]content{},
			upstream: map[string]content{nginxPin.digest().String(): {body: nginxPin.body, mediaType: nginxPin.mediaType}},
			status:   200, body: nginxPin.body, asked: 1, upstreamAsked: 1},
		{name: "no bundled registry: upstream", pin: nginxPin, target: "/v2/library/nginx/manifests/1.27?ns=docker.io",
			upstream: map[string]content{nginxPin.digest().String(): {body: nginxPin.body, mediaType: nginxPin.mediaType}},
			status:   200, body: nginxPin.body, upstreamAsked: 1},
		{name: "bundled registry down: upstream", pin: nginxPin, target: "/v2/library/nginx/manifests/1.27?ns=docker.io", down: true,
			upstream: map[string]content{nginxPin.digest().String(): {body: nginxPin.body, mediaType: nginxPin.mediaType}},
			status:   200, body: nginxPin.body, upstreamAsked: 1},
		{name: "bundled registry has wrong bytes: upstream", pin: nginxPin, target: "/v2/library/nginx/manifests/1.27?ns=docker.io",
			registry: map[string]content{"/v2/docker.io/library/nginx/manifests/" + nginxPin.digest().String(): {body: redisPin.body, mediaType: nginxPin.mediaType}},
			upstream: map[string]content{nginxPin.digest().String(): {body: nginxPin.body, mediaType: nginxPin.mediaType}},
			status:   200, body: nginxPin.body, asked: 1, upstreamAsked: 1},
		{name: "bundled registry has wrong bytes, no upstream", pin: nginxPin, target: "/v2/library/nginx/manifests/1.27?ns=docker.io",
			registry: map[string]content{"/v2/docker.io/library/nginx/manifests/" + nginxPin.digest().String(): {body: redisPin.body, mediaType: nginxPin.mediaType}},
			status:   503, asked: 1},
		{name: "upstream has wrong bytes", pin: nginxPin, target: "/v2/library/nginx/manifests/1.27?ns=docker.io",
			registry: map[string]content{},
			upstream: map[string]content{nginxPin.digest().String(): {body: append(bytes.Clone(nginxPin.body), ' '), mediaType: nginxPin.mediaType}},
			status:   503, asked: 1, upstreamAsked: 1},
		{name: "neither has it", pin: nginxPin, target: "/v2/library/nginx/manifests/1.27?ns=docker.io",
			registry: map[string]content{}, upstream: map[string]content{}, status: 503, asked: 1, upstreamAsked: 1},
		{name: "no source at all", pin: nginxPin, target: "/v2/library/nginx/manifests/1.27?ns=docker.io", status: 503},
		{name: "right digest, pin size disagrees", pin: wrong, target: "/v2/library/nginx/manifests/1.27?ns=docker.io",
			registry: map[string]content{"/v2/docker.io/library/nginx/manifests/" + nginxPin.digest().String(): {body: nginxPin.body, mediaType: nginxPin.mediaType}},
			status:   503, asked: 1},
		{name: "pin larger than 4 MiB: no round trip", pin: huge, target: "/v2/library/huge/manifests/1?ns=docker.io",
			registry: map[string]content{}, upstream: map[string]content{}, status: 503},
		{name: "port in registry: cache repository uses '_'", pin: appPin, target: "/v2/team/app/manifests/v1?ns=localhost%3A5000",
			registry: map[string]content{"/v2/localhost_5000/team/app/manifests/" + appPin.digest().String(): {body: appPin.body, mediaType: appPin.mediaType}},
			status:   200, body: appPin.body, asked: 1},
		{name: "Accept */* only: still the bundled registry's, never upstream", pin: nginxPin, target: "/v2/library/nginx/manifests/1.27?ns=docker.io",
			accept:   "*/*",
			registry: map[string]content{"/v2/docker.io/library/nginx/manifests/" + nginxPin.digest().String(): {body: nginxPin.body, mediaType: nginxPin.mediaType}},
			upstream: map[string]content{nginxPin.digest().String(): {body: nginxPin.body, mediaType: nginxPin.mediaType}},
			status:   200, body: nginxPin.body, asked: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := Options{Table: newTable(t, tc.pin)}
			reg := &fakeRegistry{}
			if tc.registry != nil {
				for p, c := range tc.registry {
					reg.put(p, c)
				}
				srv := httptest.NewServer(reg)
				defer srv.Close()
				o.RegistryURL = srv.URL
			}
			if tc.down {
				srv := httptest.NewServer(reg)
				o.RegistryURL = srv.URL
				srv.Close()
			}
			var up *fakeUpstream
			if tc.upstream != nil {
				up = &fakeUpstream{manifests: map[digestKey]content{}}
				for d, c := range tc.upstream {
					up.manifests[digestKey(d)] = c
				}
				o.Upstream = up
			}
			h, err := New(o)
			if err != nil {
				t.Fatal(err)
			}
			var hdr []string
			if tc.accept != "" {
				hdr = []string{"Accept", tc.accept}
			}
			w := do(h, "GET", tc.target, hdr...)
			if w.Code != tc.status {
				t.Fatalf("status = %d, want %d; body %s", w.Code, tc.status, w.Body)
			}
			if tc.status == 200 {
				if !bytes.Equal(w.Body.Bytes(), tc.body) {
					t.Errorf("body = %q, want %q", w.Body, tc.body)
				}
				if got := w.Header().Get("Docker-Content-Digest"); got != tc.pin.digest().String() {
					t.Errorf("Docker-Content-Digest = %q", got)
				}
				if got := w.Header().Get("Content-Type"); got != tc.pin.mediaType {
					t.Errorf("Content-Type = %q", got)
				}
			} else if code := errorCode(w.Body.Bytes()); code != "UNAVAILABLE" {
				t.Errorf("error code = %q, want UNAVAILABLE", code)
			}
			if got := len(reg.seen()); got != tc.asked {
				t.Errorf("bundled registry asked %d times, want %d: %+v", got, tc.asked, reg.seen())
			}
			if got := len(up.seen()); got != tc.upstreamAsked {
				t.Errorf("upstream asked %d times, want %d: %v", got, tc.upstreamAsked, up.seen())
			}
		})
	}
}

// TestManifestAccept checks what Accept reaches the bundled registry and
// the upstream: the four manifest media types, whatever the client sent
// (distribution 404s an OCI manifest whose type the Accept does not name,
// and a digest or a pin has one right answer).
func TestManifestAccept(t *testing.T) {
	all := strings.Join(defaultAccept, ", ")
	for _, tc := range []struct {
		name   string
		accept []string
		want   string
	}{
		{"containerd's", []string{"application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, */*"}, all},
		{"several header lines", []string{ocispec.MediaTypeImageIndex, "*/*"}, all},
		{"Docker types only", []string{mediaTypeDockerManifest}, all},
		{"none", nil, all},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := &fakeRegistry{}
			srv := httptest.NewServer(reg)
			defer srv.Close()
			up := &fakeUpstream{}
			h, err := New(Options{Table: newTable(t, nginxPin), RegistryURL: srv.URL, Upstream: up})
			if err != nil {
				t.Fatal(err)
			}
			var hdr []string
			for _, a := range tc.accept {
				hdr = append(hdr, "Accept", a)
			}
			do(h, "GET", "/v2/library/nginx/manifests/1.27?ns=docker.io", hdr...)
			// And content by digest.
			do(h, "GET", "/v2/library/nginx/manifests/"+nginxPin.digest().String()+"?ns=docker.io", hdr...)
			seen := reg.seen()
			if len(seen) != 2 {
				t.Fatalf("registry saw %+v", seen)
			}
			for _, s := range seen {
				if s.accept != tc.want {
					t.Errorf("%s %s: Accept = %q, want %q", s.method, s.path, s.accept, tc.want)
				}
				if s.encoding != "identity" || s.ua != userAgent {
					t.Errorf("Accept-Encoding %q, User-Agent %q", s.encoding, s.ua)
				}
			}
			if calls := up.seen(); len(calls) != 1 || !strings.HasSuffix(calls[0], "accept="+tc.want) {
				t.Errorf("upstream calls = %q", calls)
			}
		})
	}
}

// TestHeadUnknownSize: a pin without a size answers HEAD without
// Content-Length, so containerd GETs the manifest instead of recording 0.
func TestHeadUnknownSize(t *testing.T) {
	p := nginxPin
	p.size = -1
	h, err := New(Options{Table: newTable(t, p), Upstream: newUpstream()})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Head(srv.URL + "/v2/library/nginx/manifests/1.27?ns=docker.io")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != 200 || resp.ContentLength != -1 {
		t.Fatalf("HEAD = %d, ContentLength %d; want 200, -1", resp.StatusCode, resp.ContentLength)
	}
	resp, err = http.Get(srv.URL + "/v2/library/nginx/manifests/1.27?ns=docker.io")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != 200 || resp.ContentLength != int64(len(nginxPin.body)) {
		t.Fatalf("GET = %d, ContentLength %d", resp.StatusCode, resp.ContentLength)
	}
}
