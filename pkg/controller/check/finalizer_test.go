package check

import (
	"context"
	"errors"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/pkg/controller/imagecopy"
	"github.com/tagger-project/tagger/pkg/pins"
	"github.com/tagger-project/tagger/pkg/registryclient"
)

// failingCacher fails every Prune, as an unreachable bundled registry does.
type failingCacher struct{ prunes int }

func (f *failingCacher) Copy(context.Context, pins.Reference, digest.Digest, registryclient.Credentials, string) (imagecopy.Progress, error) {
	return imagecopy.Progress{}, errors.New("not used")
}

func (f *failingCacher) Prune(context.Context, string, []digest.Digest, imagecopy.KeepFunc) (imagecopy.PruneResult, error) {
	f.prunes++
	return imagecopy.PruneResult{}, errors.New("dial tcp 127.0.0.1:1: connection refused")
}

// A deleted Tag whose cleanup keeps failing is retried with backoff, then
// released after cleanupGiveUp so it cannot hang forever.
func TestFinalizeGivesUpAfterDeadline(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	now := metav1.Now()
	tag := &v1alpha1.Tag{
		ObjectMeta: metav1.ObjectMeta{Name: "gone", Finalizers: []string{v1alpha1.CacheFinalizer}, DeletionTimestamp: &now},
		Spec:       v1alpha1.TagSpec{Image: "example.com/app:v1", Cache: true},
		Status: v1alpha1.TagStatus{Generations: []v1alpha1.Generation{
			{Generation: 1, Image: "example.com/app:v1", Digest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", Cached: true},
		}},
	}
	cl := fake.NewClientBuilder().WithScheme(scheme).WithObjects(tag).WithStatusSubresource(tag).Build()
	clock := time.Now()
	cacher := &failingCacher{}
	r := &Reconciler{Client: cl, Cacher: cacher, Log: logrus.New(), Now: func() time.Time { return clock }}
	req := ctrl.Request{NamespacedName: types.NamespacedName{Name: "gone"}}

	res, err := r.Reconcile(context.Background(), req)
	if err != nil || res.RequeueAfter <= 0 {
		t.Fatalf("first failed cleanup: result %+v err %v, want a requeue", res, err)
	}
	var got v1alpha1.Tag
	if err := cl.Get(context.Background(), client.ObjectKey{Name: "gone"}, &got); err != nil {
		t.Fatalf("Tag released after one failed cleanup: %v", err)
	}

	clock = clock.Add(cleanupGiveUp + time.Second)
	if _, err := r.Reconcile(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if err := cl.Get(context.Background(), client.ObjectKey{Name: "gone"}, &got); !apierrors.IsNotFound(err) {
		t.Fatalf("after %v of failures the Tag is still there (%v), finalizers %v", cleanupGiveUp, err, got.Finalizers)
	}
	if cacher.prunes != 2 {
		t.Errorf("prunes attempted: %d, want 2", cacher.prunes)
	}
}
