package registryclient

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/tagger-project/tagger/pkg/pins"
)

// plainClient treats every registry as plain HTTP, as local test upstreams are.
func plainClient() *Client {
	return New(Options{PlainHTTP: func(string) bool { return true }})
}

func mustRef(t *testing.T, s string) pins.Reference {
	t.Helper()
	r, err := pins.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func testCtx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// fakeRegistry serves fixed manifests and blobs by path and records requests.
type fakeRegistry struct {
	mu       sync.Mutex
	requests []string
	handler  func(w http.ResponseWriter, r *http.Request)
}

func newFake(t *testing.T, h func(w http.ResponseWriter, r *http.Request)) (*httptest.Server, *fakeRegistry) {
	f := &fakeRegistry{handler: h}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.requests = append(f.requests, r.Method+" "+r.URL.Path)
		f.mu.Unlock()
		f.handler(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, f
}

func (f *fakeRegistry) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.requests...)
}

func TestResolveRetryAfter(t *testing.T) {
	tests := []struct {
		name   string
		status int
		header string
		want   time.Duration
	}{
		{name: "429 seconds", status: http.StatusTooManyRequests, header: "7", want: 7 * time.Second},
		{name: "503 date", status: http.StatusServiceUnavailable, header: time.Now().Add(2 * time.Minute).UTC().Format(http.TimeFormat), want: 2 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _ := newFake(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Retry-After", tt.header)
				w.WriteHeader(tt.status)
			})
			ref := mustRef(t, strings.TrimPrefix(srv.URL, "http://")+"/library/nginx:1.27")
			_, err := plainClient().Resolve(testCtx(t), ref, Credentials{})
			d, ok := RetryAfter(err)
			if !ok || d > tt.want || d < tt.want-2*time.Second {
				t.Fatalf("RetryAfter(%v) = %v, %v; want about %v", err, d, ok, tt.want)
			}
			var e *Error
			if !errors.As(err, &e) || e.StatusCode != tt.status || e.Op != "resolve" || !strings.Contains(err.Error(), ref.String()) {
				t.Errorf("err = %#v (%v)", e, err)
			}
		})
	}
}

