// Package registryclient is tagger's one client of the distribution API,
// shared by the controller's checks, the cache copier, the node's mirror and
// the tests. Client talks to upstream registries; Endpoint (endpoint.go)
// reads and pushes by descriptor at the bundled registry; every failure is
// an *Error carrying the HTTP status and Retry-After.
//
// Client resolves a tag the way containerd does (one HEAD with containerd's Accept
// list, so a multi-arch image resolves to its index), reads manifests and
// image configs by digest, verifying every byte against its digest, and
// handles registry authentication: anonymous, Basic, and Bearer tokens,
// which it caches until they expire (challenges are parsed and tokens
// fetched with containerd's core/remotes/docker/auth).
package registryclient

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/tagger-project/tagger/pkg/httplimits"
	"github.com/tagger-project/tagger/pkg/pins"
)

// Credentials authenticate to a registry; the zero value is anonymous.
type Credentials struct {
	Username, Password string
}

// IsZero reports whether c is anonymous.
func (c Credentials) IsZero() bool { return c.Username == "" && c.Password == "" }

// Descriptor identifies manifest content: its digest, media type and size.
type Descriptor struct {
	Digest    digest.Digest
	MediaType string
	Size      int64
}

// Options configure a Client. The zero value works against HTTPS registries.
type Options struct {
	// HTTPClient sends the requests; default: one with httplimits.Upstream's
	// timeouts and a 30s total.
	HTTPClient *http.Client
	// PlainHTTP reports whether a registry host (as in the reference,
	// "localhost:5000") is served over plain HTTP; default: none is.
	PlainHTTP func(registry string) bool
	// UserAgent is sent with every request; default "tagger".
	UserAgent string
}

// Client talks to upstream registries. It is safe for concurrent use.
type Client struct {
	http      *http.Client
	plainHTTP func(string) bool
	userAgent string
	auth      *authCache
	tokenHTTP *http.Client // http, recording token responses' headers
}

// New returns a Client.
func New(o Options) *Client {
	c := &Client{http: o.HTTPClient, plainHTTP: o.PlainHTTP, userAgent: o.UserAgent, auth: newAuthCache()}
	if c.http == nil {
		lim := httplimits.Upstream
		lim.Total = 30 * time.Second
		c.http = lim.HTTPClient()
	}
	if c.plainHTTP == nil {
		c.plainHTTP = func(string) bool { return false }
	}
	if c.userAgent == "" {
		c.userAgent = "tagger"
	}
	c.tokenHTTP = newTokenHTTP(c.http)
	return c
}

// Manifest media types.
const (
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeOCIManifest        = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeOCIIndex           = "application/vnd.oci.image.index.v1+json"
)

// ManifestAccept is containerd's resolve Accept header, in its order, so
// the registry picks the same manifest for us as for a node. Every request
// for a manifest sends it: the distribution registry answers 404 to one
// whose Accept does not admit the manifest's type.
const ManifestAccept = MediaTypeDockerManifest + ", " +
	MediaTypeDockerManifestList + ", " +
	MediaTypeOCIManifest + ", " +
	MediaTypeOCIIndex + ", */*"

const manifestAccept = ManifestAccept

// maxManifestSize bounds manifest reads; registries themselves refuse
// manifests over 4 MiB.
const maxManifestSize = 4 << 20

