package pins

import (
	"sort"
	"sync/atomic"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
)

// Pin is what a node serves for one tag reference: the served generation.
type Pin struct {
	Ref        Reference
	Tag        string // name of the Tag object
	Generation int64
	Digest     string
	MediaType  string
	Size       int64
	// Cached is true when the bundled registry holds this generation's tree.
	Cached bool
}

// repoKey names a repository: normalized registry + repository path.
type repoKey struct{ registry, repository string }

// tagKey names a tag reference.
type tagKey struct {
	repoKey
	tag string
}

// Snapshot is an immutable view of every pin; lookups need no lock.
type Snapshot struct {
	tags  map[tagKey]Pin
	repos map[repoKey]struct{}
	// registries lists the registries with at least one pin, sorted.
	registries []string
}

// Lookup returns the pin of registry/repository:tag. registry is tagger's
// normalized name (see RegistryFromNS).
func (s *Snapshot) Lookup(registry, repository, tag string) (Pin, bool) {
	p, ok := s.tags[tagKey{repoKey{registry, repository}, tag}]
	return p, ok
}

// RepositoryPinned reports whether any tag of registry/repository is pinned,
// so content of that repository may be served by digest.
func (s *Snapshot) RepositoryPinned(registry, repository string) bool {
	_, ok := s.repos[repoKey{registry, repository}]
	return ok
}

// Registries lists the registries with at least one served pin, sorted.
func (s *Snapshot) Registries() []string { return s.registries }

// Len is the number of pins.
func (s *Snapshot) Len() int { return len(s.tags) }

// Pins returns every pin, sorted by reference.
func (s *Snapshot) Pins() []Pin {
	out := make([]Pin, 0, len(s.tags))
	for _, p := range s.tags {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ref.String() < out[j].Ref.String() })
	return out
}

// BuildSnapshot computes the pins of a set of Tags: for each image the winner
// of any conflict (Winners), and only when it serves a generation.
func BuildSnapshot(tags []v1alpha1.Tag) *Snapshot {
	claims := make([]Claim, 0, len(tags))
	refs := make(map[string]Reference, len(tags))
	for i := range tags {
		t := &tags[i]
		if t.DeletionTimestamp != nil {
			continue
		}
		ref, err := ParseReference(t.Spec.Image)
		if err != nil {
			continue
		}
		refs[t.Name] = ref
		claims = append(claims, Claim{Name: t.Name, Image: ref.String(), Created: t.CreationTimestamp.Time})
	}
	winners := Winners(claims)
	s := &Snapshot{tags: make(map[tagKey]Pin, len(winners)), repos: map[repoKey]struct{}{}}
	regs := map[string]struct{}{}
	for i := range tags {
		t := &tags[i]
		ref, ok := refs[t.Name]
		if !ok || winners[ref.String()] != t.Name || t.Status.ServedDigest == "" {
			continue
		}
		g, ok := Find(t.Status.Generations, t.Status.ServedGeneration)
		if !ok || g.Digest != t.Status.ServedDigest {
			continue
		}
		rk := repoKey{ref.Registry, ref.Repository}
		s.tags[tagKey{rk, ref.Tag}] = Pin{
			Ref: ref, Tag: t.Name, Generation: g.Generation, Digest: g.Digest,
			MediaType: g.MediaType, Size: g.Size, Cached: g.Cached,
		}
		s.repos[rk] = struct{}{}
		regs[ref.Registry] = struct{}{}
	}
	for r := range regs {
		s.registries = append(s.registries, r)
	}
	sort.Strings(s.registries)
	return s
}

// Table holds the current Snapshot; readers never block writers.
type Table struct{ cur atomic.Pointer[Snapshot] }

// NewTable returns an empty table.
func NewTable() *Table {
	t := &Table{}
	t.cur.Store(BuildSnapshot(nil))
	return t
}

// Load returns the current snapshot.
func (t *Table) Load() *Snapshot { return t.cur.Load() }

// Store replaces the snapshot.
func (t *Table) Store(s *Snapshot) { t.cur.Store(s) }
