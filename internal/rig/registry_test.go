package rig

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

const acceptAll = MediaTypeDockerManifest + ", " + MediaTypeDockerManifestList + ", " +
	ocispec.MediaTypeImageManifest + ", " + ocispec.MediaTypeImageIndex + ", */*"

// get is a plain HTTP request, optionally authenticated with setAuth.
func get(t *testing.T, method, u, accept string, setAuth func(*http.Request)) (*http.Response, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	if setAuth != nil {
		setAuth(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read: %v", method, u, err)
	}
	return resp, b
}

// checkContent GETs a manifest or blob and checks status, digest and media type.
func checkContent(t *testing.T, u string, d ocispec.Descriptor) []byte {
	t.Helper()
	resp, b := get(t, http.MethodGet, u, acceptAll, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", u, resp.Status, b)
	}
	if got := digest.FromBytes(b); got != d.Digest {
		t.Errorf("GET %s: body hashes to %s, want %s", u, got, d.Digest)
	}
	if int64(len(b)) != d.Size {
		t.Errorf("GET %s: %d bytes, want %d", u, len(b), d.Size)
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != d.Digest.String() {
		t.Errorf("GET %s: Docker-Content-Digest %q, want %s", u, got, d.Digest)
	}
	if strings.Contains(u, "/manifests/") {
		if got := resp.Header.Get("Content-Type"); got != d.MediaType {
			t.Errorf("GET %s: Content-Type %q, want %q", u, got, d.MediaType)
		}
	}
	return b
}

func TestPushImage(t *testing.T) {
	reg := NewRegistry(t, RegistryOptions{})
	tests := []struct {
		name string
		opts ImageOptions
		want ocispec.Platform
	}{
		{name: "oci default", opts: ImageOptions{}, want: ocispec.Platform{OS: "linux", Architecture: "amd64"}},
		{name: "docker arm", opts: ImageOptions{Layers: 2, LayerSize: 4096, Platform: "linux/arm/v7", MediaType: MediaTypeDockerManifest},
			want: ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := reg.PushImage(t, "test/single", "v1", tt.opts)
			base := reg.URL() + "/v2/test/single/"
			b := checkContent(t, base+"manifests/v1", img.Descriptor())
			if !bytes.Equal(b, img.Manifest) {
				t.Errorf("manifest read back differs from the one pushed")
			}
			checkContent(t, base+"manifests/"+img.Digest.String(), img.Descriptor())

			cfgBytes := checkContent(t, base+"blobs/"+img.Config.Digest.String(), img.Config)
			var cfg ocispec.Image
			if err := json.Unmarshal(cfgBytes, &cfg); err != nil {
				t.Fatalf("decode config: %v", err)
			}
			if cfg.OS != tt.want.OS || cfg.Architecture != tt.want.Architecture || cfg.Variant != tt.want.Variant {
				t.Errorf("config platform = %s/%s/%s, want %+v", cfg.OS, cfg.Architecture, cfg.Variant, tt.want)
			}
			wantLayers := max(tt.opts.Layers, 1)
			if len(img.Layers) != wantLayers || len(cfg.RootFS.DiffIDs) != wantLayers {
				t.Fatalf("%d layers, %d diff_ids, want %d", len(img.Layers), len(cfg.RootFS.DiffIDs), wantLayers)
			}
			for i, l := range img.Layers {
				gz := checkContent(t, base+"blobs/"+l.Digest.String(), l)
				checkLayer(t, gz, cfg.RootFS.DiffIDs[i], max(tt.opts.LayerSize, 1024))
			}
		})
	}
}

// checkLayer gunzips and untars a layer, checking its diff_id and file.
func checkLayer(t *testing.T, gz []byte, diffID digest.Digest, size int) {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatalf("gunzip layer: %v", err)
	}
	tarball, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("gunzip layer: %v", err)
	}
	if got := digest.FromBytes(tarball); got != diffID {
		t.Errorf("layer diff_id %s, config says %s", got, diffID)
	}
	tr := tar.NewReader(bytes.NewReader(tarball))
	hdr, err := tr.Next()
	if err != nil {
		t.Fatalf("untar layer: %v", err)
	}
	if hdr.Typeflag != tar.TypeReg || hdr.Size != int64(size) {
		t.Errorf("layer file %s: type %c size %d, want a regular file of %d", hdr.Name, hdr.Typeflag, hdr.Size, size)
	}
}

