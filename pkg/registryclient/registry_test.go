package registryclient_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/pkg/pins"
	"github.com/tagger-project/tagger/pkg/registryclient"
)

// These tests run against the real distribution registry (internal/rig).

func newClient() *registryclient.Client {
	// Test registries listen on loopback over plain HTTP.
	return registryclient.New(registryclient.Options{PlainHTTP: func(string) bool { return true }})
}

func ref(t *testing.T, host, repoTag string) pins.Reference {
	t.Helper()
	r, err := pins.ParseReference(host + "/" + repoTag)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func testCtx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestResolveRealRegistry(t *testing.T) {
	reg := rig.NewRegistry(t, rig.RegistryOptions{})
	c := newClient()

	tests := []struct {
		name, repo string
		// push returns what Resolve and Platforms must answer.
		push func(t *testing.T, repo string) (ocispec.Descriptor, []string)
	}{
		{name: "single arch oci", repo: "team/single", push: func(t *testing.T, repo string) (ocispec.Descriptor, []string) {
			img := reg.PushImage(t, repo, "v1", rig.ImageOptions{Platform: "linux/arm64/v8", Layers: 2})
			return img.Descriptor(), []string{"linux/arm64/v8"}
		}},
		{name: "single arch docker", repo: "team/docker", push: func(t *testing.T, repo string) (ocispec.Descriptor, []string) {
			img := reg.PushImage(t, repo, "v1", rig.ImageOptions{MediaType: rig.MediaTypeDockerManifest})
			return img.Descriptor(), []string{"linux/amd64"}
		}},
		{name: "config without platform", repo: "team/scratch", push: func(t *testing.T, repo string) (ocispec.Descriptor, []string) {
			img := reg.PushImage(t, repo, "v1", rig.ImageOptions{Platform: rig.NoPlatform})
			return img.Descriptor(), nil
		}},
		{name: "multi arch index with attestations", repo: "team/multi", push: func(t *testing.T, repo string) (ocispec.Descriptor, []string) {
			x := reg.PushIndex(t, repo, "v1", []string{"linux/arm64", "linux/amd64", "linux/arm/v7"}, rig.IndexOptions{Attestations: true})
			return x.Descriptor(), []string{"linux/amd64", "linux/arm/v7", "linux/arm64"}
		}},
		{name: "docker manifest list", repo: "team/list", push: func(t *testing.T, repo string) (ocispec.Descriptor, []string) {
			x := reg.PushIndex(t, repo, "v1", []string{"linux/amd64", "windows/amd64"}, rig.IndexOptions{MediaType: rig.MediaTypeDockerManifestList})
			return x.Descriptor(), []string{"linux/amd64", "windows/amd64"}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, wantPlatforms := tt.push(t, tt.repo)
			r := ref(t, reg.Host(), tt.repo+":v1")

			// Count through a proxy: resolving is exactly one HEAD, nothing else.
			p := rig.NewCountingProxy(t, reg.URL())
			viaProxy := ref(t, p.Host(), r.Repository+":"+r.Tag)
			d, err := c.Resolve(testCtx(t), viaProxy, registryclient.Credentials{})
			if err != nil {
				t.Fatal(err)
			}
			if d.Digest != want.Digest || d.MediaType != want.MediaType || d.Size != want.Size {
				t.Errorf("Resolve = %+v, want %s %s %d", d, want.Digest, want.MediaType, want.Size)
			}
			if p.Total() != 1 || p.Count(http.MethodHead, rig.KindManifest) != 1 {
				t.Errorf("Resolve made %v, want exactly one manifest HEAD", p.Requests())
			}

			got, err := c.Platforms(testCtx(t), r, d, registryclient.Credentials{})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, wantPlatforms) {
				t.Errorf("Platforms = %v, want %v", got, wantPlatforms)
			}

			body, fd, err := c.FetchManifest(testCtx(t), r, d.Digest, registryclient.Credentials{})
			if err != nil || fd != d || len(body) != int(d.Size) {
				t.Errorf("FetchManifest = %d bytes, %+v, %v; want %+v", len(body), fd, err, d)
			}
		})
	}
}

