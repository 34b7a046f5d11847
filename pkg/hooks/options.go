package hooks

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Provider names, as they appear in URLs, annotation values and the
// "provider" metric label.
const (
	ProviderDockerHub = "dockerhub"
	ProviderQuay      = "quay"
	ProviderGitHub    = "github"
	ProviderHarbor    = "harbor"
	ProviderGeneric   = "generic"
)

// DefaultCoalesce is the default coalescing window.
const DefaultCoalesce = 2 * time.Second

// MaxBodyBytes is the largest request body accepted (413 above).
const MaxBodyBytes = 1 << 20

// DefaultDockerHubCallbackHosts are the only hosts a Docker Hub callback_url
// may point at unless Options.DockerHubCallbackHosts says otherwise.
var DefaultDockerHubCallbackHosts = []string{"registry.hub.docker.com", "hub.docker.com"}

// Options configure a Server.
type Options struct {
	// Client reads Tags (List with the ImageIndex field selector, so it must
	// be a cache-backed client whose cache has that index, such as a
	// manager's GetClient()) and patches their annotations. Required.
	Client client.Client
	// Secrets enable providers; an empty secret disables its provider (404).
	Secrets Secrets
	// Coalesce is the window after a Tag's check in which further
	// notifications are merged (see the package doc). Default DefaultCoalesce.
	Coalesce time.Duration
	// DockerHubCallback makes the server report success to a Docker Hub
	// payload's callback_url after queuing its check; only https URLs on
	// DockerHubCallbackHosts are ever contacted, and redirects are not
	// followed.
	DockerHubCallback bool
	// DockerHubCallbackHosts overrides DefaultDockerHubCallbackHosts. An
	// entry without a port matches the host on port 443 only; one with a
	// port ("127.0.0.1:8443") matches exactly. Tests use it; production should
	// leave it unset.
	DockerHubCallbackHosts []string
	// HTTPClient sends Docker Hub callbacks. Default: one with
	// httplimits.Callback's timeouts. It is copied and its redirect policy replaced by "never follow".
	HTTPClient *http.Client
	// Registries maps providers to registry hosts. Zero fields take the
	// public defaults (docker.io, quay.io, ghcr.io).
	Registries Registries
	// Log receives one line per delivery (provider, result, images) and per
	// requested check. Default: discard.
	Log logrus.FieldLogger
	// Metrics, when not nil, registers the server's metrics there (e.g.
	// controller-runtime's metrics.Registry).
	Metrics prometheus.Registerer
	// OnCheckRequested, when not nil, is called by the worker after each
	// successful annotation patch. Tests use it to count checks.
	OnCheckRequested func(CheckRequest)
}

// Registries maps a provider's notion of "the registry" to a registry host as
// Tags name it. Tests point these at a local registry ("127.0.0.1:5000").
type Registries struct {
	// DockerHub is the host for Docker Hub's repo_name. Default "docker.io".
	DockerHub string
	// Quay is the host used when a Quay payload's docker_url names
	// "quay.io" (or has no docker_url). Self-hosted Quay payloads name their
	// own host, which is used as is. Default "quay.io".
	Quay string
	// GHCR is the host for GitHub packages. Default "ghcr.io".
	GHCR string
	// Harbor is the Harbor host used for a resource without resource_url
	// (tag + repo_full_name). No default: such resources are refused.
	Harbor string
}

func (r Registries) withDefaults() Registries {
	if r.DockerHub == "" {
		r.DockerHub = "docker.io"
	}
	if r.Quay == "" {
		r.Quay = "quay.io"
	}
	if r.GHCR == "" {
		r.GHCR = "ghcr.io"
	}
	return r
}

// Secrets holds one secret per provider. An empty secret disables that
// provider: its URL answers 404 as an unknown one does. String and GoString
// redact the values, so printing Options does not leak them.
type Secrets struct {
	// DockerHub is the <token> of /hooks/dockerhub/<token>.
	DockerHub string
	// Quay is the <token> of /hooks/quay/<token>.
	Quay string
	// GitHub is the webhook secret GitHub signs bodies with (X-Hub-Signature-256).
	GitHub string
	// Harbor is the exact Authorization header value Harbor's policy sends.
	Harbor string
	// Generic is the <token> of /hooks/generic/<token>.
	Generic string
}

// Secret keys LoadSecrets reads.
const (
	SecretKeyDockerHub = "dockerhub"
	SecretKeyQuay      = "quay"
	SecretKeyGitHub    = "github"
	SecretKeyHarbor    = "harbor"
	SecretKeyGeneric   = "generic"
)

// LoadSecrets reads a Kubernetes Secret's data (keys dockerhub, quay, github,
// harbor, generic; missing keys leave the provider disabled). Surrounding
// whitespace is trimmed: files made with `echo` end in a newline that no
// provider sends.
func LoadSecrets(data map[string][]byte) Secrets {
	get := func(k string) string { return strings.TrimSpace(string(data[k])) }
	return Secrets{
		DockerHub: get(SecretKeyDockerHub),
		Quay:      get(SecretKeyQuay),
		GitHub:    get(SecretKeyGitHub),
		Harbor:    get(SecretKeyHarbor),
		Generic:   get(SecretKeyGeneric),
	}
}

// String lists the enabled providers, never the secrets.
func (s Secrets) String() string {
	var on []string
	for _, p := range []struct {
		name, secret string
	}{
		{ProviderDockerHub, s.DockerHub}, {ProviderQuay, s.Quay}, {ProviderGitHub, s.GitHub},
		{ProviderHarbor, s.Harbor}, {ProviderGeneric, s.Generic},
	} {
		if p.secret != "" {
			on = append(on, p.name)
		}
	}
	return fmt.Sprintf("hooks.Secrets{enabled: %s}", strings.Join(on, ","))
}

// GoString is String, so %#v does not print the secrets either.
func (s Secrets) GoString() string { return s.String() }

// CheckRequest describes one annotation patch the worker made.
type CheckRequest struct {
	// Tag is the Tag's name.
	Tag string
	// Provider is the provider of the first notification in the window.
	Provider string
	// Value is the tagger.dev/check value written.
	Value string
}