func TestPushIndex(t *testing.T) {
	reg := NewRegistry(t, RegistryOptions{})
	platforms := []string{"linux/amd64", "linux/arm64/v8"}
	tests := []struct {
		name string
		opts IndexOptions
	}{
		{name: "oci with attestations", opts: IndexOptions{Attestations: true}},
		{name: "docker list", opts: IndexOptions{MediaType: MediaTypeDockerManifestList}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := reg.PushIndex(t, "test/multi", "latest", platforms, tt.opts)
			base := reg.URL() + "/v2/test/multi/"
			b := checkContent(t, base+"manifests/latest", x.Descriptor())

			var idx ocispec.Index
			if err := json.Unmarshal(b, &idx); err != nil {
				t.Fatalf("decode index: %v", err)
			}
			want := len(platforms)
			if tt.opts.Attestations {
				want *= 2
			}
			if len(idx.Manifests) != want || len(x.Images) != len(platforms) {
				t.Fatalf("index lists %d manifests (%d images returned), want %d", len(idx.Manifests), len(x.Images), want)
			}
			for i, d := range idx.Manifests {
				checkContent(t, base+"manifests/"+d.Digest.String(), d)
				if i < len(platforms) {
					img := x.Images[i]
					got := d.Platform.OS + "/" + d.Platform.Architecture + "/" + d.Platform.Variant
					if d.Digest != img.Digest || strings.TrimSuffix(got, "/") != platforms[i] || img.Platform != platforms[i] {
						t.Errorf("entry %d: %s %s, want %s %s", i, d.Digest, got, img.Digest, platforms[i])
					}
					if tt.opts.MediaType == MediaTypeDockerManifestList && d.MediaType != MediaTypeDockerManifest {
						t.Errorf("entry %d: media type %s in a Docker list", i, d.MediaType)
					}
				} else if d.Platform.OS != "unknown" || d.Platform.Architecture != "unknown" {
					t.Errorf("attestation entry %d has platform %+v", i, d.Platform)
				}
			}
		})
	}
}

func TestDelete(t *testing.T) {
	reg := NewRegistry(t, RegistryOptions{})
	img := reg.PushImage(t, "test/del", "v1", ImageOptions{})
	base := reg.URL() + "/v2/test/del/manifests/"

	reg.DeleteTag(t, "test/del", "v1")
	if resp, _ := get(t, http.MethodGet, base+"v1", acceptAll, nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("tag after DeleteTag: %s, want 404", resp.Status)
	}
	checkContent(t, base+img.Digest.String(), img.Descriptor())

	reg.PushManifest(t, "test/del", "v2", img.MediaType, img.Manifest)
	reg.DeleteManifest(t, "test/del", img.Digest)
	for _, ref := range []string{"v2", img.Digest.String()} {
		if resp, _ := get(t, http.MethodGet, base+ref, acceptAll, nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s after DeleteManifest: %s, want 404", ref, resp.Status)
		}
	}
}

func TestBasicAuth(t *testing.T) {
	reg := NewRegistry(t, RegistryOptions{Auth: AuthBasic, Users: map[string]string{"alice": "s3cret"}})
	img := reg.PushImage(t, "private/app", "v1", ImageOptions{})
	u := reg.URL() + "/v2/private/app/manifests/v1"
	if _, b := reg.Get(t, "private/app", "/v2/private/app/manifests/v1", acceptAll); digest.FromBytes(b) != img.Digest {
		t.Errorf("Get as admin read %s, want %s", digest.FromBytes(b), img.Digest)
	}
	tests := []struct {
		name       string
		user, pass string
		want       int
	}{
		{name: "anonymous", want: http.StatusUnauthorized},
		{name: "wrong password", user: "alice", pass: "nope", want: http.StatusUnauthorized},
		{name: "unknown user", user: "bob", pass: "s3cret", want: http.StatusUnauthorized},
		{name: "alice", user: "alice", pass: "s3cret", want: http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var setAuth func(*http.Request)
			if tt.user != "" {
				setAuth = func(r *http.Request) { r.SetBasicAuth(tt.user, tt.pass) }
			}
			resp, b := get(t, http.MethodGet, u, acceptAll, setAuth)
			if resp.StatusCode != tt.want {
				t.Fatalf("GET: %s, want %d", resp.Status, tt.want)
			}
			if tt.want == http.StatusUnauthorized && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic ") {
				t.Errorf("401 without a Basic challenge: %q", resp.Header.Get("WWW-Authenticate"))
			}
			if tt.want == http.StatusOK && digest.FromBytes(b) != img.Digest {
				t.Errorf("read %s, want %s", digest.FromBytes(b), img.Digest)
			}
		})
	}
}