func TestResolveTagMoves(t *testing.T) {
	reg := rig.NewRegistry(t, rig.RegistryOptions{})
	c := newClient()
	r := ref(t, reg.Host(), "team/app:latest")
	for i := range 2 {
		img := reg.PushImage(t, "team/app", "latest", rig.ImageOptions{})
		d, err := c.Resolve(testCtx(t), r, registryclient.Credentials{})
		if err != nil {
			t.Fatal(err)
		}
		if d.Digest != img.Digest {
			t.Errorf("push %d: resolved %s, want %s", i, d.Digest, img.Digest)
		}
	}
}

func TestNotFoundRealRegistry(t *testing.T) {
	reg := rig.NewRegistry(t, rig.RegistryOptions{})
	img := reg.PushImage(t, "team/app", "v1", rig.ImageOptions{})
	c := newClient()
	for _, rt := range []string{"team/app:nope", "team/nothere:v1"} {
		t.Run(rt, func(t *testing.T) {
			r := ref(t, reg.Host(), rt)
			_, err := c.Resolve(testCtx(t), r, registryclient.Credentials{})
			if !registryclient.IsNotFound(err) || registryclient.IsUnauthorized(err) {
				t.Fatalf("err = %v, want not found", err)
			}
			if !strings.Contains(err.Error(), "resolve "+r.String()+": HEAD ") || !strings.Contains(err.Error(), "404 Not Found") {
				t.Errorf("message %q", err)
			}
		})
	}
	// GET answers carry the OCI error code into the message.
	reg.DeleteManifest(t, "team/app", img.Digest)
	_, _, err := c.FetchManifest(testCtx(t), ref(t, reg.Host(), "team/app:v1"), img.Digest, registryclient.Credentials{})
	if !registryclient.IsNotFound(err) || !strings.Contains(err.Error(), "MANIFEST_UNKNOWN") {
		t.Errorf("FetchManifest of a deleted manifest: %v", err)
	}
}

func TestRegistryDown(t *testing.T) {
	reg := rig.NewRegistry(t, rig.RegistryOptions{})
	reg.PushImage(t, "team/app", "v1", rig.ImageOptions{})
	c := newClient()
	r := ref(t, reg.Host(), "team/app:v1")
	if _, err := c.Resolve(testCtx(t), r, registryclient.Credentials{}); err != nil {
		t.Fatal(err)
	}
	reg.Stop()
	_, err := c.Resolve(testCtx(t), r, registryclient.Credentials{})
	var e *registryclient.Error
	if !errors.As(err, &e) || e.Op != "resolve" || e.Ref != r.String() || e.StatusCode != 0 {
		t.Fatalf("err = %#v", err)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) || !strings.Contains(err.Error(), r.String()) {
		t.Errorf("err = %v, want connection refused naming %s", err, r)
	}
	if registryclient.IsNotFound(err) {
		t.Error("a down registry is not a 404")
	}
	if err := reg.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Resolve(testCtx(t), r, registryclient.Credentials{}); err != nil {
		t.Errorf("after restart: %v", err)
	}
}

func TestBasicAuthRealRegistry(t *testing.T) {
	reg := rig.NewRegistry(t, rig.RegistryOptions{Auth: rig.AuthBasic, Users: map[string]string{"alice": "s3cret"}})
	img := reg.PushImage(t, "private/app", "v1", rig.ImageOptions{})
	p := rig.NewCountingProxy(t, reg.URL())
	r := ref(t, p.Host(), "private/app:v1")
	c := newClient()

	tests := []struct {
		name  string
		creds registryclient.Credentials
		ok    bool
		heads int
	}{
		{name: "anonymous", heads: 1},
		{name: "wrong password", creds: registryclient.Credentials{Username: "alice", Password: "wrong"}, heads: 2},
		{name: "right", creds: registryclient.Credentials{Username: "alice", Password: "s3cret"}, ok: true, heads: 2},
		{name: "right again, basic remembered", creds: registryclient.Credentials{Username: "alice", Password: "s3cret"}, ok: true, heads: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p.Reset()
			d, err := c.Resolve(testCtx(t), r, tt.creds)
			if tt.ok {
				if err != nil || d.Digest != img.Digest {
					t.Fatalf("Resolve = %v, %v; want %s", d.Digest, err, img.Digest)
				}
			} else {
				if !registryclient.IsUnauthorized(err) {
					t.Fatalf("err = %v, want unauthorized", err)
				}
				if tt.creds.Password != "" && strings.Contains(err.Error(), tt.creds.Password) {
					t.Errorf("error leaks the password: %v", err)
				}
			}
			if n := p.Count(http.MethodHead, rig.KindManifest); n != tt.heads || p.Total() != n {
				t.Errorf("requests %v, want %d HEADs", p.Requests(), tt.heads)
			}
		})
	}
}

