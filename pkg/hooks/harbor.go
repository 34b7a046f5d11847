package hooks

import (
	"strings"

	"github.com/tagger-project/tagger/pkg/pins"
)

// Harbor event types that mean "an artifact was pushed".
const (
	harborPushArtifact = "PUSH_ARTIFACT" // Harbor 2.x
	harborPushImage    = "pushImage"     // Harbor 1.x
)

// harborPayload is the part of a Harbor webhook ("Default" payload format)
// tagger reads (https://goharbor.io/docs/main/working-with-projects/project-configuration/configure-webhooks/).
type harborPayload struct {
	Type      string `json:"type"`
	EventData *struct {
		Resources  []harborResource `json:"resources"`
		Repository *struct {
			RepoFullName string `json:"repo_full_name"`
		} `json:"repository"`
	} `json:"event_data"`
}

type harborResource struct {
	Tag string `json:"tag"`
	// ResourceURL is "harbor.example.com/library/nginx:1.27", or
	// ".../nginx@sha256:..." for an artifact pushed by digest.
	ResourceURL string `json:"resource_url"`
}

// parseHarbor maps each tagged resource of a push event to an image: from
// resource_url when present, else from reg.Harbor, repository.repo_full_name
// and the resource's tag. Other event types are ignored; artifacts pushed by
// digest only are skipped.
func parseHarbor(body []byte, reg Registries) (event, error) {
	var p harborPayload
	if err := decodeJSON(body, &p); err != nil {
		return event{}, err
	}
	switch p.Type {
	case harborPushArtifact, harborPushImage:
	case "":
		return event{}, badPayload("missing type")
	default:
		return event{ignored: "event type " + p.Type}, nil
	}
	if p.EventData == nil {
		return event{}, badPayload("missing event_data")
	}
	if len(p.EventData.Resources) == 0 {
		return event{}, badPayload("missing event_data.resources")
	}
	if len(p.EventData.Resources) > maxRefsPerDelivery {
		return event{}, badPayload("event_data.resources has %d entries, at most %d are accepted", len(p.EventData.Resources), maxRefsPerDelivery)
	}
	fullName := ""
	if p.EventData.Repository != nil {
		fullName = p.EventData.Repository.RepoFullName
	}
	var refs []pins.Reference
	for _, res := range p.EventData.Resources {
		ref, ok, err := harborRef(res, fullName, reg.Harbor)
		if err != nil {
			return event{}, err
		}
		if ok {
			refs = append(refs, ref)
		}
	}
	if len(refs) == 0 {
		return event{ignored: "no tagged artifact"}, nil
	}
	return event{refs: refs}, nil
}

// harborRef is one resource's image; ok is false for an untagged artifact.
func harborRef(res harborResource, fullName, harborHost string) (ref pins.Reference, ok bool, err error) {
	if res.ResourceURL == "" {
		if res.Tag == "" || looksLikeDigest(res.Tag) {
			return pins.Reference{}, false, nil
		}
		if fullName == "" {
			return pins.Reference{}, false, badPayload("resource without resource_url and no event_data.repository.repo_full_name")
		}
		if harborHost == "" {
			return pins.Reference{}, false, badPayload("resource without resource_url and no Harbor registry host configured")
		}
		ref, err := compose(harborHost, fullName, res.Tag)
		return ref, err == nil, err
	}
	if strings.Contains(res.ResourceURL, "@") {
		return pins.Reference{}, false, nil // pushed by digest
	}
	host, rest, found := strings.Cut(res.ResourceURL, "/")
	if !found || host == "" || rest == "" {
		return pins.Reference{}, false, badPayload("resource_url %q is not <host>/<repository>:<tag>", res.ResourceURL)
	}
	repo, tag := rest, ""
	if i := strings.LastIndex(rest, ":"); i >= 0 {
		repo, tag = rest[:i], rest[i+1:]
	}
	switch {
	case tag == "" && (res.Tag == "" || looksLikeDigest(res.Tag)):
		return pins.Reference{}, false, nil
	case tag == "":
		tag = res.Tag
	case res.Tag != "" && !looksLikeDigest(res.Tag) && res.Tag != tag:
		return pins.Reference{}, false, badPayload("resource_url tag %q disagrees with tag %q", tag, res.Tag)
	}
	ref, err = compose(host, repo, tag)
	return ref, err == nil, err
}