// Resolve returns the descriptor the registry serves for ref's tag, with
// one HEAD request (Docker Hub does not count HEADs against pull limits).
// A multi-arch image resolves to its index. Only when the HEAD answer lacks
// the digest, a manifest media type or the length does it GET the manifest
// and hash it.
func (c *Client) Resolve(ctx context.Context, ref pins.Reference, creds Credentials) (Descriptor, error) {
	const op = "resolve"
	u := c.endpoint(ref, "manifests", ref.Tag)
	resp, err := c.do(ctx, ref, creds, http.MethodHead, u, manifestAccept)
	if err != nil {
		return Descriptor{}, newError(op, ref.String(), err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Descriptor{}, newError(op, ref.String(), newStatusError(http.MethodHead, u, resp, nil))
	}
	if d, ok, err := descriptorFromHeaders(resp); err != nil {
		return Descriptor{}, newError(op, ref.String(), fmt.Errorf("HEAD %s: %w", u, err))
	} else if ok {
		return d, nil
	}

	body, resp, err := c.get(ctx, ref, creds, u, manifestAccept, maxManifestSize)
	if err != nil {
		return Descriptor{}, newError(op, ref.String(), err)
	}
	want := digest.FromBytes(body)
	if h := resp.Header.Get("Docker-Content-Digest"); h != "" {
		// The server named a digest: the body must match it.
		if want, err = digest.Parse(h); err != nil {
			return Descriptor{}, newError(op, ref.String(), fmt.Errorf("GET %s: invalid Docker-Content-Digest: %w", u, err))
		}
	}
	if err := verify(body, want); err != nil {
		return Descriptor{}, newError(op, ref.String(), fmt.Errorf("GET %s: %w", u, err))
	}
	mt, err := manifestMediaType(resp.Header.Get("Content-Type"), body)
	if err != nil {
		return Descriptor{}, newError(op, ref.String(), fmt.Errorf("GET %s: %w", u, err))
	}
	return Descriptor{Digest: want, MediaType: mt, Size: int64(len(body))}, nil
}

// FetchManifest GETs the manifest dgst of ref's repository and returns its
// bytes, verified against dgst, with its descriptor.
func (c *Client) FetchManifest(ctx context.Context, ref pins.Reference, dgst digest.Digest, creds Credentials) ([]byte, Descriptor, error) {
	const op = "fetch manifest"
	name := ref.Name() + "@" + dgst.String()
	if err := dgst.Validate(); err != nil {
		return nil, Descriptor{}, newError(op, name, err)
	}
	u := c.endpoint(ref, "manifests", dgst.String())
	body, resp, err := c.get(ctx, ref, creds, u, manifestAccept, maxManifestSize)
	if err != nil {
		return nil, Descriptor{}, newError(op, name, err)
	}
	desc, err := manifestDescriptor(u, dgst, resp.Header.Get("Content-Type"), body)
	if err != nil {
		return nil, Descriptor{}, newError(op, name, err)
	}
	return body, desc, nil
}

// fetchBlob GETs a blob of ref's repository, verified against dgst.
func (c *Client) fetchBlob(ctx context.Context, op string, ref pins.Reference, dgst digest.Digest, limit int64, creds Credentials) ([]byte, error) {
	name := ref.Name() + "@" + dgst.String()
	if err := dgst.Validate(); err != nil {
		return nil, newError(op, name, err)
	}
	u := c.endpoint(ref, "blobs", dgst.String())
	body, _, err := c.get(ctx, ref, creds, u, "", limit)
	if err != nil {
		return nil, newError(op, name, err)
	}
	if err := verify(body, dgst); err != nil {
		return nil, newError(op, name, fmt.Errorf("GET %s: %w", u, err))
	}
	return body, nil
}

// Open sends a GET or HEAD for a manifest or blob by digest (kind "manifests"
// or "blobs") and returns the response unread, for streaming; rangeHeader,
// when not empty, is forwarded as Range. The caller closes the body and
// checks the status; the content is not verified here (the caller or
// containerd checks the digest).
func (c *Client) Open(ctx context.Context, ref pins.Reference, method, kind string, dgst digest.Digest, accept, rangeHeader string, creds Credentials) (*http.Response, error) {
	if err := dgst.Validate(); err != nil {
		return nil, newError("open", ref.Name()+"@"+dgst.String(), err)
	}
	if kind != "manifests" && kind != "blobs" {
		return nil, newError("open", ref.Name()+"@"+dgst.String(), fmt.Errorf("unknown content kind %q", kind))
	}
	var extra []string
	if rangeHeader != "" {
		extra = []string{"Range", rangeHeader}
	}
	resp, err := c.do(ctx, ref, creds, method, c.endpoint(ref, kind, dgst.String()), accept, extra...)
	if err != nil {
		return nil, newError("open", ref.Name()+"@"+dgst.String(), err)
	}
	return resp, nil
}

func (c *Client) endpoint(ref pins.Reference, kind, reference string) string {
	scheme := "https"
	if c.plainHTTP(ref.Registry) {
		scheme = "http"
	}
	u := url.URL{Scheme: scheme, Host: ref.APIHost(), Path: "/v2/" + ref.Repository + "/" + kind + "/" + reference}
	return u.String()
}

// get GETs u and returns a body of at most limit bytes; any other status
// than 200 is a statusError.
func (c *Client) get(ctx context.Context, ref pins.Reference, creds Credentials, u, accept string, limit int64) ([]byte, *http.Response, error) {
	resp, err := c.do(ctx, ref, creds, http.MethodGet, u, accept)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		return nil, nil, newStatusError(http.MethodGet, u, resp, body)
	}
	if resp.ContentLength > limit {
		return nil, nil, fmt.Errorf("GET %s: %d bytes, more than the %d allowed", u, resp.ContentLength, limit)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, nil, fmt.Errorf("GET %s: read body: %w", u, err)
	}
	if int64(len(body)) > limit {
		return nil, nil, fmt.Errorf("GET %s: body larger than the %d bytes allowed", u, limit)
	}
	return body, resp, nil
}