func TestTokenAuthRealRegistry(t *testing.T) {
	users := map[string]string{"alice": "s3cret"}
	private := rig.NewRegistry(t, rig.RegistryOptions{Auth: rig.AuthToken, Users: users})
	public := rig.NewRegistry(t, rig.RegistryOptions{Auth: rig.AuthToken, Users: users, AnonymousPull: true})
	privImg := private.PushIndex(t, "team/app", "v1", []string{"linux/amd64", "linux/arm64"}, rig.IndexOptions{})
	pubImg := public.PushImage(t, "team/app", "v1", rig.ImageOptions{})
	alice := registryclient.Credentials{Username: "alice", Password: "s3cret"}

	t.Run("alice, cached token", func(t *testing.T) {
		c := newClient()
		p := rig.NewCountingProxy(t, private.URL())
		r := ref(t, p.Host(), "team/app:v1")
		for i := range 3 {
			before := private.TokenRequests()
			p.Reset()
			d, err := c.Resolve(testCtx(t), r, alice)
			if err != nil || d.Digest != privImg.Digest {
				t.Fatalf("resolve %d = %v, %v; want %s", i, d.Digest, err, privImg.Digest)
			}
			wantHeads, wantTokens := 1, 0
			if i == 0 {
				wantHeads, wantTokens = 2, 1 // 401, token, retry
			}
			if p.Count(http.MethodHead, rig.KindManifest) != wantHeads || p.Total() != wantHeads ||
				private.TokenRequests()-before != wantTokens {
				t.Errorf("resolve %d: %v and %d token requests, want %d HEADs and %d tokens",
					i, p.Requests(), private.TokenRequests()-before, wantHeads, wantTokens)
			}
		}
		plats, err := c.Platforms(testCtx(t), r, registryclient.Descriptor{Digest: privImg.Digest}, alice)
		if err != nil || !slices.Equal(plats, []string{"linux/amd64", "linux/arm64"}) {
			t.Errorf("Platforms = %v, %v", plats, err)
		}
	})

	tests := []struct {
		name  string
		reg   *rig.Registry
		creds registryclient.Credentials
		want  string // digest, or "" for unauthorized
		msg   string // in the error
	}{
		{name: "wrong password", reg: private, creds: registryclient.Credentials{Username: "alice", Password: "nope"}},
		{name: "unknown user", reg: private, creds: registryclient.Credentials{Username: "mallory", Password: "s3cret"}},
		{name: "anonymous on private", reg: private, msg: "bearer insufficient_scope"},
		{name: "anonymous on public", reg: public, want: pubImg.Digest.String()},
		{name: "alice on public", reg: public, creds: alice, want: pubImg.Digest.String()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := newClient().Resolve(testCtx(t), ref(t, tt.reg.Host(), "team/app:v1"), tt.creds)
			if tt.want == "" {
				if !registryclient.IsUnauthorized(err) {
					t.Fatalf("err = %v, want unauthorized", err)
				}
				if tt.creds.Password != "" && strings.Contains(err.Error(), tt.creds.Password) {
					t.Errorf("error leaks the password: %v", err)
				}
				if !strings.Contains(err.Error(), tt.msg) {
					t.Errorf("message %q does not contain %q", err, tt.msg)
				}
				return
			}
			if err != nil || d.Digest.String() != tt.want {
				t.Fatalf("Resolve = %v, %v; want %s", d.Digest, err, tt.want)
			}
		})
	}
}

func ExampleCredentialsFromDockerConfig() {
	secret := []byte(`{"auths":{"https://index.docker.io/v1/":{"username":"me","password":"pw"}}}`)
	creds, found, err := registryclient.CredentialsFromDockerConfig(secret, "docker.io")
	fmt.Println(creds.Username, found, err)
	// Output: me true <nil>
}