func TestResolveFallbackGET(t *testing.T) {
	manifest := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`)
	bare := []byte(`{"schemaVersion":2,"config":{"digest":"sha256:aa"},"layers":[]}`)
	other := digest.FromString("something else")
	tests := []struct {
		name      string
		body      []byte
		headHdr   http.Header // extra headers on HEAD
		getHdr    http.Header
		want      Descriptor
		wantErr   error
		wantErrIn string
		wantReqs  []string
	}{
		{
			name: "HEAD without digest", body: manifest,
			headHdr:  http.Header{"Content-Type": {MediaTypeOCIIndex}},
			getHdr:   http.Header{"Content-Type": {MediaTypeOCIIndex}},
			want:     Descriptor{Digest: digest.FromBytes(manifest), MediaType: MediaTypeOCIIndex, Size: int64(len(manifest))},
			wantReqs: []string{"HEAD /v2/a/manifests/t", "GET /v2/a/manifests/t"},
		},
		{
			name: "generic content type, media type from body", body: manifest,
			headHdr:  http.Header{"Content-Type": {"application/json"}, "Docker-Content-Digest": {digest.FromBytes(manifest).String()}},
			getHdr:   http.Header{"Content-Type": {"application/json"}, "Docker-Content-Digest": {digest.FromBytes(manifest).String()}},
			want:     Descriptor{Digest: digest.FromBytes(manifest), MediaType: MediaTypeOCIIndex, Size: int64(len(manifest))},
			wantReqs: []string{"HEAD /v2/a/manifests/t", "GET /v2/a/manifests/t"},
		},
		{
			name: "no media type anywhere, shape decides", body: bare,
			getHdr: http.Header{"Content-Type": {"text/plain"}},
			want:   Descriptor{Digest: digest.FromBytes(bare), MediaType: MediaTypeOCIManifest, Size: int64(len(bare))},
		},
		{
			name: "GET digest header disagrees with body", body: manifest,
			getHdr:  http.Header{"Content-Type": {MediaTypeOCIIndex}, "Docker-Content-Digest": {other.String()}},
			wantErr: ErrDigestMismatch,
		},
		{
			name: "invalid digest on HEAD", body: manifest,
			headHdr:   http.Header{"Content-Type": {MediaTypeOCIIndex}, "Docker-Content-Digest": {"sha256:nothex"}},
			wantErrIn: "invalid Docker-Content-Digest",
			wantReqs:  []string{"HEAD /v2/a/manifests/t"},
		},
		{
			name: "schema 1", body: []byte(`{"schemaVersion":1,"name":"a"}`),
			wantErrIn: "schema 1",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
				h := tt.getHdr
				if r.Method == http.MethodHead {
					h = tt.headHdr
				}
				for k, v := range h {
					w.Header()[k] = v
				}
				w.Header().Set("Content-Length", fmt.Sprint(len(tt.body)))
				_, _ = w.Write(tt.body)
			})
			ref := mustRef(t, strings.TrimPrefix(srv.URL, "http://")+"/a:t")
			got, err := plainClient().Resolve(testCtx(t), ref, Credentials{})
			switch {
			case tt.wantErr != nil || tt.wantErrIn != "":
				if err == nil || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) || !strings.Contains(err.Error(), tt.wantErrIn) {
					t.Fatalf("err = %v, want %v %q", err, tt.wantErr, tt.wantErrIn)
				}
			case err != nil:
				t.Fatal(err)
			case got != tt.want:
				t.Errorf("Resolve = %+v, want %+v", got, tt.want)
			}
			if tt.wantReqs != nil && fmt.Sprint(f.seen()) != fmt.Sprint(tt.wantReqs) {
				t.Errorf("requests %v, want %v", f.seen(), tt.wantReqs)
			}
		})
	}
}

func TestManifestTooLarge(t *testing.T) {
	big := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","x":"` + strings.Repeat("a", maxManifestSize) + `"}`)
	for _, length := range []bool{true, false} {
		t.Run(fmt.Sprintf("content-length=%v", length), func(t *testing.T) {
			srv, _ := newFake(t, func(w http.ResponseWriter, r *http.Request) {
				if length {
					w.Header().Set("Content-Length", fmt.Sprint(len(big)))
				}
				_, _ = w.Write(big)
			})
			ref := mustRef(t, strings.TrimPrefix(srv.URL, "http://")+"/a:t")
			_, _, err := plainClient().FetchManifest(testCtx(t), ref, digest.FromBytes(big), Credentials{})
			if err == nil || !strings.Contains(err.Error(), "allowed") {
				t.Fatalf("err = %v, want a size error", err)
			}
		})
	}
}

