package integration

import (
	"context"
	"encoding/base64"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
)

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