var challengeParam = regexp.MustCompile(`(\w+)="([^"]*)"`)

// tokenFlow does what a client does on a 401: read the Bearer challenge and
// fetch a token from its realm. It returns the token server's status and token.
func tokenFlow(t *testing.T, method, u, user, pass string) (int, string) {
	t.Helper()
	resp, _ := get(t, http.MethodGet, u, acceptAll, nil)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("anonymous GET %s: %s, want 401", u, resp.Status)
	}
	ch := resp.Header.Get("WWW-Authenticate")
	if !strings.HasPrefix(ch, "Bearer ") {
		t.Fatalf("challenge %q is not Bearer", ch)
	}
	params := map[string]string{}
	for _, m := range challengeParam.FindAllStringSubmatch(ch, -1) {
		params[m[1]] = m[2]
	}
	form := url.Values{"service": {params["service"]}, "scope": {params["scope"]}}
	var tresp *http.Response
	var tb []byte
	switch method {
	case http.MethodGet:
		var setAuth func(*http.Request)
		if user != "" {
			setAuth = func(r *http.Request) { r.SetBasicAuth(user, pass) }
		}
		tresp, tb = get(t, http.MethodGet, params["realm"]+"?"+form.Encode(), "", setAuth)
	case http.MethodPost:
		form.Set("grant_type", "password")
		form.Set("username", user)
		form.Set("password", pass)
		form.Set("client_id", "registrytest")
		r, err := http.PostForm(params["realm"], form)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		tresp = r
		tb, _ = io.ReadAll(r.Body)
	}
	if tresp.StatusCode != http.StatusOK {
		return tresp.StatusCode, ""
	}
	var tok struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
	}
	if err := json.Unmarshal(tb, &tok); err != nil {
		t.Fatalf("decode token response: %v", err)
	}
	if tok.AccessToken == "" || (method == http.MethodGet && tok.Token != tok.AccessToken) || tok.ExpiresIn <= 0 {
		t.Fatalf("token response %s", tb)
	}
	return tresp.StatusCode, tok.AccessToken
}

func TestTokenAuth(t *testing.T) {
	users := map[string]string{"alice": "s3cret"}
	private := NewRegistry(t, RegistryOptions{Auth: AuthToken, Users: users})
	public := NewRegistry(t, RegistryOptions{Auth: AuthToken, Users: users, AnonymousPull: true})
	regs := map[string]*Registry{"private": private, "public": public}
	imgs := map[string]Image{}
	for name, reg := range regs {
		imgs[name] = reg.PushImage(t, "team/app", "v1", ImageOptions{})
		if _, b := reg.Get(t, "team/app", "/v2/team/app/manifests/v1", acceptAll); digest.FromBytes(b) != imgs[name].Digest {
			t.Errorf("%s: Get as admin read %s, want %s", name, digest.FromBytes(b), imgs[name].Digest)
		}
		if n := reg.TokenRequests(); n != 0 {
			t.Fatalf("pushing went through the token server (%d requests)", n)
		}
	}

	tests := []struct {
		name       string
		reg        string
		method     string
		user, pass string
		wantToken  int // token server status
		wantPull   int // registry status with the token
	}{
		{name: "alice GET", reg: "private", method: http.MethodGet, user: "alice", pass: "s3cret", wantToken: 200, wantPull: 200},
		{name: "alice POST", reg: "private", method: http.MethodPost, user: "alice", pass: "s3cret", wantToken: 200, wantPull: 200},
		{name: "wrong password", reg: "private", method: http.MethodGet, user: "alice", pass: "x", wantToken: 401},
		{name: "wrong password POST", reg: "private", method: http.MethodPost, user: "alice", pass: "x", wantToken: 401},
		{name: "anonymous private", reg: "private", method: http.MethodGet, wantToken: 200, wantPull: 401},
		{name: "anonymous public", reg: "public", method: http.MethodGet, wantToken: 200, wantPull: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := regs[tt.reg]
			u := reg.URL() + "/v2/team/app/manifests/v1"
			status, tok := tokenFlow(t, tt.method, u, tt.user, tt.pass)
			if status != tt.wantToken {
				t.Fatalf("token server: %d, want %d", status, tt.wantToken)
			}
			if tt.wantToken != 200 {
				return
			}
			resp, b := get(t, http.MethodGet, u, acceptAll, func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) })
			if resp.StatusCode != tt.wantPull {
				t.Fatalf("GET with token: %s, want %d: %s", resp.Status, tt.wantPull, b)
			}
			if tt.wantPull == 200 && digest.FromBytes(b) != imgs[tt.reg].Digest {
				t.Errorf("read %s, want %s", digest.FromBytes(b), imgs[tt.reg].Digest)
			}
		})
	}
	if private.TokenRealm() == "" || private.TokenService() == "" {
		t.Errorf("TokenRealm %q, TokenService %q", private.TokenRealm(), private.TokenService())
	}
}