func TestPlatformsRejectsBadContent(t *testing.T) {
	config := []byte(`{"os":"linux","architecture":"arm64","variant":"v8"}`)
	manifest := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` +
		digest.FromBytes(config).String() + `","size":` + fmt.Sprint(len(config)) + `},"layers":[]}`)
	tests := []struct {
		name    string
		serve   map[string][]byte // path suffix -> body
		ask     digest.Digest
		want    []string
		wantErr string
	}{
		{
			name:  "good",
			serve: map[string][]byte{"manifests/" + digest.FromBytes(manifest).String(): manifest, "blobs/" + digest.FromBytes(config).String(): config},
			ask:   digest.FromBytes(manifest), want: []string{"linux/arm64/v8"},
		},
		{
			name:  "manifest body does not match the digest",
			serve: map[string][]byte{"manifests/" + digest.FromString("x").String(): manifest},
			ask:   digest.FromString("x"), wantErr: "fetch manifest",
		},
		{
			name:  "config body does not match the digest",
			serve: map[string][]byte{"manifests/" + digest.FromBytes(manifest).String(): manifest, "blobs/" + digest.FromBytes(config).String(): []byte(`{"os":"linux","architecture":"s390x"}`)},
			ask:   digest.FromBytes(manifest), wantErr: "fetch config",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _ := newFake(t, func(w http.ResponseWriter, r *http.Request) {
				for suffix, body := range tt.serve {
					if strings.HasSuffix(r.URL.Path, suffix) {
						w.Header().Set("Content-Type", MediaTypeOCIManifest)
						_, _ = w.Write(body)
						return
					}
				}
				http.NotFound(w, r)
			})
			ref := mustRef(t, strings.TrimPrefix(srv.URL, "http://")+"/a:t")
			got, err := plainClient().Platforms(testCtx(t), ref, Descriptor{Digest: tt.ask, MediaType: MediaTypeOCIManifest}, Credentials{})
			if tt.wantErr != "" {
				if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), tt.wantErr) || got != nil {
					t.Fatalf("Platforms = %v, %v; want a digest mismatch in %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("Platforms = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

// tokenFake is a registry that accepts only the token of the current
// generation, and a token server issuing it; revoke moves the generation.
type tokenFake struct {
	registry, tokens *httptest.Server
	generation       atomic.Int64
	tokenRequests    atomic.Int64
	registryRequests atomic.Int64
	lastAuth         atomic.Value // string
}

func newTokenFake(t *testing.T) *tokenFake {
	f := &tokenFake{}
	body := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`)
	f.tokens = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.tokenRequests.Add(1)
		if u, p, ok := r.BasicAuth(); ok {
			f.lastAuth.Store(u + ":" + p)
		}
		if r.URL.Query().Get("scope") != "repository:team/app:pull" || r.URL.Query().Get("service") != "fake" {
			http.Error(w, "bad scope", http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, `{"access_token":"tok-%d","expires_in":300}`, f.generation.Load())
	}))
	t.Cleanup(f.tokens.Close)
	f.registry = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.registryRequests.Add(1)
		if r.Header.Get("Authorization") != fmt.Sprintf("Bearer tok-%d", f.generation.Load()) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+f.tokens.URL+`/token",service="fake",scope="repository:team/app:pull"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", MediaTypeOCIIndex)
		w.Header().Set("Docker-Content-Digest", digest.FromBytes(body).String())
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	}))
	t.Cleanup(f.registry.Close)
	return f
}

func TestTokenCacheAndRefresh(t *testing.T) {
	f := newTokenFake(t)
	c := plainClient()
	ref := mustRef(t, strings.TrimPrefix(f.registry.URL, "http://")+"/team/app:v1")
	creds := Credentials{Username: "alice", Password: "pw"}
	resolve := func(wantRegistry, wantToken int64) {
		t.Helper()
		f.registryRequests.Store(0)
		f.tokenRequests.Store(0)
		if _, err := c.Resolve(testCtx(t), ref, creds); err != nil {
			t.Fatal(err)
		}
		if r, tk := f.registryRequests.Load(), f.tokenRequests.Load(); r != wantRegistry || tk != wantToken {
			t.Fatalf("%d registry and %d token requests, want %d and %d", r, tk, wantRegistry, wantToken)
		}
	}
	resolve(2, 1) // 401, token, retry
	if got := f.lastAuth.Load(); got != "alice:pw" {
		t.Errorf("token server got credentials %q", got)
	}
	resolve(1, 0) // cached
	resolve(1, 0)
	f.generation.Add(1) // the registry no longer takes the cached token
	resolve(2, 1)       // refreshed once
	resolve(1, 0)

	// Other credentials do not share the cached token.
	f.registryRequests.Store(0)
	if _, err := c.Resolve(testCtx(t), ref, Credentials{}); err != nil {
		t.Fatal(err)
	}
	if n := f.registryRequests.Load(); n != 2 {
		t.Errorf("anonymous resolve used %d registry requests, want 2 (its own token)", n)
	}

	// The cache expires.
	c.auth.now = func() time.Time { return time.Now().Add(time.Hour) }
	resolve(2, 1)
}

