package rig

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/tagger-project/tagger/pkg/registryclient"
)

// The push helpers authenticate as an internal admin user: with Basic
// credentials for AuthBasic, and for AuthToken with a token minted in process
// by the test's own token server (so they do not show up in TokenRequests).

// PushBlob uploads data (POST an upload, one PUT with ?digest=) through
// pkg/registryclient, the client tagger itself pushes with, and returns its
// descriptor with the given media type.
func (r *Registry) PushBlob(t T, repo, mediaType string, data []byte) ocispec.Descriptor {
	t.Helper()
	d := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.endpoint(t).PushBlob(ctx, repo, d, bytes.NewReader(data)); err != nil {
		t.Fatalf("rig registry: push blob %s to %s: %v", d.Digest, repo, err)
	}
	return d
}

// PushManifest PUTs a manifest under reference (a tag or its digest) through
// pkg/registryclient and returns its digest; the client checks that the
// registry computed the same one.
func (r *Registry) PushManifest(t T, repo, reference, mediaType string, body []byte) digest.Digest {
	t.Helper()
	d := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(body), Size: int64(len(body))}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.endpoint(t).PushManifest(ctx, repo, reference, d, body); err != nil {
		t.Fatalf("rig registry: push manifest %s:%s: %v", repo, reference, err)
	}
	return d.Digest
}

// endpoint is the registry client the pushes go through, with the rig's
// admin credentials added to each request.
func (r *Registry) endpoint(t T) *registryclient.Endpoint {
	t.Helper()
	e, err := registryclient.NewEndpoint(r.URL(), &http.Client{Timeout: 30 * time.Second, Transport: adminAuth{r}})
	if err != nil {
		t.Fatalf("rig registry: client for %s: %v", r.URL(), err)
	}
	return e
}

// adminAuth authorizes each request as the rig's admin user for the
// repository its path names (/v2/<repo>/blobs/... or /v2/<repo>/manifests/...).
type adminAuth struct{ r *Registry }

func (a adminAuth) RoundTrip(req *http.Request) (*http.Response, error) {
	repo := strings.TrimPrefix(req.URL.Path, "/v2/")
	for _, kind := range []string{"/blobs/", "/manifests/"} {
		if i := strings.LastIndex(repo, kind); i >= 0 {
			repo = repo[:i]
			break
		}
	}
	req = req.Clone(req.Context())
	if err := a.r.authorize(req, repo); err != nil {
		return nil, fmt.Errorf("authorize %s %s: %w", req.Method, req.URL, err)
	}
	return a.r.client.Transport.RoundTrip(req)
}

// DeleteTag removes a tag (distribution v3 supports DELETE of a tag
// reference); the manifest it pointed to stays.
func (r *Registry) DeleteTag(t T, repo, tag string) {
	t.Helper()
	r.do(t, http.MethodDelete, r.URL()+"/v2/"+repo+"/manifests/"+tag, repo, "", nil, http.StatusAccepted)
}

// DeleteManifest removes a manifest by digest, and with it every tag
// pointing at it.
func (r *Registry) DeleteManifest(t T, repo string, dgst digest.Digest) {
	t.Helper()
	r.do(t, http.MethodDelete, r.URL()+"/v2/"+repo+"/manifests/"+dgst.String(), repo, "", nil, http.StatusAccepted)
}

// do sends one authenticated request and fails the test unless the
// registry answers want. It returns the response (body consumed) and body.
func (r *Registry) do(t T, method, u, repo, contentType string, body []byte, want int) (*http.Response, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatalf("rig registry: %s %s: %v", method, u, err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if err := r.authorize(req, repo); err != nil {
		t.Fatalf("rig registry: %s %s: %v", method, u, err)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		t.Fatalf("rig registry: %s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("rig registry: %s %s: read body: %v", method, u, err)
	}
	if resp.StatusCode != want {
		t.Fatalf("rig registry: %s %s: %s (want %d): %s", method, u, resp.Status, want, bytes.TrimSpace(b))
	}
	return resp, b
}

func (r *Registry) authorize(req *http.Request, repo string) error {
	switch r.opts.Auth {
	case AuthBasic:
		req.SetBasicAuth(adminUser, r.admin)
	case AuthToken:
		tok, err := r.token.sign(adminUser, []resourceActions{{
			Type: "repository", Name: repo, Actions: []string{"pull", "push", "delete"},
		}}, time.Now())
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	return nil
}

// Head sends HEAD u (a URL of this registry, a manifest's or a blob's) as
// the admin user, asking for an OCI manifest, and returns the status: for
// tests checking what the registry holds, whatever its authentication.
func (r *Registry) Head(t T, u string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, u, nil)
	if err != nil {
		t.Fatalf("rig registry: HEAD %s: %v", u, err)
	}
	req.Header.Set("Accept", ocispec.MediaTypeImageManifest)
	resp, err := adminAuth{r}.RoundTrip(req)
	if err != nil {
		t.Fatalf("rig registry: HEAD %s: %v", u, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// AdminToken is a Bearer token of the rig's admin user with pull, push and
// delete on repo (AuthToken only), for tests reading a registry directly.
func (r *Registry) AdminToken(t T, repo string) string {
	t.Helper()
	if r.token == nil {
		t.Fatalf("rig registry: AdminToken needs AuthToken")
	}
	tok, err := r.token.sign(adminUser, []resourceActions{{
		Type: "repository", Name: repo, Actions: []string{"pull", "push", "delete"},
	}}, time.Now())
	if err != nil {
		t.Fatalf("rig registry: %v", err)
	}
	return tok
}

// TokenRealm is the token server's realm URL (AuthToken only).
func (r *Registry) TokenRealm() string {
	if r.token == nil {
		return ""
	}
	return r.token.realm()
}

// TokenService is the service name the registry and token server agree on.
func (r *Registry) TokenService() string {
	if r.token == nil {
		return tokenService
	}
	return r.token.service
}

// TokenRequests counts requests the token server has received, so tests can
// assert that a client caches its tokens.
func (r *Registry) TokenRequests() int {
	if r.token == nil {
		return 0
	}
	return int(r.token.requests.Load())
}

// Get is a plain GET of path (e.g. "/v2/repo/manifests/tag") with the admin
// credentials and the given Accept header, for tests reading content back.
// It fails the test unless the registry answers 200.
func (r *Registry) Get(t T, repo, path, accept string) (*http.Response, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.URL()+path, nil)
	if err != nil {
		t.Fatalf("rig registry: GET %s: %v", path, err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	if err := r.authorize(req, repo); err != nil {
		t.Fatalf("rig registry: GET %s: %v", path, err)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		t.Fatalf("rig registry: GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("rig registry: GET %s: read body: %v", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("rig registry: GET %s: %s: %s", path, resp.Status, bytes.TrimSpace(b))
	}
	return resp, b
}
