package registryclient

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/tagger-project/tagger/pkg/httplimits"
)

// Endpoint speaks the distribution API, reading and pushing, to one
// registry at a base URL without authentication: the bundled registry, or a
// test registry. Its methods address content by repository and descriptor;
// every failure is an *Error, a registry answer carrying its status.
type Endpoint struct {
	base *url.URL
	http *http.Client
}

// NewEndpoint returns an Endpoint for base, "http://host:port" or
// "https://host:port". With hc nil it uses httplimits.InCluster's timeouts
// and no overall one: a large blob may stream for long, the caller's
// context bounds it.
func NewEndpoint(base string, hc *http.Client) (*Endpoint, error) {
	u, err := url.Parse(strings.TrimSuffix(base, "/"))
	if err != nil {
		return nil, fmt.Errorf("registry URL %q: %w", base, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("registry URL %q: want http://host:port or https://host:port", base)
	}
	if hc == nil {
		hc = httplimits.InCluster.HTTPClient()
	}
	return &Endpoint{base: u, http: hc}, nil
}

// URL returns the endpoint's base URL.
func (e *Endpoint) URL() string { return e.base.String() }

func (e *Endpoint) url(repo, kind, ref string) string {
	return e.base.String() + "/v2/" + repo + "/" + kind + "/" + ref
}

// name is how an Error names content: "host/repo@digest" or "host/repo:tag".
func (e *Endpoint) name(repo, ref string) string {
	if strings.Contains(ref, ":") {
		return e.base.Host + "/" + repo + "@" + ref
	}
	return e.base.Host + "/" + repo + ":" + ref
}

// send sends one request; header holds name, value pairs. A body of size 0
// is sent as http.NoBody: 0 with a body would mean "unknown", chunked.
func (e *Endpoint) send(ctx context.Context, method, u string, body io.Reader, size int64, header ...string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.ContentLength = size
		if size == 0 {
			req.Body = http.NoBody
		}
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return e.http.Do(req)
}

// drain reads a little of what is left, so the connection can be reused,
// and closes the body.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
	resp.Body.Close()
}

// failed turns an unexpected answer into an *Error. The bundled registry is
// ours, so a body that is not OCI error JSON is kept too (its start): it is
// often the only clue (a proxy's "storage on fire").
func failed(op, name, method, u string, resp *http.Response) *Error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	se := newStatusError(method, redact(u), resp, body)
	if len(se.details) == 0 {
		if s := strings.TrimSpace(string(body)); s != "" {
			if len(s) > maxErrMessage {
				s = s[:maxErrMessage] + "..."
			}
			se.details = append(se.details, s)
		}
	}
	return newError(op, name, se)
}

// redact drops the query (upload state tokens) from u for messages.
func redact(u string) string {
	if i := strings.IndexByte(u, '?'); i >= 0 {
		return u[:i]
	}
	return u
}

// BlobExists HEADs blob d in repo.
func (e *Endpoint) BlobExists(ctx context.Context, repo string, d digest.Digest) (bool, error) {
	const op = "check blob"
	u := e.url(repo, "blobs", d.String())
	resp, err := e.send(ctx, http.MethodHead, u, nil, 0)
	if err != nil {
		return false, newError(op, e.name(repo, d.String()), err)
	}
	defer drain(resp)
	switch resp.StatusCode {
	case http.StatusOK:
		return true, nil
	case http.StatusNotFound:
		return false, nil
	}
	return false, failed(op, e.name(repo, d.String()), http.MethodHead, u, resp)
}

// StartUpload opens a blob upload session in repo and returns its
// location. With from set it first asks for a cross-repository mount of d
// from that repository: mounted is true when the registry did so (201);
// otherwise (202) it opened a session as a plain POST would.
func (e *Endpoint) StartUpload(ctx context.Context, repo string, d digest.Digest, from string) (mounted bool, location string, err error) {
	const op = "start upload"
	u := e.base.String() + "/v2/" + repo + "/blobs/uploads/"
	if from != "" {
		u += "?" + url.Values{"mount": {d.String()}, "from": {from}}.Encode()
	}
	resp, err := e.send(ctx, http.MethodPost, u, nil, 0)
	if err != nil {
		return false, "", newError(op, e.name(repo, d.String()), err)
	}
	defer drain(resp)
	switch {
	case resp.StatusCode == http.StatusCreated && from != "":
		return true, "", nil
	case resp.StatusCode == http.StatusAccepted:
		loc, err := e.resolve(resp.Header.Get("Location"))
		if err != nil {
			return false, "", newError(op, e.name(repo, d.String()), fmt.Errorf("POST %s: %w", redact(u), err))
		}
		return false, loc, nil
	}
	return false, "", failed(op, e.name(repo, d.String()), http.MethodPost, u, resp)
}

