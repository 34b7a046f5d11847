package pullsecret

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/pkg/controller/reconcilertest"
	"github.com/tagger-project/tagger/pkg/pins"
)

func secret(ns string) *corev1.Secret {
	auth := base64.StdEncoding.EncodeToString([]byte("robot:s3cret"))
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "creds"},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: []byte(fmt.Sprintf(`{"auths":{"registry.example":{"auth":%q}}}`, auth))},
	}
}

// TestNamespaceConfinement: with a pull-secret namespace, a Secret there is
// read and one elsewhere is refused before any request (ErrNotAllowed,
// naming the allowed namespace); without one, any namespace is read.
func TestNamespaceConfinement(t *testing.T) {
	ref := pins.Reference{Registry: "registry.example", Repository: "team/app", Tag: "v1"}
	cases := []struct {
		name, allowed, secretNS string
		wantErr                 error // nil: credentials read
		wantGets                int
	}{
		{"in the allowed namespace", "tagger-system", "tagger-system", nil, 1},
		{"elsewhere: refused unread", "tagger-system", "team-a", ErrNotAllowed, 0},
		{"any namespace (scope cluster)", "", "team-a", nil, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			gets := 0
			cl := reconcilertest.FakeClient(t, &interceptor.Funcs{Get: func(ctx context.Context, cl client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
				gets++
				return cl.Get(ctx, key, obj, opts...)
			}}, secret(c.secretNS))
			tag := &v1alpha1.Tag{Spec: v1alpha1.TagSpec{PullSecretRef: &v1alpha1.SecretReference{Namespace: c.secretNS, Name: "creds"}}}
			creds, err := Source{Reader: cl, Namespace: c.allowed}.Credentials(context.Background(), tag, ref)
			if gets != c.wantGets {
				t.Errorf("%d Secret reads, want %d", gets, c.wantGets)
			}
			if c.wantErr == nil {
				if err != nil || creds.Username != "robot" {
					t.Fatalf("credentials %+v, %v; want robot's", creds, err)
				}
				return
			}
			var se *Error
			if !errors.Is(err, c.wantErr) || !errors.As(err, &se) {
				t.Fatalf("error %v, want a pullsecret.Error wrapping %v", err, c.wantErr)
			}
			if !strings.Contains(err.Error(), `only from namespace "`+c.allowed+`"`) || !strings.Contains(err.Error(), c.secretNS+"/creds") {
				t.Errorf("error %q names neither the Secret nor the allowed namespace", err)
			}
		})
	}
}
