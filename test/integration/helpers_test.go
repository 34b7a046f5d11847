package integration

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/internal/rig"
)

const waitTimeout = 30 * time.Second

func newTag(name, image string) *v1alpha1.Tag {
	return &v1alpha1.Tag{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.TagSpec{Image: image}}
}

func createTag(t *testing.T, c client.Client, tag *v1alpha1.Tag) {
	t.Helper()
	if err := c.Create(context.Background(), tag); err != nil {
		t.Fatalf("create Tag %s: %v", tag.Name, err)
	}
	t.Cleanup(func() { _ = c.Delete(context.Background(), tag) })
}

func getTag(t *testing.T, c client.Client, name string) *v1alpha1.Tag {
	t.Helper()
	var tag v1alpha1.Tag
	if err := c.Get(context.Background(), client.ObjectKey{Name: name}, &tag); err != nil {
		t.Fatalf("get Tag %s: %v", name, err)
	}
	return &tag
}

// waitTag waits until cond holds for the Tag and returns it.
func waitTag(t *testing.T, c client.Client, name, what string, cond func(*v1alpha1.Tag) (bool, string)) *v1alpha1.Tag {
	t.Helper()
	var last *v1alpha1.Tag
	rig.WaitFor(t, waitTimeout, fmt.Sprintf("Tag %s: %s", name, what), func() (bool, string) {
		var tag v1alpha1.Tag
		if err := c.Get(context.Background(), client.ObjectKey{Name: name}, &tag); err != nil {
			return false, err.Error()
		}
		last = &tag
		ok, msg := cond(&tag)
		return ok, fmt.Sprintf("%s; status=%s", msg, statusJSON(&tag))
	})
	return last
}

func statusJSON(tag *v1alpha1.Tag) string {
	b, _ := json.Marshal(tag.Status)
	return string(b)
}

// servedIs waits for the Tag to serve generation gen at digest d.
func servedIs(gen int64, d string) func(*v1alpha1.Tag) (bool, string) {
	return func(tag *v1alpha1.Tag) (bool, string) {
		ok := tag.Status.ServedGeneration == gen && tag.Status.ServedDigest == d &&
			tag.Status.ObservedGeneration == tag.Generation
		return ok, fmt.Sprintf("want served %d at %s", gen, d)
	}
}

func condition(tag *v1alpha1.Tag, typ string) metav1.Condition {
	if c := meta.FindStatusCondition(tag.Status.Conditions, typ); c != nil {
		return *c
	}
	return metav1.Condition{}
}

// conditionIs waits for a condition with this status and reason, observed for the current spec.
func conditionIs(typ string, status metav1.ConditionStatus, reason string) func(*v1alpha1.Tag) (bool, string) {
	return func(tag *v1alpha1.Tag) (bool, string) {
		c := condition(tag, typ)
		ok := c.Status == status && c.Reason == reason && c.ObservedGeneration == tag.Generation
		return ok, fmt.Sprintf("want %s=%s reason %s", typ, status, reason)
	}
}

// requestCheck sets the tagger.dev/check annotation to value and waits until
// the controller acted on it.
func requestCheck(t *testing.T, c client.Client, name, value string) *v1alpha1.Tag {
	t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, v1alpha1.CheckAnnotation, value)
	tag := &v1alpha1.Tag{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := c.Patch(context.Background(), tag, client.RawPatch("application/merge-patch+json", []byte(patch))); err != nil {
		t.Fatalf("annotate Tag %s: %v", name, err)
	}
	return waitTag(t, c, name, "check "+value+" acted on", func(tag *v1alpha1.Tag) (bool, string) {
		return tag.Status.CheckAnnotation == value, "want checkAnnotation " + value
	})
}

// setGeneration patches spec.generation (nil: unset).
func setGeneration(t *testing.T, c client.Client, name string, gen *int64) {
	t.Helper()
	body := `{"spec":{"generation":null}}`
	if gen != nil {
		body = fmt.Sprintf(`{"spec":{"generation":%d}}`, *gen)
	}
	tag := &v1alpha1.Tag{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := c.Patch(context.Background(), tag, client.RawPatch("application/merge-patch+json", []byte(body))); err != nil {
		t.Fatalf("set spec.generation of Tag %s: %v", name, err)
	}
}

func ptr[T any](v T) *T { return &v }

// pullSecret creates a dockerconfigjson Secret for host in a fresh namespace.
func pullSecret(t *testing.T, c client.Client, ns, name, host, user, pass string) {
	t.Helper()
	ctx := context.Background()
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatalf("create namespace %s: %v", ns, err)
	}
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	cfg := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host, auth)
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: []byte(cfg)},
	}
	if err := c.Create(ctx, sec); err != nil {
		t.Fatalf("create Secret %s/%s: %v", ns, name, err)
	}
}
