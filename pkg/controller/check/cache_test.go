package check

import (
	"context"
	"errors"
	"testing"

	digest "github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/pkg/controller/imagecopy"
	"github.com/tagger-project/tagger/pkg/controller/tagindex"
	"github.com/tagger-project/tagger/pkg/pins"
	"github.com/tagger-project/tagger/pkg/registryclient"
)

const cacheTestDigest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

type fixedResolver struct{}

func (fixedResolver) Resolve(context.Context, pins.Reference, registryclient.Credentials) (registryclient.Descriptor, error) {
	return registryclient.Descriptor{Digest: cacheTestDigest, MediaType: registryclient.MediaTypeOCIManifest, Size: 100}, nil
}

func (fixedResolver) Platforms(context.Context, pins.Reference, registryclient.Descriptor, registryclient.Credentials) ([]string, error) {
	return []string{"linux/amd64"}, nil
}

// dyingCacher stands for a controller killed mid-copy: its Copy looks at
// the stored Tag, as a new process would after the kill, and never finishes.
type dyingCacher struct {
	c      client.Client
	copies int
	seen   v1alpha1.TagStatus
}

func (d *dyingCacher) Copy(ctx context.Context, _ pins.Reference, _ digest.Digest, _ registryclient.Credentials, _ string) (imagecopy.Progress, error) {
	d.copies++
	var tag v1alpha1.Tag
	if err := d.c.Get(ctx, client.ObjectKey{Name: "big"}, &tag); err != nil {
		return imagecopy.Progress{}, err
	}
	d.seen = tag.Status
	return imagecopy.Progress{}, errors.New("killed")
}

func (d *dyingCacher) Prune(context.Context, string, []digest.Digest, imagecopy.KeepFunc) (imagecopy.PruneResult, error) {
	return imagecopy.PruneResult{}, nil
}

// A long copy does not hold back the pin: the new generation is recorded and
// served before the copy starts, so a controller dying mid-copy loses
// nothing and nodes serve the generation from the upstream meanwhile.
func TestGenerationRecordedBeforeCopy(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	tag := &v1alpha1.Tag{
		ObjectMeta: metav1.ObjectMeta{Name: "big", Finalizers: []string{v1alpha1.CacheFinalizer}},
		Spec:       v1alpha1.TagSpec{Image: "example.com/big/app:v1", Cache: true},
	}
	cl := fake.NewClientBuilder().WithScheme(scheme).WithObjects(tag).WithStatusSubresource(tag).
		WithIndex(&v1alpha1.Tag{}, tagindex.Image, tagindex.ImageValue).Build()
	cacher := &dyingCacher{c: cl}
	r := &Reconciler{Client: cl, Resolver: fixedResolver{}, Cacher: cacher, Log: logrus.New()}
	if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: types.NamespacedName{Name: "big"}}); err != nil {
		t.Fatal(err)
	}
	if cacher.copies != 1 {
		t.Fatalf("copies: %d, want 1", cacher.copies)
	}
	st := cacher.seen
	if len(st.Generations) != 1 || st.Generations[0].Digest != cacheTestDigest || st.Generations[0].Cached ||
		st.ServedDigest != cacheTestDigest || st.LastCheck == nil {
		t.Fatalf("stored status while copying: generations %+v, served %q, lastCheck %+v; want generation 1 recorded, served, not cached",
			st.Generations, st.ServedDigest, st.LastCheck)
	}
}
