package hooks

import (
	"encoding/json"
	"slices"
	"strings"

	"github.com/tagger-project/tagger/pkg/pins"
)

// quayPayload is the part of a Quay "Repository Push" notification tagger
// reads (https://docs.quay.io/guides/notifications.html).
type quayPayload struct {
	// DockerURL is the repository as pulled, "quay.io/mynamespace/repository";
	// a self-hosted Quay names its own host.
	DockerURL string `json:"docker_url"`
	// Repository is "mynamespace/repository".
	Repository string `json:"repository"`
	// UpdatedTags is a list of tag names; old Quay versions sent an object
	// mapping tag names to image ids.
	UpdatedTags json.RawMessage `json:"updated_tags"`
}

// parseQuay maps docker_url (or repository) and each of updated_tags to an
// image. A docker_url on "quay.io" is mapped to reg.Quay.
func parseQuay(body []byte, reg Registries) (event, error) {
	var p quayPayload
	if err := decodeJSON(body, &p); err != nil {
		return event{}, err
	}
	tags, err := quayTags(p.UpdatedTags)
	if err != nil {
		return event{}, err
	}
	host, repo := reg.Quay, p.Repository
	if p.DockerURL != "" {
		h, r, ok := strings.Cut(p.DockerURL, "/")
		if !ok || h == "" || r == "" {
			return event{}, badPayload("docker_url %q is not <host>/<repository>", p.DockerURL)
		}
		host, repo = h, r
		if host == "quay.io" {
			host = reg.Quay
		}
	}
	if repo == "" {
		return event{}, badPayload("missing docker_url and repository")
	}
	refs := make([]pins.Reference, 0, len(tags))
	for _, tag := range tags {
		ref, err := compose(host, repo, tag)
		if err != nil {
			return event{}, err
		}
		refs = append(refs, ref)
	}
	return event{refs: refs}, nil
}

// quayTags reads updated_tags in either form, sorted and de-duplicated.
func quayTags(raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, badPayload("missing updated_tags")
	}
	var tags []string
	if err := json.Unmarshal(raw, &tags); err != nil {
		var byName map[string]json.RawMessage
		if err := json.Unmarshal(raw, &byName); err != nil {
			return nil, badPayload("updated_tags: want a list of tag names or an object keyed by tag name")
		}
		for name := range byName {
			tags = append(tags, name)
		}
	}
	slices.Sort(tags)
	tags = slices.Compact(tags)
	if len(tags) == 0 {
		return nil, badPayload("updated_tags is empty")
	}
	if len(tags) > maxRefsPerDelivery {
		return nil, badPayload("updated_tags names %d tags, at most %d are accepted", len(tags), maxRefsPerDelivery)
	}
	return tags, nil
}