func TestStopStart(t *testing.T) {
	reg := NewRegistry(t, RegistryOptions{})
	img := reg.PushImage(t, "test/restart", "v1", ImageOptions{})
	host := reg.Host()

	reg.Stop()
	reg.Stop() // idempotent
	if reg.Running() {
		t.Fatal("Running after Stop")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, reg.URL()+"/v2/", nil)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("stopped registry answered %s", resp.Status)
	}

	// Someone else takes the port: Start must say so, not talk to them.
	l, err := net.Listen("tcp", host)
	if err != nil {
		t.Fatalf("listen on the freed port: %v", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {})}
	go func() { _ = srv.Serve(l) }()
	if err := reg.Start(); !errors.Is(err, errAddrInUse) {
		t.Errorf("Start on a taken port: %v, want %v", err, errAddrInUse)
	}
	_ = srv.Close()

	if err := reg.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if reg.Host() != host {
		t.Errorf("restarted on %s, want %s", reg.Host(), host)
	}
	checkContent(t, reg.URL()+"/v2/test/restart/manifests/v1", img.Descriptor())
}

func TestCountingProxy(t *testing.T) {
	reg := NewRegistry(t, RegistryOptions{})
	img := reg.PushImage(t, "test/count", "v1", ImageOptions{Layers: 2})
	p := NewCountingProxy(t, reg.Host())
	base := p.URL() + "/v2/test/count/"

	get(t, http.MethodGet, p.URL()+"/v2/", "", nil)
	get(t, http.MethodHead, base+"manifests/v1", acceptAll, nil)
	get(t, http.MethodHead, base+"manifests/v1", acceptAll, nil)
	checkContent(t, base+"manifests/"+img.Digest.String(), img.Descriptor())
	for _, l := range img.Layers {
		checkContent(t, base+"blobs/"+l.Digest.String(), l)
	}

	want := map[string]int{"GET ping": 1, "HEAD manifest": 2, "GET manifest": 1, "GET blob": 2, "HEAD blob": 0}
	for k, n := range want {
		method, kind, _ := strings.Cut(k, " ")
		if got := p.Count(method, Kind(kind)); got != n {
			t.Errorf("Count(%s) = %d, want %d (%s)", k, got, n, p)
		}
	}
	if p.Total() != 6 || len(p.Requests()) != 6 {
		t.Errorf("Total = %d, Requests = %v", p.Total(), p.Requests())
	}
	p.Reset()
	if p.Total() != 0 || p.Count(http.MethodHead, KindManifest) != 0 {
		t.Errorf("counts after Reset: %s", p)
	}
}

func TestKindOf(t *testing.T) {
	tests := []struct {
		path string
		want Kind
	}{
		{"/v2/", KindPing},
		{"/v2", KindPing},
		{"/v2/library/nginx/manifests/1.27", KindManifest},
		{"/v2/a/manifests/b/manifests/sha256:abc", KindManifest},
		{"/v2/library/nginx/blobs/sha256:abc", KindBlob},
		{"/v2/blobs/blobs/sha256:abc", KindBlob},
		{"/v2/library/nginx/blobs/uploads/", KindUpload},
		{"/v2/library/nginx/blobs/uploads/123-abc", KindUpload},
		{"/v2/_catalog", KindOther},
		{"/v2/library/nginx/tags/list", KindOther},
		{"/healthz", KindOther},
	}
	for _, tt := range tests {
		if got := KindOf(tt.path); got != tt.want {
			t.Errorf("KindOf(%q) = %q, want %q", tt.path, got, tt.want)
		}
	}
	if !slices.Contains([]Kind{KindPing, KindManifest, KindBlob, KindUpload, KindOther}, KindOf("/x")) {
		t.Error("KindOf returned an unknown kind")
	}
}
