package rig

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tagger-project/tagger/api/v1alpha1"
)

// TagTimeout is how long WaitTag waits by default.
const TagTimeout = 30 * time.Second

// TagCond is a condition on a Tag: whether it holds, and what was wanted.
type TagCond func(*v1alpha1.Tag) (bool, string)

// NewTag is a Tag of image with no other settings.
func NewTag(name, image string) *v1alpha1.Tag {
	return &v1alpha1.Tag{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.TagSpec{Image: image}}
}

// CreateTag creates tag and deletes it when the test ends (apiservers are
// shared by a package's tests).
func CreateTag(t T, c client.Client, tag *v1alpha1.Tag) {
	t.Helper()
	if err := c.Create(context.Background(), tag); err != nil {
		t.Fatalf("create Tag %s: %v", tag.Name, err)
	}
	t.Cleanup(func() { _ = c.Delete(context.Background(), tag) })
}

// GetTag reads the Tag name.
func GetTag(t T, c client.Client, name string) *v1alpha1.Tag {
	t.Helper()
	var tag v1alpha1.Tag
	if err := c.Get(context.Background(), client.ObjectKey{Name: name}, &tag); err != nil {
		t.Fatalf("get Tag %s: %v", name, err)
	}
	return &tag
}

// PatchTag applies a JSON merge patch to the Tag name.
func PatchTag(t T, c client.Client, name, body string) {
	t.Helper()
	tag := &v1alpha1.Tag{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := c.Patch(context.Background(), tag, client.RawPatch("application/merge-patch+json", []byte(body))); err != nil {
		t.Fatalf("patch Tag %s with %s: %v", name, body, err)
	}
}

// WaitTag waits up to TagTimeout until cond holds for the Tag and returns
// it; a timeout names what was wanted and the Tag's last status.
func WaitTag(t T, c client.Client, name, what string, cond TagCond) *v1alpha1.Tag {
	t.Helper()
	return WaitTagFor(t, TagTimeout, c, name, what, cond)
}

// WaitTagFor is WaitTag with its own timeout.
func WaitTagFor(t T, timeout time.Duration, c client.Client, name, what string, cond TagCond) *v1alpha1.Tag {
	t.Helper()
	var last *v1alpha1.Tag
	WaitFor(t, timeout, fmt.Sprintf("Tag %s: %s", name, what), func() (bool, string) {
		var tag v1alpha1.Tag
		if err := c.Get(context.Background(), client.ObjectKey{Name: name}, &tag); err != nil {
			return false, err.Error()
		}
		last = &tag
		ok, msg := cond(&tag)
		st, _ := json.Marshal(tag.Status)
		return ok, fmt.Sprintf("%s; status=%s", msg, st)
	})
	return last
}

// ServedIs holds when the Tag serves generation gen at digest d for its
// current spec.
func ServedIs(gen int64, d string) TagCond {
	return func(tag *v1alpha1.Tag) (bool, string) {
		ok := tag.Status.ServedGeneration == gen && tag.Status.ServedDigest == d &&
			tag.Status.ObservedGeneration == tag.Generation
		return ok, fmt.Sprintf("want served %d at %s", gen, d)
	}
}

// Condition is the Tag's condition typ, or the zero Condition.
func Condition(tag *v1alpha1.Tag, typ string) metav1.Condition {
	if c := meta.FindStatusCondition(tag.Status.Conditions, typ); c != nil {
		return *c
	}
	return metav1.Condition{}
}

// ConditionIs holds when condition typ has this status and reason,
// observed for the current spec.
func ConditionIs(typ string, status metav1.ConditionStatus, reason string) TagCond {
	return func(tag *v1alpha1.Tag) (bool, string) {
		c := Condition(tag, typ)
		ok := c.Status == status && c.Reason == reason && c.ObservedGeneration == tag.Generation
		return ok, fmt.Sprintf("want %s=%s reason %s", typ, status, reason)
	}
}

// AnnotateCheck sets the tagger.dev/check annotation of the Tag to value,
// asking the controller for a check, without waiting.
func AnnotateCheck(t T, c client.Client, name, value string) {
	t.Helper()
	PatchTag(t, c, name, fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, v1alpha1.CheckAnnotation, value))
}

// RequestCheck asks for a check (AnnotateCheck) and waits until the
// controller acted on it.
func RequestCheck(t T, c client.Client, name, value string) *v1alpha1.Tag {
	t.Helper()
	AnnotateCheck(t, c, name, value)
	return WaitTag(t, c, name, "check "+value+" acted on", func(tag *v1alpha1.Tag) (bool, string) {
		return tag.Status.CheckAnnotation == value, "want checkAnnotation " + value
	})
}
