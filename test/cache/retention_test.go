package cache

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/pkg/pins"
)

// TestRetentionPrunesCache: a generation pruned by historyLimit has its
// manifests deleted from the bundled registry (its blobs go at the next
// garbage collection, proven in pkg/controller/imagecopy); kept generations stay.
func TestRetentionPrunesCache(t *testing.T) {
	ctx := context.Background()
	kc, up, bundled := startCaching(t)
	c := kc.Client

	image := up.Host() + "/ret/app:v1"
	tag := &v1alpha1.Tag{ObjectMeta: metav1.ObjectMeta{Name: "ret"}, Spec: v1alpha1.TagSpec{Image: image, Cache: true, HistoryLimit: 2}}
	var imgs []rig.Image
	for i := 1; i <= 3; i++ {
		imgs = append(imgs, up.PushImage(t, "ret/app", "v1", rig.ImageOptions{}))
		if i == 1 {
			if err := c.Create(ctx, tag); err != nil {
				t.Fatal(err)
			}
		} else {
			patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:"c%d"}}}`, v1alpha1.CheckAnnotation, i)
			if err := c.Patch(ctx, &v1alpha1.Tag{ObjectMeta: metav1.ObjectMeta{Name: "ret"}}, client.RawPatch("application/merge-patch+json", []byte(patch))); err != nil {
				t.Fatal(err)
			}
		}
		want := int64(i)
		rig.WaitFor(t, time.Minute, fmt.Sprintf("generation %d cached", i), func() (bool, string) {
			var got v1alpha1.Tag
			if err := c.Get(ctx, client.ObjectKey{Name: "ret"}, &got); err != nil {
				return false, err.Error()
			}
			return got.Status.ServedGeneration == want && got.Status.CachedServed, fmt.Sprintf("served %d cached %v", got.Status.ServedGeneration, got.Status.CachedServed)
		})
	}
	ref, _ := pins.ParseReference(image)
	manifest := func(img rig.Image) string {
		return bundled.URL() + "/v2/" + ref.CacheRepository() + "/manifests/" + img.Digest.String()
	}
	rig.WaitFor(t, time.Minute, "generation 1 pruned from the bundled registry", func() (bool, string) {
		code := bundled.Head(t, manifest(imgs[0]))
		return code == http.StatusNotFound, fmt.Sprintf("HEAD %d", code)
	})
	for _, img := range imgs[1:] {
		if code := bundled.Head(t, manifest(img)); code != http.StatusOK {
			t.Fatalf("kept generation %s: HEAD %d", img.Digest, code)
		}
	}
}
