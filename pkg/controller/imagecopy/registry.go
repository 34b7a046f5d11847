package imagecopy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/tagger-project/tagger/pkg/registryclient"
)

// maxErrorBody bounds how much of an error answer is read into a message.
const maxErrorBody = 4 << 10

// manifestAccept admits every manifest type: the distribution registry
// answers 404 to a manifest HEAD/GET whose Accept does not admit its type.
var manifestAccept = strings.Join([]string{
	registryclient.MediaTypeOCIIndex,
	registryclient.MediaTypeOCIManifest,
	registryclient.MediaTypeDockerManifestList,
	registryclient.MediaTypeDockerManifest,
}, ", ")

// registry speaks the push side of the distribution API to the bundled
// registry.
type registry struct {
	base *url.URL
	http *http.Client
}

func newRegistry(base string, hc *http.Client) (*registry, error) {
	u, err := url.Parse(strings.TrimSuffix(base, "/"))
	if err != nil {
		return nil, fmt.Errorf("bundled registry URL %q: %w", base, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("bundled registry URL %q: want http://host:port or https://host:port", base)
	}
	if hc == nil {
		// No overall timeout: a large layer may stream for a long time;
		// the caller's context bounds it.
		hc = &http.Client{}
	}
	return &registry{base: u, http: hc}, nil
}

func (r *registry) url(repo, kind, ref string) string {
	return r.base.String() + "/v2/" + repo + "/" + kind + "/" + ref
}

// send sends one request and returns the response; the caller closes it.
func (r *registry) send(ctx context.Context, method, u string, body io.Reader, size int64, header ...string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.ContentLength = size
		if size == 0 {
			req.Body = http.NoBody // 0 with a body would mean "unknown": chunked
		}
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return r.http.Do(req)
}

// statusError describes an unexpected answer, with the start of its body
// (the registry's OCI error JSON).
func statusError(method, u string, resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	msg := fmt.Sprintf("%s %s: %s", method, redact(u), resp.Status)
	if s := strings.TrimSpace(string(b)); s != "" {
		msg += ": " + s
	}
	return errors.New(msg)
}

// redact drops the query (upload state tokens) from u for messages.
func redact(u string) string {
	if i := strings.IndexByte(u, '?'); i >= 0 {
		return u[:i]
	}
	return u
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
	resp.Body.Close()
}

// blobExists HEADs a blob in repo.
func (r *registry) blobExists(ctx context.Context, repo string, d digest.Digest) (bool, error) {
	u := r.url(repo, "blobs", d.String())
	resp, err := r.send(ctx, http.MethodHead, u, nil, 0)
	if err != nil {
		return false, err
	}
	defer drain(resp)
	switch resp.StatusCode {
	case http.StatusOK:
		return true, nil
	case http.StatusNotFound:
		return false, nil
	}
	return false, statusError(http.MethodHead, u, resp)
}

// startUpload opens an upload session in repo and returns its location.
// With from set it first asks for a cross-repository mount of d: mounted
// is true when the registry did so (201); otherwise (202) it opened a
// session as a plain POST would.
func (r *registry) startUpload(ctx context.Context, repo string, d digest.Digest, from string) (mounted bool, location string, err error) {
	u := r.base.String() + "/v2/" + repo + "/blobs/uploads/"
	if from != "" {
		u += "?" + url.Values{"mount": {d.String()}, "from": {from}}.Encode()
	}
	resp, err := r.send(ctx, http.MethodPost, u, nil, 0)
	if err != nil {
		return false, "", err
	}
	defer drain(resp)
	switch {
	case resp.StatusCode == http.StatusCreated && from != "":
		return true, "", nil
	case resp.StatusCode == http.StatusAccepted:
		loc, err := r.resolve(resp.Header.Get("Location"))
		if err != nil {
			return false, "", fmt.Errorf("POST %s: %w", redact(u), err)
		}
		return false, loc, nil
	}
	return false, "", statusError(http.MethodPost, u, resp)
}

func (r *registry) resolve(loc string) (string, error) {
	if loc == "" {
		return "", errors.New("upload session without Location")
	}
	l, err := url.Parse(loc)
	if err != nil {
		return "", fmt.Errorf("bad upload Location %q: %w", loc, err)
	}
	return r.base.ResolveReference(l).String(), nil
}

// putBlob completes the upload session at location with one PUT carrying
// the whole blob (body, size bytes) and the digest parameter, which the
// registry verifies before committing.
func (r *registry) putBlob(ctx context.Context, location string, d digest.Digest, size int64, body io.Reader) error {
	u, err := url.Parse(location)
	if err != nil {
		return fmt.Errorf("bad upload location: %w", err)
	}
	q := u.Query()
	q.Set("digest", d.String())
	u.RawQuery = q.Encode()
	resp, err := r.send(ctx, http.MethodPut, u.String(), body, size, "Content-Type", "application/octet-stream")
	if err != nil {
		return err
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusCreated {
		return statusError(http.MethodPut, u.String(), resp)
	}
	if h := resp.Header.Get("Docker-Content-Digest"); h != "" && h != d.String() {
		return fmt.Errorf("PUT %s: registry committed %s", redact(u.String()), h)
	}
	return nil
}

// cancelUpload deletes an upload session, best effort: the registry purges
// abandoned sessions by itself, this only frees them sooner.
func (r *registry) cancelUpload(ctx context.Context, location string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if resp, err := r.send(ctx, http.MethodDelete, location, nil, 0); err == nil {
		drain(resp)
	}
}

// manifestDigest HEADs a manifest by digest or tag and returns the digest
// the registry has under it, or "" when it has none.
func (r *registry) manifestDigest(ctx context.Context, repo, ref string) (digest.Digest, error) {
	u := r.url(repo, "manifests", ref)
	resp, err := r.send(ctx, http.MethodHead, u, nil, 0, "Accept", manifestAccept)
	if err != nil {
		return "", err
	}
	defer drain(resp)
	switch resp.StatusCode {
	case http.StatusOK:
		h := resp.Header.Get("Docker-Content-Digest")
		d, err := digest.Parse(h)
		if err != nil {
			return "", fmt.Errorf("HEAD %s: invalid Docker-Content-Digest %q", u, h)
		}
		return d, nil
	case http.StatusNotFound:
		return "", nil
	}
	return "", statusError(http.MethodHead, u, resp)
}

// putManifest PUTs a manifest under ref (its digest or a tag).
func (r *registry) putManifest(ctx context.Context, repo, ref string, m manifest) error {
	u := r.url(repo, "manifests", ref)
	resp, err := r.send(ctx, http.MethodPut, u, bytes.NewReader(m.body), int64(len(m.body)), "Content-Type", m.desc.MediaType)
	if err != nil {
		return err
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusCreated {
		return statusError(http.MethodPut, u, resp)
	}
	if h := resp.Header.Get("Docker-Content-Digest"); h != "" && h != m.desc.Digest.String() {
		return fmt.Errorf("PUT %s: registry stored it as %s", u, h)
	}
	return nil
}

// maxManifestSize bounds manifest reads, as registries do.
const maxManifestSize = 4 << 20

// getManifest GETs a manifest by digest and verifies it.
func (r *registry) getManifest(ctx context.Context, repo string, d digest.Digest) ([]byte, registryclient.Descriptor, error) {
	u := r.url(repo, "manifests", d.String())
	resp, err := r.send(ctx, http.MethodGet, u, nil, 0, "Accept", manifestAccept)
	if err != nil {
		return nil, registryclient.Descriptor{}, err
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusOK {
		return nil, registryclient.Descriptor{}, statusError(http.MethodGet, u, resp)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestSize+1))
	if err != nil {
		return nil, registryclient.Descriptor{}, fmt.Errorf("GET %s: %w", u, err)
	}
	if len(body) > maxManifestSize {
		return nil, registryclient.Descriptor{}, fmt.Errorf("GET %s: manifest larger than %d bytes", u, maxManifestSize)
	}
	if got := d.Algorithm().FromBytes(body); got != d {
		return nil, registryclient.Descriptor{}, fmt.Errorf("GET %s: %w", u, &contentError{msg: fmt.Sprintf("digest mismatch (got %s)", got), kind: ErrDigestMismatch})
	}
	var m struct {
		MediaType string `json:"mediaType"`
	}
	_ = json.Unmarshal(body, &m)
	mt := m.MediaType
	if mt == "" {
		mt, _, _ = mime.ParseMediaType(resp.Header.Get("Content-Type"))
	}
	return body, registryclient.Descriptor{Digest: d, MediaType: mt, Size: int64(len(body))}, nil
}
