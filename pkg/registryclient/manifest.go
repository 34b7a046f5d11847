package registryclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/tagger-project/tagger/pkg/pins"
)

// Config media types whose os/architecture Platforms reads.
const (
	mediaTypeOCIConfig    = "application/vnd.oci.image.config.v1+json"
	mediaTypeDockerConfig = "application/vnd.docker.container.image.v1+json"
	maxConfigSize         = 4 << 20
)

// Platforms lists the platforms of the manifest d of ref's repository, as
// sorted unique "os/arch[/variant]": for an index or manifest list those of
// its entries (attestations, listed as unknown/unknown, are skipped), for an
// image manifest the one in its config. Manifest and config are verified
// against their digests. A manifest whose config is not an image config (an
// artifact) or names no os/architecture has no platforms.
func (c *Client) Platforms(ctx context.Context, ref pins.Reference, d Descriptor, creds Credentials) ([]string, error) {
	body, desc, err := c.FetchManifest(ctx, ref, d.Digest, creds)
	if err != nil {
		return nil, err
	}
	name := ref.Name() + "@" + d.Digest.String()
	switch desc.MediaType {
	case MediaTypeOCIIndex, MediaTypeDockerManifestList:
		var idx struct {
			Manifests []struct {
				Platform *platform `json:"platform"`
			} `json:"manifests"`
		}
		if err := json.Unmarshal(body, &idx); err != nil {
			return nil, newError("platforms", name, fmt.Errorf("decode index: %w", err))
		}
		var out []string
		for _, m := range idx.Manifests {
			if m.Platform == nil || m.Platform.OS == "unknown" && m.Platform.Architecture == "unknown" {
				continue
			}
			out = append(out, m.Platform.String())
		}
		slices.Sort(out)
		return slices.Compact(out), nil
	case MediaTypeOCIManifest, MediaTypeDockerManifest:
		var m struct {
			Config struct {
				MediaType string        `json:"mediaType"`
				Digest    digest.Digest `json:"digest"`
				Size      int64         `json:"size"`
			} `json:"config"`
		}
		if err := json.Unmarshal(body, &m); err != nil {
			return nil, newError("platforms", name, fmt.Errorf("decode manifest: %w", err))
		}
		if m.Config.MediaType != mediaTypeOCIConfig && m.Config.MediaType != mediaTypeDockerConfig {
			return nil, nil
		}
		if m.Config.Size > maxConfigSize {
			return nil, newError("fetch config", ref.Name()+"@"+m.Config.Digest.String(),
				fmt.Errorf("config is %d bytes, more than the %d allowed", m.Config.Size, maxConfigSize))
		}
		cfg, err := c.fetchBlob(ctx, "fetch config", ref, m.Config.Digest, maxConfigSize, creds)
		if err != nil {
			return nil, err
		}
		var p platform
		if err := json.Unmarshal(cfg, &p); err != nil {
			return nil, newError("fetch config", ref.Name()+"@"+m.Config.Digest.String(), fmt.Errorf("decode config: %w", err))
		}
		// Platforms are information, not a condition for pinning: an image
		// built onto scratch may name none, and containerd pulls it anyway.
		if p.OS == "" || p.Architecture == "" {
			return nil, nil
		}
		return []string{p.String()}, nil
	}
	return nil, newError("platforms", name, fmt.Errorf("unsupported manifest media type %q", desc.MediaType))
}

type platform struct {
	OS           string `json:"os"`
	Architecture string `json:"architecture"`
	Variant      string `json:"variant,omitempty"`
}

func (p platform) String() string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

func isManifestType(mt string) bool {
	switch mt {
	case MediaTypeDockerManifest, MediaTypeDockerManifestList, MediaTypeOCIManifest, MediaTypeOCIIndex:
		return true
	}
	return false
}

// descriptorFromHeaders reads a manifest HEAD answer. ok is false when a
// piece is missing or the Content-Type is not a manifest type (some
// registries say application/json), so the caller GETs the manifest instead;
// a digest that does not parse is an error.
func descriptorFromHeaders(resp *http.Response) (d Descriptor, ok bool, err error) {
	h := resp.Header.Get("Docker-Content-Digest")
	mt := contentType(resp.Header.Get("Content-Type"))
	if h == "" || !isManifestType(mt) || resp.ContentLength < 0 {
		return Descriptor{}, false, nil
	}
	dg, err := digest.Parse(h)
	if err != nil {
		return Descriptor{}, false, fmt.Errorf("invalid Docker-Content-Digest: %w", err)
	}
	return Descriptor{Digest: dg, MediaType: mt, Size: resp.ContentLength}, true, nil
}

// manifestDescriptor checks manifest body, read with GET u, against its
// digest d and describes it; the media type comes from manifestMediaType.
func manifestDescriptor(u string, d digest.Digest, contentTypeHeader string, body []byte) (Descriptor, error) {
	if err := verify(body, d); err != nil {
		return Descriptor{}, fmt.Errorf("GET %s: %w", u, err)
	}
	mt, err := manifestMediaType(contentTypeHeader, body)
	if err != nil {
		return Descriptor{}, fmt.Errorf("GET %s: %w", u, err)
	}
	return Descriptor{Digest: d, MediaType: mt, Size: int64(len(body))}, nil
}

// manifestMediaType decides a manifest's media type: the body's own
// mediaType field (it is digest-verified), else a manifest Content-Type,
// else its shape.
func manifestMediaType(header string, body []byte) (string, error) {
	var m struct {
		SchemaVersion int              `json:"schemaVersion"`
		MediaType     string           `json:"mediaType"`
		Manifests     *json.RawMessage `json:"manifests"`
		Config        *json.RawMessage `json:"config"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return "", fmt.Errorf("decode manifest: %w", err)
	}
	switch {
	case m.SchemaVersion == 1:
		return "", errors.New("docker schema 1 manifests are not supported")
	case isManifestType(m.MediaType):
		return m.MediaType, nil
	case m.MediaType != "":
		return "", fmt.Errorf("unsupported manifest media type %q", m.MediaType)
	}
	if ct := contentType(header); isManifestType(ct) {
		return ct, nil
	}
	switch {
	case m.Manifests != nil:
		return MediaTypeOCIIndex, nil
	case m.Config != nil:
		return MediaTypeOCIManifest, nil
	}
	return "", errors.New("content is not an image manifest or index")
}

func contentType(h string) string {
	if mt, _, err := mime.ParseMediaType(h); err == nil {
		return mt
	}
	return strings.TrimSpace(h)
}

// verify checks that b hashes to want with want's algorithm.
func verify(b []byte, want digest.Digest) error {
	if !want.Algorithm().Available() {
		return fmt.Errorf("unsupported digest algorithm %q", want.Algorithm())
	}
	if got := want.Algorithm().FromBytes(b); got != want {
		return fmt.Errorf("%w: got %s, want %s", ErrDigestMismatch, got, want)
	}
	return nil
}
