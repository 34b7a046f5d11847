package restart

import (
	corev1 "k8s.io/api/core/v1"

	"github.com/tagger-project/tagger/pkg/pins"
)

// MatchingContainers returns the names of the containers of spec whose image
// is ref once both are normalized ("nginx:1.27" is docker.io/library/nginx:1.27).
// Init and ephemeral containers count: they pull through the same pin. An
// image with a digest ("app:v1@sha256:...") never matches: it is pinned
// already, and a restart would not change what it runs. Unparseable images do
// not match either; the apiserver accepts some strings containerd would not.
//
// Init containers are reported as "init:<name>", ephemeral ones as
// "ephemeral:<name>", so a message says which kind of container it was.
func MatchingContainers(spec *corev1.PodSpec, ref pins.Reference) []string {
	return newMatcher(ref).containers(spec)
}

// matcher remembers the verdict per image string: a wave looks at every
// workload of the cluster, and most share a handful of images.
type matcher struct {
	ref  pins.Reference
	seen map[string]bool
}

func newMatcher(ref pins.Reference) *matcher {
	return &matcher{ref: ref, seen: make(map[string]bool)}
}

func (m *matcher) containers(spec *corev1.PodSpec) []string {
	var out []string
	for _, c := range spec.InitContainers {
		if m.is(c.Image) {
			out = append(out, "init:"+c.Name)
		}
	}
	for _, c := range spec.Containers {
		if m.is(c.Image) {
			out = append(out, c.Name)
		}
	}
	for _, c := range spec.EphemeralContainers {
		if m.is(c.Image) {
			out = append(out, "ephemeral:"+c.Name)
		}
	}
	return out
}

// is reports whether image normalizes to exactly the matcher's reference.
func (m *matcher) is(image string) bool {
	if v, ok := m.seen[image]; ok {
		return v
	}
	got, err := pins.ParseReference(image)
	v := err == nil && got == m.ref
	m.seen[image] = v
	return v
}
