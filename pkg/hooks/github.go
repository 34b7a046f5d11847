package hooks

import (
	"net/url"
	"strings"

	"github.com/tagger-project/tagger/pkg/pins"
)

// GitHub event names (X-GitHub-Event) the receiver understands.
const (
	githubEventPackage         = "package"
	githubEventRegistryPackage = "registry_package" // the older name of the same event
	githubEventPing            = "ping"             // sent once when the webhook is created
)

// githubPayload is the part of a GitHub "package" / "registry_package" event
// tagger reads (https://docs.github.com/webhooks/webhook-events-and-payloads#package).
type githubPayload struct {
	Action          string         `json:"action"`
	Package         *githubPackage `json:"package"`
	RegistryPackage *githubPackage `json:"registry_package"`
}

type githubPackage struct {
	Name string `json:"name"`
	// Namespace is documented loosely: "owner" in some deliveries,
	// "owner/repository" in others. Owner.Login is preferred.
	Namespace   string `json:"namespace"`
	PackageType string `json:"package_type"`
	Owner       *struct {
		Login string `json:"login"`
	} `json:"owner"`
	PackageVersion *struct {
		ContainerMetadata *struct {
			Tag *struct {
				Name string `json:"name"`
			} `json:"tag"`
		} `json:"container_metadata"`
	} `json:"package_version"`
	Registry *struct {
		Type string `json:"type"`
	} `json:"registry"`
}

// isContainer tells container packages from npm, maven, ... ones. GitHub's
// own samples are inconsistent ("ecosystem" is "docker" even for npm), so it
// trusts package_type or registry.type.
func (p *githubPackage) isContainer() bool {
	kinds := []string{p.PackageType}
	if p.Registry != nil {
		kinds = append(kinds, p.Registry.Type)
	}
	for _, k := range kinds {
		if strings.EqualFold(k, "container") || strings.EqualFold(k, "docker") {
			return true
		}
	}
	return false
}

// parseGitHub maps a published container package version to
// <ghcr>/<owner>/<name>:<tag>, all lower case as GHCR names are.
func parseGitHub(eventName string, body []byte, reg Registries) (event, error) {
	switch eventName {
	case githubEventPing:
		return event{ignored: "ping"}, nil
	case githubEventPackage, githubEventRegistryPackage:
	case "":
		return event{}, badPayload("missing X-GitHub-Event header")
	default:
		return event{}, badPayload("unsupported GitHub event %q: subscribe the webhook to package events only", eventName)
	}
	var p githubPayload
	if err := decodeJSON(body, &p); err != nil {
		return event{}, err
	}
	pkg := p.Package
	if eventName == githubEventRegistryPackage {
		pkg = p.RegistryPackage
	}
	if pkg == nil {
		return event{}, badPayload("missing %s", eventName)
	}
	if p.Action == "" {
		return event{}, badPayload("missing action")
	}
	if p.Action != "published" {
		return event{ignored: "action " + p.Action}, nil
	}
	if !pkg.isContainer() {
		return event{ignored: "not a container package"}, nil
	}
	if pkg.Name == "" {
		return event{}, badPayload("missing %s.name", eventName)
	}
	owner := ""
	if pkg.Owner != nil {
		owner = pkg.Owner.Login
	}
	if owner == "" {
		owner, _, _ = strings.Cut(pkg.Namespace, "/")
	}
	if owner == "" {
		return event{}, badPayload("missing %s.owner.login", eventName)
	}
	if pkg.PackageVersion == nil || pkg.PackageVersion.ContainerMetadata == nil {
		return event{}, badPayload("missing %s.package_version.container_metadata", eventName)
	}
	tag := pkg.PackageVersion.ContainerMetadata.Tag
	if tag == nil || tag.Name == "" || looksLikeDigest(tag.Name) {
		// Every platform manifest of a multi-arch push is published too,
		// untagged; only the tagged version names something to check.
		return event{ignored: "untagged package version"}, nil
	}
	// Nested package names ("repo/sub") may arrive path-escaped.
	name, err := url.PathUnescape(pkg.Name)
	if err != nil {
		return event{}, badPayload("invalid package name %q", pkg.Name)
	}
	ref, err := compose(reg.GHCR, strings.ToLower(owner)+"/"+strings.ToLower(name), tag.Name)
	if err != nil {
		return event{}, err
	}
	return event{refs: []pins.Reference{ref}}, nil
}