func TestNoCredentialsToPlainHTTPRealm(t *testing.T) {
	f := newTokenFake(t)
	regHost := strings.TrimPrefix(f.registry.URL, "http://")
	// The registry is declared plain HTTP, its token realm is not.
	c := New(Options{PlainHTTP: func(h string) bool { return h == regHost }})
	ref := mustRef(t, regHost+"/team/app:v1")
	_, err := c.Resolve(testCtx(t), ref, Credentials{Username: "alice", Password: "pw"})
	if err == nil || !strings.Contains(err.Error(), "refusing to send credentials over plain HTTP") {
		t.Fatalf("err = %v", err)
	}
	if n := f.tokenRequests.Load(); n != 0 {
		t.Errorf("token server got %d requests", n)
	}
	if strings.Contains(err.Error(), "pw") {
		t.Errorf("error leaks the password: %v", err)
	}
	// Anonymous token fetches over plain HTTP carry nothing secret.
	if _, err := c.Resolve(testCtx(t), ref, Credentials{}); err != nil {
		t.Errorf("anonymous: %v", err)
	}
}

func TestUserAgentAndAccept(t *testing.T) {
	var ua, accept string
	srv, _ := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		ua, accept = r.Header.Get("User-Agent"), r.Header.Get("Accept")
		w.WriteHeader(http.StatusNotFound)
	})
	ref := mustRef(t, strings.TrimPrefix(srv.URL, "http://")+"/a:t")
	c := New(Options{PlainHTTP: func(string) bool { return true }, UserAgent: "tagger-test/1"})
	_, err := c.Resolve(testCtx(t), ref, Credentials{})
	if !IsNotFound(err) {
		t.Fatalf("err = %v", err)
	}
	if ua != "tagger-test/1" {
		t.Errorf("User-Agent %q", ua)
	}
	want := "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, " +
		"application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*"
	if accept != want {
		t.Errorf("Accept %q, want %q", accept, want)
	}
}

// TestTokenServiceErrors checks what containerd's FetchToken failures become:
// an *Error with the token service's status and Retry-After, a message naming
// the realm without its query, and never the password.
func TestTokenServiceErrors(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		header    string
		body      string
		retry     time.Duration
		wantInErr string
	}{
		{name: "rate limited", status: 429, header: "7", body: `{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}`,
			retry: 7 * time.Second, wantInErr: "TOOMANYREQUESTS: slow down"},
		{name: "refused", status: 401, body: `{"details":"incorrect username or password"}`, wantInErr: "401 Unauthorized"},
		{name: "no token", status: 200, body: `{"expires_in":300}`, wantInErr: "did not include a token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ua string
			tokens := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				ua = r.UserAgent()
				if tt.header != "" {
					w.Header().Set("Retry-After", tt.header)
				}
				w.WriteHeader(tt.status)
				fmt.Fprint(w, tt.body)
			}))
			t.Cleanup(tokens.Close)
			srv, _ := newFake(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("WWW-Authenticate", `Bearer realm="`+tokens.URL+`/token?x=1",service="fake"`)
				w.WriteHeader(http.StatusUnauthorized)
			})
			ref := mustRef(t, strings.TrimPrefix(srv.URL, "http://")+"/team/app:v1")
			c := New(Options{PlainHTTP: func(string) bool { return true }, UserAgent: "tagger-test/1"})
			_, err := c.Resolve(testCtx(t), ref, Credentials{Username: "alice", Password: "s3cret"})
			var e *Error
			if !errors.As(err, &e) || e.Op != "resolve" {
				t.Fatalf("err = %#v, want *Error of resolve", err)
			}
			wantStatus := tt.status
			if tt.status == 200 {
				wantStatus = 0
			}
			if e.StatusCode != wantStatus || e.RetryAfter != tt.retry || IsUnauthorized(err) != (tt.status == 401) {
				t.Errorf("status %d, retry after %v, unauthorized %v; want %d, %v", e.StatusCode, e.RetryAfter, IsUnauthorized(err), wantStatus, tt.retry)
			}
			msg := err.Error()
			if !strings.Contains(msg, tokens.URL+"/token") || !strings.Contains(msg, tt.wantInErr) {
				t.Errorf("message %q does not name the realm and %q", msg, tt.wantInErr)
			}
			if strings.Contains(msg, "s3cret") || strings.Contains(msg, "scope=") || strings.Contains(msg, "incorrect") {
				t.Errorf("message %q leaks the password, the query or the raw body", msg)
			}
			if ua != "tagger-test/1" {
				t.Errorf("token request User-Agent %q", ua)
			}
		})
	}
}
