package pins

import (
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
)

func servedTag(name, image string, created time.Time, served int64, digests ...string) v1alpha1.Tag {
	t := v1alpha1.Tag{
		ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(created)},
		Spec:       v1alpha1.TagSpec{Image: image},
	}
	for i := len(digests); i >= 1; i-- {
		t.Status.Generations = append(t.Status.Generations, v1alpha1.Generation{Generation: int64(i), Digest: digests[i-1], MediaType: "m", Size: 7})
	}
	if served > 0 {
		t.Status.ServedGeneration = served
		t.Status.ServedDigest = digests[served-1]
	}
	return t
}

func TestBuildSnapshot(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tags := []v1alpha1.Tag{
		servedTag("nginx", "nginx:1.27", t0, 1, "sha256:n1", "sha256:n2"),
		servedTag("nginx-dup", "docker.io/library/nginx:1.27", t0.Add(time.Hour), 2, "sha256:x1", "sha256:x2"),
		servedTag("app", "localhost:5000/team/app:v1", t0, 2, "sha256:a1", "sha256:a2"),
		servedTag("unserved", "quay.io/o/r:v1", t0, 0, "sha256:q1"),
		servedTag("bad", "Not A Ref", t0, 0),
	}
	s := BuildSnapshot(tags)
	if s.Len() != 2 {
		t.Fatalf("Len = %d, want 2: %+v", s.Len(), s.Pins())
	}
	p, ok := s.Lookup("docker.io", "library/nginx", "1.27")
	if !ok || p.Tag != "nginx" || p.Generation != 1 || p.Digest != "sha256:n1" || p.Size != 7 {
		t.Fatalf("nginx pin = %+v, %v; want the older Tag's served generation 1", p, ok)
	}
	if _, ok := s.Lookup("docker.io", "library/nginx", "1.28"); ok {
		t.Fatal("unpinned tag found")
	}
	if !s.RepositoryPinned("localhost:5000", "team/app") || s.RepositoryPinned("localhost:5000", "team/other") || s.RepositoryPinned("quay.io", "o/r") {
		t.Fatal("RepositoryPinned wrong")
	}
	if got := s.Registries(); !reflect.DeepEqual(got, []string{"docker.io", "localhost:5000"}) {
		t.Fatalf("Registries = %v", got)
	}

	tbl := NewTable()
	if tbl.Load().Len() != 0 {
		t.Fatal("new table not empty")
	}
	tbl.Store(s)
	if tbl.Load() != s {
		t.Fatal("Store/Load mismatch")
	}
}
