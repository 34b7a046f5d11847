// Package pins holds tagger's pure pinning logic: image reference
// normalization, the generation rules of a Tag's history, conflict resolution
// between Tags naming the same image, and the in-memory pin table the node
// agent serves from. Nothing here does I/O.
package pins

import (
	"errors"
	"fmt"
	"strings"

	"github.com/distribution/reference"
)

// DockerHub is the canonical name of Docker Hub in normalized references.
const DockerHub = "docker.io"

// dockerHubAPIHost is where Docker Hub's registry API actually lives; containerd
// maps docker.io to it the same way.
const dockerHubAPIHost = "registry-1.docker.io"

// Reference is a normalized tag reference: registry host, repository path and tag.
type Reference struct {
	// Registry is the registry host as users write it, with port if any
	// ("docker.io", "quay.io", "localhost:5000").
	Registry string
	// Repository is the path inside the registry ("library/nginx").
	Repository string
	// Tag is the tag ("1.27"); normalization fills in "latest".
	Tag string
}

// ErrDigestReference is returned for references that name a digest: those are
// already immutable and are not something tagger pins.
var ErrDigestReference = errors.New("reference names a digest; a Tag pins a tag reference")

// ParseReference normalizes s the way containerd and the Docker CLI do:
// "nginx" -> docker.io/library/nginx:latest, "localhost:5000/a:b" stays.
func ParseReference(s string) (Reference, error) {
	if strings.TrimSpace(s) == "" {
		return Reference{}, errors.New("parse image reference: empty")
	}
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return Reference{}, fmt.Errorf("parse image reference %q: %w", s, err)
	}
	if _, ok := named.(reference.Digested); ok {
		return Reference{}, fmt.Errorf("parse image reference %q: %w", s, ErrDigestReference)
	}
	named = reference.TagNameOnly(named)
	tagged, ok := named.(reference.Tagged)
	if !ok {
		return Reference{}, fmt.Errorf("parse image reference %q: no tag", s)
	}
	return Reference{
		Registry:   reference.Domain(named),
		Repository: reference.Path(named),
		Tag:        tagged.Tag(),
	}, nil
}

// String is the full normalized form, "docker.io/library/nginx:1.27".
func (r Reference) String() string { return r.Name() + ":" + r.Tag }

// Name is the repository's full name without the tag, "docker.io/library/nginx".
func (r Reference) Name() string { return r.Registry + "/" + r.Repository }

// APIHost is the host that serves the registry's HTTP API; it differs from
// Registry only for Docker Hub.
func (r Reference) APIHost() string { return APIHost(r.Registry) }

// APIHost maps a registry name to the host serving its API.
func APIHost(registry string) string {
	if registry == DockerHub || registry == "index.docker.io" {
		return dockerHubAPIHost
	}
	return registry
}

// RegistryFromNS maps the `ns` query value containerd sends to a mirror
// (the registry host as written in the image reference) to tagger's normalized
// registry name, so "registry-1.docker.io" and "index.docker.io" meet "docker.io".
func RegistryFromNS(ns string) string {
	switch ns {
	case dockerHubAPIHost, "index.docker.io":
		return DockerHub
	}
	return ns
}

// CacheRepository is the repository name of this reference's copy in the
// bundled registry: "<registry-host>/<repository>", with ":port" -> "_port"
// because ':' is not allowed in repository names.
func (r Reference) CacheRepository() string {
	return strings.ReplaceAll(r.Registry, ":", "_") + "/" + r.Repository
}
