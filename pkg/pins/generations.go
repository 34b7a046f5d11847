package pins

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
)

// Observation is what one successful check of the upstream saw.
type Observation struct {
	Image     string // normalized reference the check resolved
	Digest    string
	MediaType string
	Size      int64
	Platforms []string
}

// Newest returns the newest generation of a history kept newest first.
func Newest(history []v1alpha1.Generation) (v1alpha1.Generation, bool) {
	if len(history) == 0 {
		return v1alpha1.Generation{}, false
	}
	return history[0], true
}

// Find returns generation n of the history.
func Find(history []v1alpha1.Generation, n int64) (v1alpha1.Generation, bool) {
	for _, g := range history {
		if g.Generation == n {
			return g, true
		}
	}
	return v1alpha1.Generation{}, false
}

// IsNew reports whether an observation would start a new generation: the
// digest moved, or spec.image changed to an image whose digest differs from
// the newest record's image. Same image at the same digest adds nothing.
func IsNew(history []v1alpha1.Generation, o Observation) bool {
	newest, ok := Newest(history)
	return !ok || newest.Digest != o.Digest || newest.Image != o.Image
}

// Record returns the history with o prepended as a new generation when it is
// new, and whether it was appended. Generation numbers only grow: the next one
// is the newest's plus one (the newest is never pruned).
func Record(history []v1alpha1.Generation, o Observation, now metav1.Time) ([]v1alpha1.Generation, bool) {
	if !IsNew(history, o) {
		return history, false
	}
	next := int64(1)
	if newest, ok := Newest(history); ok {
		next = newest.Generation + 1
	}
	g := v1alpha1.Generation{
		Generation: next,
		Image:      o.Image,
		Digest:     o.Digest,
		MediaType:  o.MediaType,
		Size:       o.Size,
		Platforms:  append([]string(nil), o.Platforms...),
		FirstSeen:  now,
	}
	out := make([]v1alpha1.Generation, 0, len(history)+1)
	out = append(out, g)
	out = append(out, history...)
	return out, true
}

// ServeReason says why Serve chose what it chose.
type ServeReason string

// Serve outcomes.
const (
	// ServeNewest: spec.generation unset, the newest generation is served.
	ServeNewest ServeReason = "Newest"
	// ServePinned: spec.generation names a generation in the history.
	ServePinned ServeReason = "Pinned"
	// ServeMissingKeepPrevious: spec.generation names a generation that is not
	// in the history; the previously served one stays.
	ServeMissingKeepPrevious ServeReason = "GenerationNotFound"
	// ServeNone: nothing to serve yet.
	ServeNone ServeReason = "NoGeneration"
)

// Serve chooses the generation to serve: spec.generation when it names one in
// the history, the newest when it is unset. A spec.generation that names no
// recorded generation never makes a node serve something new: the previously
// served generation stays (or nothing, when nothing was served yet).
func Serve(history []v1alpha1.Generation, specGeneration *int64, previous int64) (v1alpha1.Generation, ServeReason) {
	if specGeneration == nil {
		if g, ok := Newest(history); ok {
			return g, ServeNewest
		}
		return v1alpha1.Generation{}, ServeNone
	}
	if g, ok := Find(history, *specGeneration); ok {
		return g, ServePinned
	}
	if g, ok := Find(history, previous); ok && previous > 0 {
		return g, ServeMissingKeepPrevious
	}
	return v1alpha1.Generation{}, ServeMissingKeepPrevious
}

// Prune keeps the newest limit generations plus the served one, wherever it
// is; it returns the kept history (order preserved) and the pruned generations.
// A limit below 1 is treated as 1: the newest is always kept.
func Prune(history []v1alpha1.Generation, limit int, served int64) (kept, pruned []v1alpha1.Generation) {
	if limit < 1 {
		limit = 1
	}
	for i, g := range history {
		if i < limit || g.Generation == served {
			kept = append(kept, g)
		} else {
			pruned = append(pruned, g)
		}
	}
	return kept, pruned
}
