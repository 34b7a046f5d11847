package cache

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/pkg/pins"
)

// TestDeletedTagCleansCache: deleting a Tag with cache: true removes its
// generations' manifests from the bundled registry before the Tag goes (the
// tagger.dev/cache-cleanup finalizer), except a manifest another Tag still
// keeps. While the bundled registry is down the Tag waits with its
// finalizer; once the registry is back the cleanup completes.
func TestDeletedTagCleansCache(t *testing.T) {
	ctx := context.Background()
	kc, up, bundled := startCaching(t)
	c := kc.Client

	// "del-a" follows del/app:v1 through two images; "del-b" pins
	// del/app:v2, which names the same manifest as del-a's generation 1.
	img1 := up.PushImage(t, "del/app", "v1", rig.ImageOptions{})
	up.PushManifest(t, "del/app", "v2", img1.MediaType, img1.Manifest)
	a := &v1alpha1.Tag{ObjectMeta: metav1.ObjectMeta{Name: "del-a"}, Spec: v1alpha1.TagSpec{Image: up.Host() + "/del/app:v1", Cache: true}}
	b := &v1alpha1.Tag{ObjectMeta: metav1.ObjectMeta{Name: "del-b"}, Spec: v1alpha1.TagSpec{Image: up.Host() + "/del/app:v2", Cache: true}}
	for _, tag := range []*v1alpha1.Tag{a, b} {
		if err := c.Create(ctx, tag); err != nil {
			t.Fatal(err)
		}
	}
	waitCached(t, c, "del-a", 1)
	waitCached(t, c, "del-b", 1)
	img2 := up.PushImage(t, "del/app", "v1", rig.ImageOptions{})
	check := fmt.Sprintf(`{"metadata":{"annotations":{%q:"again"}}}`, v1alpha1.CheckAnnotation)
	if err := c.Patch(ctx, &v1alpha1.Tag{ObjectMeta: metav1.ObjectMeta{Name: "del-a"}}, client.RawPatch("application/merge-patch+json", []byte(check))); err != nil {
		t.Fatal(err)
	}
	waitCached(t, c, "del-a", 2)

	var got v1alpha1.Tag
	if err := c.Get(ctx, client.ObjectKey{Name: "del-a"}, &got); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(got.Finalizers, v1alpha1.CacheFinalizer) {
		t.Fatalf("Tag with cache: true has finalizers %v, want %s", got.Finalizers, v1alpha1.CacheFinalizer)
	}
	ref, _ := pins.ParseReference(a.Spec.Image)
	manifest := func(img rig.Image) string {
		return bundled.URL() + "/v2/" + ref.CacheRepository() + "/manifests/" + img.Digest.String()
	}
	for _, img := range []rig.Image{img1, img2} {
		if code := bundled.Head(t, manifest(img)); code != http.StatusOK {
			t.Fatalf("cached %s before the delete: HEAD %d", img.Digest, code)
		}
	}

	// The bundled registry is down: the delete waits, nothing is lost.
	bundled.Stop()
	if err := c.Delete(ctx, &v1alpha1.Tag{ObjectMeta: metav1.ObjectMeta{Name: "del-a"}}); err != nil {
		t.Fatal(err)
	}
	rig.WaitFor(t, time.Minute, "del-a marked for deletion", func() (bool, string) {
		var t2 v1alpha1.Tag
		err := c.Get(ctx, client.ObjectKey{Name: "del-a"}, &t2)
		return err == nil && t2.DeletionTimestamp != nil, fmt.Sprint(err)
	})
	// The failed cleanup is reported; the Tag and its finalizer stay.
	rig.WaitFor(t, time.Minute, "a CachePruneFailed Event on del-a", func() (bool, string) {
		var l eventsv1.EventList
		if err := c.List(ctx, &l); err != nil {
			return false, err.Error()
		}
		for _, e := range l.Items {
			if e.Regarding.Name == "del-a" && e.Reason == "CachePruneFailed" {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d events, none for del-a's cleanup", len(l.Items))
	})
	if err := c.Get(ctx, client.ObjectKey{Name: "del-a"}, &got); err != nil || !slices.Contains(got.Finalizers, v1alpha1.CacheFinalizer) {
		t.Fatalf("del-a while its cleanup fails: %v, finalizers %v; want it kept with %s", err, got.Finalizers, v1alpha1.CacheFinalizer)
	}

	if err := bundled.Start(); err != nil {
		t.Fatal(err)
	}
	rig.WaitFor(t, time.Minute, "del-a gone", func() (bool, string) {
		err := c.Get(ctx, client.ObjectKey{Name: "del-a"}, &v1alpha1.Tag{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
	if code := bundled.Head(t, manifest(img2)); code != http.StatusNotFound {
		t.Errorf("del-a's own generation 2 after the delete: HEAD %d, want 404", code)
	}
	if code := bundled.Head(t, manifest(img1)); code != http.StatusOK {
		t.Errorf("generation 1, still kept by del-b: HEAD %d, want 200", code)
	}
	if err := c.Get(ctx, client.ObjectKey{Name: "del-b"}, &got); err != nil || !got.Status.CachedServed {
		t.Errorf("del-b after del-a's delete: %v cached %v", err, got.Status.CachedServed)
	}
}

func waitCached(t *testing.T, c client.Client, name string, gen int64) {
	t.Helper()
	rig.WaitFor(t, time.Minute, fmt.Sprintf("%s generation %d cached", name, gen), func() (bool, string) {
		var got v1alpha1.Tag
		if err := c.Get(context.Background(), client.ObjectKey{Name: name}, &got); err != nil {
			return false, err.Error()
		}
		return got.Status.ServedGeneration == gen && got.Status.CachedServed, fmt.Sprintf("served %d cached %v", got.Status.ServedGeneration, got.Status.CachedServed)
	})
}
