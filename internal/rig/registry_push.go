package rig

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// The push helpers authenticate as an internal admin user: with Basic
// credentials for AuthBasic, and for AuthToken with a token minted in process
// by the test's own token server (so they do not show up in TokenRequests).

// PushBlob uploads data monolithically (POST an upload, PUT it with
// ?digest=) and returns its descriptor with the given media type.
func (r *Registry) PushBlob(t T, repo, mediaType string, data []byte) ocispec.Descriptor {
	t.Helper()
	d := digest.FromBytes(data)
	resp, _ := r.do(t, http.MethodPost, r.URL()+"/v2/"+repo+"/blobs/uploads/", repo, "", nil, http.StatusAccepted)
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || resp.Header.Get("Location") == "" {
		t.Fatalf("rig registry: push blob %s to %s: bad upload Location %q", d, repo, resp.Header.Get("Location"))
	}
	base, _ := url.Parse(r.URL())
	put := base.ResolveReference(loc)
	q := put.Query()
	q.Set("digest", d.String())
	put.RawQuery = q.Encode()
	r.do(t, http.MethodPut, put.String(), repo, "application/octet-stream", data, http.StatusCreated)
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(data))}
}

// PushManifest PUTs a manifest under reference (a tag or its digest) and
// returns its digest, checking the registry computed the same one.
func (r *Registry) PushManifest(t T, repo, reference, mediaType string, body []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(body)
	resp, _ := r.do(t, http.MethodPut, r.URL()+"/v2/"+repo+"/manifests/"+reference, repo, mediaType, body, http.StatusCreated)
	if got := resp.Header.Get("Docker-Content-Digest"); got != d.String() {
		t.Fatalf("rig registry: push manifest %s:%s: registry says digest %q, want %s", repo, reference, got, d)
	}
	return d
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

// TokenRealm is the token server's realm URL (AuthToken only).
func (r *Registry) TokenRealm() string {
	if r.token == nil {
		return ""
	}
	return r.token.realm()
}

// TokenService is the service name the registry and token server agree on.
func (r *Registry) TokenService() string { return tokenService }

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