func (e *Endpoint) resolve(loc string) (string, error) {
	if loc == "" {
		return "", fmt.Errorf("upload session without Location")
	}
	l, err := url.Parse(loc)
	if err != nil {
		return "", fmt.Errorf("bad upload Location %q: %w", loc, err)
	}
	return e.base.ResolveReference(l).String(), nil
}

// PutBlob completes the upload session at location with one PUT streaming
// the whole blob (body, desc.Size bytes) with the digest parameter, which
// the registry verifies before it commits. The caller may verify body as
// it streams (failing a read aborts the PUT short, so nothing is committed).
func (e *Endpoint) PutBlob(ctx context.Context, location string, desc ocispec.Descriptor, body io.Reader) error {
	const op = "upload blob"
	u, err := url.Parse(location)
	if err != nil {
		return newError(op, desc.Digest.String(), fmt.Errorf("bad upload location: %w", err))
	}
	q := u.Query()
	q.Set("digest", desc.Digest.String())
	u.RawQuery = q.Encode()
	name := e.base.Host + "@" + desc.Digest.String()
	resp, err := e.send(ctx, http.MethodPut, u.String(), body, desc.Size, "Content-Type", "application/octet-stream")
	if err != nil {
		return newError(op, name, err)
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusCreated {
		return failed(op, name, http.MethodPut, u.String(), resp)
	}
	if h := resp.Header.Get("Docker-Content-Digest"); h != "" && h != desc.Digest.String() {
		return newError(op, name, fmt.Errorf("PUT %s: registry committed %s: %w", redact(u.String()), h, ErrDigestMismatch))
	}
	return nil
}

// CancelUpload deletes an upload session, best effort: the registry purges
// abandoned sessions by itself, this only frees them sooner.
func (e *Endpoint) CancelUpload(ctx context.Context, location string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if resp, err := e.send(ctx, http.MethodDelete, location, nil, 0); err == nil {
		drain(resp)
	}
}

// PushBlob uploads blob desc into repo from body (POST, then one PUT),
// whether or not the registry has it; for pushers that know it does not.
func (e *Endpoint) PushBlob(ctx context.Context, repo string, desc ocispec.Descriptor, body io.Reader) error {
	_, loc, err := e.StartUpload(ctx, repo, desc.Digest, "")
	if err != nil {
		return err
	}
	if err := e.PutBlob(ctx, loc, desc, body); err != nil {
		e.CancelUpload(ctx, loc)
		return err
	}
	return nil
}

// ManifestDigest HEADs a manifest by digest or tag (ref) in repo and returns
// the digest the registry has under it, or "" when it has none.
func (e *Endpoint) ManifestDigest(ctx context.Context, repo, ref string) (digest.Digest, error) {
	const op = "check manifest"
	u := e.url(repo, "manifests", ref)
	resp, err := e.send(ctx, http.MethodHead, u, nil, 0, "Accept", manifestAccept)
	if err != nil {
		return "", newError(op, e.name(repo, ref), err)
	}
	defer drain(resp)
	switch resp.StatusCode {
	case http.StatusOK:
		h := resp.Header.Get("Docker-Content-Digest")
		d, err := digest.Parse(h)
		if err != nil {
			return "", newError(op, e.name(repo, ref), fmt.Errorf("HEAD %s: invalid Docker-Content-Digest %q", u, h))
		}
		return d, nil
	case http.StatusNotFound:
		return "", nil
	}
	return "", failed(op, e.name(repo, ref), http.MethodHead, u, resp)
}

// PushManifest PUTs manifest body, described by desc, into repo under ref
// (its digest or a tag).
func (e *Endpoint) PushManifest(ctx context.Context, repo, ref string, desc ocispec.Descriptor, body []byte) error {
	const op = "push manifest"
	u := e.url(repo, "manifests", ref)
	resp, err := e.send(ctx, http.MethodPut, u, bytes.NewReader(body), int64(len(body)), "Content-Type", desc.MediaType)
	if err != nil {
		return newError(op, e.name(repo, ref), err)
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusCreated {
		return failed(op, e.name(repo, ref), http.MethodPut, u, resp)
	}
	if h := resp.Header.Get("Docker-Content-Digest"); h != "" && h != desc.Digest.String() {
		return newError(op, e.name(repo, ref), fmt.Errorf("PUT %s: registry stored it as %s: %w", u, h, ErrDigestMismatch))
	}
	return nil
}

// FetchManifest GETs manifest d of repo and returns its bytes, verified
// against d, with its descriptor. A 404 is an *Error that IsNotFound.
func (e *Endpoint) FetchManifest(ctx context.Context, repo string, d digest.Digest) ([]byte, Descriptor, error) {
	const op = "fetch manifest"
	name := e.name(repo, d.String())
	u := e.url(repo, "manifests", d.String())
	resp, err := e.send(ctx, http.MethodGet, u, nil, 0, "Accept", manifestAccept)
	if err != nil {
		return nil, Descriptor{}, newError(op, name, err)
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusOK {
		return nil, Descriptor{}, failed(op, name, http.MethodGet, u, resp)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestSize+1))
	if err != nil {
		return nil, Descriptor{}, newError(op, name, fmt.Errorf("GET %s: %w", u, err))
	}
	if len(body) > maxManifestSize {
		return nil, Descriptor{}, newError(op, name, fmt.Errorf("GET %s: manifest larger than %d bytes", u, maxManifestSize))
	}
	desc, err := manifestDescriptor(u, d, resp.Header.Get("Content-Type"), body)
	if err != nil {
		return nil, Descriptor{}, newError(op, name, err)
	}
	return body, desc, nil
}

// DeleteManifest deletes manifest d of repo by digest (and with it the tags
// on it). gone reports it was already absent (404), which counts as done.
func (e *Endpoint) DeleteManifest(ctx context.Context, repo string, d digest.Digest) (gone bool, err error) {
	const op = "delete manifest"
	name := e.name(repo, d.String())
	u := e.url(repo, "manifests", d.String())
	resp, err := e.send(ctx, http.MethodDelete, u, nil, 0)
	if err != nil {
		return false, newError(op, name, err)
	}
	defer drain(resp)
	switch resp.StatusCode {
	case http.StatusAccepted, http.StatusOK, http.StatusNoContent:
		return false, nil
	case http.StatusNotFound:
		return true, nil
	}
	return false, failed(op, name, http.MethodDelete, u, resp)
}

// Open sends a GET or HEAD for a manifest or blob of repo by digest (kind
// "manifests" or "blobs") and returns the response unread, for streaming;
// accept and rangeHeader are forwarded when set, and the answer is asked
// uncompressed so its Content-Length is the content's. The caller closes
// the body and checks the status; the content is not verified here.
func (e *Endpoint) Open(ctx context.Context, method, repo, kind string, d digest.Digest, accept []string, rangeHeader, userAgent string) (*http.Response, error) {
	name := e.name(repo, d.String())
	if kind != "manifests" && kind != "blobs" {
		return nil, newError("open", name, fmt.Errorf("unknown content kind %q", kind))
	}
	req, err := http.NewRequestWithContext(ctx, method, e.url(repo, kind, d.String()), nil)
	if err != nil {
		return nil, newError("open", name, err)
	}
	if len(accept) > 0 {
		req.Header["Accept"] = accept
	}
	if rangeHeader != "" {
		req.Header.Set("Range", rangeHeader)
	}
	req.Header.Set("Accept-Encoding", "identity")
	if userAgent != "" {
		req.Header.Set("User-Agent", userAgent)
	}
	resp, err := e.http.Do(req)
	if err != nil {
		return nil, newError("open", name, err)
	}
	return resp, nil
}

// ResponseError turns an unexpected answer to a request sent elsewhere (a
// body streamed through Open) into an *Error carrying its status and
// Retry-After; it reads a bounded part of the body, the caller closes it.
func ResponseError(op, name string, resp *http.Response) *Error {
	method, u := "", ""
	if resp.Request != nil {
		method, u = resp.Request.Method, resp.Request.URL.String()
	}
	return failed(op, name, method, u, resp)
}