// do sends a body-less request, authenticating as the registry asks: it
// sends cached authorization if any; on a 401 it answers the challenge
// (fetching a fresh token even if a cached one was sent, since the cached
// one may have been revoked) and retries exactly once.
func (c *Client) do(ctx context.Context, ref pins.Reference, creds Credentials, method, u, accept string, extra ...string) (*http.Response, error) {
	key := newAuthKey(ref.APIHost(), ref.Repository, creds)
	authz := c.auth.get(key)
	resp, err := c.send(ctx, method, u, accept, authz, extra...)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	// Keep the 401 (body bounded) in case it is the final answer.
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))

	c.auth.drop(key)
	retry, err := c.authorize(ctx, key, ref.Repository, creds, challenges(resp.Header))
	if err != nil {
		return nil, err
	}
	if retry == "" || retry == authz {
		// Nothing new to offer (no credentials for Basic, or the same
		// Basic credentials were just refused).
		c.auth.drop(key)
		return resp, nil
	}
	resp, err = c.send(ctx, method, u, accept, retry, extra...)
	if err == nil && resp.StatusCode == http.StatusUnauthorized {
		c.auth.drop(key) // refused even fresh: don't offer it again
	}
	return resp, err
}

// send sends one request; extra holds further header name, value pairs.
func (c *Client) send(ctx context.Context, method, u, accept, authz string, extra ...string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, err
	}
	for i := 0; i+1 < len(extra); i += 2 {
		req.Header.Set(extra[i], extra[i+1])
	}
	req.Header.Set("User-Agent", c.userAgent)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	return c.http.Do(req)
}

// Anonymous is c without credentials, with the by-digest reads the node's
// mirror falls back to upstream with (a private image without cache is
// fetched by containerd itself, with the pod's credentials).
func (c *Client) Anonymous() Anonymous { return Anonymous{c} }

// Anonymous reads content by digest from upstream registries anonymously.
type Anonymous struct{ c *Client }

// FetchManifest returns manifest dgst of ref's repository, verified, with
// its media type. The Accept is containerd's, whatever the caller's.
func (a Anonymous) FetchManifest(ctx context.Context, ref pins.Reference, dgst digest.Digest, _ []string) ([]byte, string, error) {
	body, d, err := a.c.FetchManifest(ctx, ref, dgst, Credentials{})
	if err != nil {
		return nil, "", err
	}
	return body, d.MediaType, nil
}

// Open is Client.Open without credentials.
func (a Anonymous) Open(ctx context.Context, ref pins.Reference, method, kind string, dgst digest.Digest, accept, rangeHeader string) (*http.Response, error) {
	return a.c.Open(ctx, ref, method, kind, dgst, accept, rangeHeader, Credentials{})
}
