// Package reconcilertest holds what the unit tests of the controller-side
// reconcilers share: a fake client that stores Tags with their status
// subresource and the image index, one reconcile of a named Tag, a read of
// it, and the Events a fake recorder holds. Real-component tests use
// internal/rig instead.
package reconcilertest

import (
	"context"
	"testing"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/pkg/controller/tagindex"
)

// FakeClient is a fake client holding objs, with Tag status as a
// subresource (so status and spec writes behave as on an apiserver) and Tags
// indexed by normalized image. funcs, when not nil, intercepts its calls.
func FakeClient(t testing.TB, funcs *interceptor.Funcs, objs ...client.Object) client.WithWatch {
	t.Helper()
	scheme, err := v1alpha1.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	b := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).
		WithStatusSubresource(&v1alpha1.Tag{}).
		WithIndex(&v1alpha1.Tag{}, tagindex.Image, tagindex.ImageValue)
	if funcs != nil {
		b = b.WithInterceptorFuncs(*funcs)
	}
	return b.Build()
}

// Reconcile runs one reconcile of the cluster-scoped object name and fails
// the test on an error.
func Reconcile(t testing.TB, r reconcile.Reconciler, name string) ctrl.Result {
	t.Helper()
	res, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: types.NamespacedName{Name: name}})
	if err != nil {
		t.Fatalf("reconcile %s: %v", name, err)
	}
	return res
}

// GetTag reads the Tag name.
func GetTag(t testing.TB, cl client.Reader, name string) *v1alpha1.Tag {
	t.Helper()
	var tag v1alpha1.Tag
	if err := cl.Get(context.Background(), client.ObjectKey{Name: name}, &tag); err != nil {
		t.Fatalf("get Tag %s: %v", name, err)
	}
	return &tag
}

// Events takes every Event the recorder holds now, oldest first.
func Events(rec *events.FakeRecorder) []string {
	var out []string
	for {
		select {
		case e := <-rec.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}
