package hooks

import (
	"errors"

	"github.com/tagger-project/tagger/pkg/pins"
)

// genericPayload is what a CI pipeline posts after a push:
// {"image": "registry.example.com/team/app:v1", "id": "run-4711"}.
type genericPayload struct {
	Image string `json:"image"`
	// ID names the push (a CI run id, the pushed digest). It is only read
	// by the coalescing queue, through the payload: two pushes of one tag
	// within the coalescing window with different ids are both checked,
	// while byte-identical payloads count as one delivery.
	ID string `json:"id,omitempty"`
}

// parseGeneric normalizes image the way Tags are ("nginx" is
// docker.io/library/nginx:latest). A digest reference is refused: it names
// nothing that can move.
func parseGeneric(body []byte) (event, error) {
	var p genericPayload
	if err := decodeJSON(body, &p); err != nil {
		return event{}, err
	}
	if p.Image == "" {
		return event{}, badPayload("missing image")
	}
	ref, err := pins.ParseReference(p.Image)
	if errors.Is(err, pins.ErrDigestReference) {
		return event{}, badPayload("image %q names a digest; name the pushed tag", p.Image)
	}
	if err != nil {
		return event{}, badPayload("invalid image %q", p.Image)
	}
	return event{refs: []pins.Reference{ref}}, nil
}
