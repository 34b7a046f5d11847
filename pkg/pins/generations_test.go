package pins

import (
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
)

const img = "docker.io/library/nginx:1.27"

func obs(d string) Observation {
	return Observation{Image: img, Digest: d, MediaType: "application/vnd.oci.image.index.v1+json", Size: 100}
}

func gens(h []v1alpha1.Generation) []int64 {
	out := []int64{}
	for _, g := range h {
		out = append(out, g.Generation)
	}
	return out
}

func TestRecord(t *testing.T) {
	now := metav1.NewTime(time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC))
	var h []v1alpha1.Generation

	h, added := Record(h, obs("sha256:a"), now)
	if !added || !reflect.DeepEqual(gens(h), []int64{1}) || h[0].Digest != "sha256:a" || !h[0].FirstSeen.Equal(&now) {
		t.Fatalf("first record: added=%v history=%+v", added, h)
	}
	h, added = Record(h, obs("sha256:a"), now)
	if added || len(h) != 1 {
		t.Fatalf("same digest must add nothing: added=%v history=%v", added, gens(h))
	}
	h, added = Record(h, obs("sha256:b"), now)
	if !added || !reflect.DeepEqual(gens(h), []int64{2, 1}) || h[0].Digest != "sha256:b" {
		t.Fatalf("moved digest: added=%v history=%v", added, gens(h))
	}
	// Moving back to an older digest is a new generation too: history is what the tag did.
	h, added = Record(h, obs("sha256:a"), now)
	if !added || !reflect.DeepEqual(gens(h), []int64{3, 2, 1}) {
		t.Fatalf("moved back: added=%v history=%v", added, gens(h))
	}
	// A new spec.image with another digest is recorded with its own image.
	o := obs("sha256:c")
	o.Image = "docker.io/library/nginx:1.28"
	h, added = Record(h, o, now)
	if !added || h[0].Generation != 4 || h[0].Image != o.Image {
		t.Fatalf("image change: added=%v newest=%+v", added, h[0])
	}
	// Numbers keep growing after pruning.
	h, _ = Prune(h, 1, 4)
	h, _ = Record(h, obs("sha256:d"), now)
	if h[0].Generation != 5 {
		t.Fatalf("after prune next generation = %d, want 5", h[0].Generation)
	}
}

func history(n int) []v1alpha1.Generation {
	var h []v1alpha1.Generation
	for i := n; i >= 1; i-- {
		h = append(h, v1alpha1.Generation{Generation: int64(i), Digest: "sha256:" + string(rune('a'+i))})
	}
	return h
}

func ptr(i int64) *int64 { return &i }

func TestServe(t *testing.T) {
	cases := []struct {
		name     string
		history  []v1alpha1.Generation
		spec     *int64
		previous int64
		want     int64
		reason   ServeReason
	}{
		{"empty unset", nil, nil, 0, 0, ServeNone},
		{"unset serves newest", history(3), nil, 1, 3, ServeNewest},
		{"pinned existing", history(3), ptr(1), 3, 1, ServePinned},
		{"pinned newest", history(3), ptr(3), 1, 3, ServePinned},
		{"missing keeps previous", history(3), ptr(9), 1, 1, ServeMissingKeepPrevious},
		{"missing keeps previous newest", history(3), ptr(9), 3, 3, ServeMissingKeepPrevious},
		{"missing, nothing served before", history(3), ptr(9), 0, 0, ServeMissingKeepPrevious},
		{"missing, previous pruned", history(3), ptr(9), 7, 0, ServeMissingKeepPrevious},
		{"pinned before any generation", nil, ptr(1), 0, 0, ServeMissingKeepPrevious},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g, reason := Serve(c.history, c.spec, c.previous)
			if g.Generation != c.want || reason != c.reason {
				t.Fatalf("Serve = %d (%s), want %d (%s)", g.Generation, reason, c.want, c.reason)
			}
		})
	}
}

func TestPrune(t *testing.T) {
	cases := []struct {
		name         string
		n, limit     int
		served       int64
		kept, pruned []int64
	}{
		{"under limit", 3, 5, 3, []int64{3, 2, 1}, []int64{}},
		{"at limit", 3, 3, 3, []int64{3, 2, 1}, []int64{}},
		{"over limit", 5, 2, 5, []int64{5, 4}, []int64{3, 2, 1}},
		{"served outside window kept", 5, 2, 1, []int64{5, 4, 1}, []int64{3, 2}},
		{"served inside window", 5, 2, 4, []int64{5, 4}, []int64{3, 2, 1}},
		{"limit 1 keeps newest", 4, 1, 4, []int64{4}, []int64{3, 2, 1}},
		{"limit 0 treated as 1", 3, 0, 3, []int64{3}, []int64{2, 1}},
		{"limit 1 served old", 4, 1, 2, []int64{4, 2}, []int64{3, 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			kept, pruned := Prune(history(c.n), c.limit, c.served)
			if !reflect.DeepEqual(gens(kept), c.kept) || !reflect.DeepEqual(gens(pruned), c.pruned) {
				t.Fatalf("Prune = kept %v pruned %v, want %v %v", gens(kept), gens(pruned), c.kept, c.pruned)
			}
		})
	}
}
