package hooks

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/tagger-project/tagger/pkg/pins"
)

// maxRefsPerDelivery bounds the images one delivery may name (a Quay push of
// many tags, a Harbor event with many resources); more is refused with 400.
const maxRefsPerDelivery = 256

// event is what a payload asks for: the tag references that were pushed.
type event struct {
	// refs are the pushed images, normalized.
	refs []pins.Reference
	// ignored, when not empty, says why an authenticated, well-formed
	// delivery names nothing to check (a ping, a delete, an untagged push).
	ignored string
	// callbackURL is Docker Hub's callback_url, not yet validated.
	callbackURL string
}

// payloadError is a payload that is malformed or lacks what is needed: 400.
type payloadError struct{ msg string }

func (e *payloadError) Error() string { return e.msg }

func badPayload(format string, args ...any) error {
	return &payloadError{msg: fmt.Sprintf(format, args...)}
}

func isPayloadError(err error) bool {
	var pe *payloadError
	return errors.As(err, &pe)
}

// decodeJSON decodes exactly one JSON value from body into v. Unknown fields
// are fine (providers add them all the time); wrong types, syntax errors and
// trailing data are not.
func decodeJSON(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		return badPayload("malformed JSON: %s", jsonErrorText(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badPayload("malformed JSON: data after the top-level value")
	}
	return nil
}

// jsonErrorText describes a decoding error without echoing payload values.
func jsonErrorText(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			field = "top-level value"
		}
		return fmt.Sprintf("%s: want %s, got JSON %s", field, te.Type, te.Value)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected end of input"
	}
	return "invalid"
}

// compose builds the reference registry/repository:tag and checks that it
// parses back into exactly those parts, so that no field can smuggle in a
// different registry, repository or a digest.
func compose(registry, repository, tag string) (pins.Reference, error) {
	switch {
	case registry == "":
		return pins.Reference{}, badPayload("no registry host")
	case repository == "":
		return pins.Reference{}, badPayload("no repository")
	case tag == "":
		return pins.Reference{}, badPayload("no tag")
	}
	ref, err := pins.ParseReference(registry + "/" + repository + ":" + tag)
	if err != nil {
		return pins.Reference{}, badPayload("invalid image %q", registry+"/"+repository+":"+tag)
	}
	wantRegistry := registry
	if registry == "index.docker.io" {
		wantRegistry = pins.DockerHub
	}
	wantRepository := repository
	if wantRegistry == pins.DockerHub && !strings.Contains(repository, "/") {
		wantRepository = "library/" + repository
	}
	if ref.Registry != wantRegistry || ref.Repository != wantRepository || ref.Tag != tag {
		return pins.Reference{}, badPayload("invalid image %q", registry+"/"+repository+":"+tag)
	}
	return ref, nil
}

// looksLikeDigest reports whether a "tag" field actually carries a digest, as
// Harbor and GitHub do for untagged pushes.
func looksLikeDigest(tag string) bool {
	return strings.Contains(tag, ":") || strings.Contains(tag, "@")
}
