package node

import (
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/pkg/pins"
)

// The slimmed Tag must yield exactly the pins the full Tag does.
func TestSlimTagKeepsPins(t *testing.T) {
	created := metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	full := v1alpha1.Tag{
		ObjectMeta: metav1.ObjectMeta{
			Name: "app", UID: "u", CreationTimestamp: created,
			Annotations:   map[string]string{"big": "annotation"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "x"}},
		},
		Spec: v1alpha1.TagSpec{Image: "nginx:1.27", Cache: true},
		Status: v1alpha1.TagStatus{
			ServedGeneration: 2, ServedDigest: "sha256:b",
			Generations: []v1alpha1.Generation{
				{Generation: 3, Digest: "sha256:c", Platforms: []string{"linux/amd64"}},
				{Generation: 2, Digest: "sha256:b", MediaType: "m", Size: 9, Cached: true, Platforms: []string{"linux/amd64"}},
				{Generation: 1, Digest: "sha256:a"},
			},
		},
	}
	slimAny, err := slimTag(full.DeepCopy())
	if err != nil {
		t.Fatal(err)
	}
	slim := slimAny.(*v1alpha1.Tag)
	if len(slim.Status.Generations) != 1 || slim.Annotations != nil || slim.ManagedFields != nil {
		t.Fatalf("not slimmed: %+v", slim)
	}
	want := pins.BuildSnapshot([]v1alpha1.Tag{full}).Pins()
	got := pins.BuildSnapshot([]v1alpha1.Tag{*slim}).Pins()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("pins from slim Tag = %+v, want %+v", got, want)
	}
	if other, _ := slimTag("not a tag"); other != "not a tag" {
		t.Fatal("non-Tag objects must pass through")
	}
}
