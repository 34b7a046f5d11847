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
	"github.com/tagger-project/tagger/internal/rig/inproc"
	"github.com/tagger-project/tagger/pkg/pins"
)

// TestRetentionGCThenPull is issue #4's test 6 end to end: three
// generations built on one base layer, historyLimit 2 prunes generation 1,
// the registry's garbage collector runs (as the chart's CronJob does); then
// generation 1's own blobs are gone, the shared base layer is not, and a
// node pulls generations 3 and 2 from the bundled registry alone, with the
// upstream stopped.
func TestRetentionGCThenPull(t *testing.T) {
	rig.RequireRoot(t)
	rig.RequireBins(t, "registry", "containerd", "ctr", "containerd-shim-runc-v2")
	ctx := context.Background()
	kc, up, bundled := startCaching(t)
	c := kc.Client
	ctd := rig.NewContainerd(t, rig.ContainerdOptions{})
	agent := inproc.RunNodeAgentWith(t, kc, ctd, bundled.Agent)

	base := up.PushImage(t, "gc/base", "v1", rig.ImageOptions{LayerSize: 64 << 10})
	image := up.Host() + "/gc/app:v1"
	ref, _ := pins.ParseReference(image)
	tag := &v1alpha1.Tag{ObjectMeta: metav1.ObjectMeta{Name: "gc"}, Spec: v1alpha1.TagSpec{Image: image, Cache: true, HistoryLimit: 2}}
	var gens []rig.Image
	for i := 1; i <= 3; i++ {
		gens = append(gens, up.PushImage(t, "gc/app", "v1", rig.ImageOptions{Base: &base, LayerSize: 32 << 10}))
		if i == 1 {
			if err := c.Create(ctx, tag); err != nil {
				t.Fatal(err)
			}
		} else {
			check := fmt.Sprintf(`{"metadata":{"annotations":{%q:"c%d"}}}`, v1alpha1.CheckAnnotation, i)
			if err := c.Patch(ctx, &v1alpha1.Tag{ObjectMeta: metav1.ObjectMeta{Name: "gc"}}, client.RawPatch("application/merge-patch+json", []byte(check))); err != nil {
				t.Fatal(err)
			}
		}
		waitCached(t, c, "gc", int64(i))
	}
	blob := func(d fmt.Stringer) string {
		return bundled.URL() + "/v2/" + ref.CacheRepository() + "/blobs/" + d.String()
	}
	manifest := func(img rig.Image) string {
		return bundled.URL() + "/v2/" + ref.CacheRepository() + "/manifests/" + img.Digest.String()
	}
	rig.WaitFor(t, time.Minute, "generation 1 pruned from the bundled registry", func() (bool, string) {
		code := bundled.Head(t, manifest(gens[0]))
		return code == http.StatusNotFound, fmt.Sprintf("HEAD %d", code)
	})
	own1, shared := gens[0].Layers[1].Digest, base.Layers[0].Digest
	if code := bundled.Head(t, blob(own1)); code != http.StatusOK {
		t.Fatalf("before GC, generation 1's own layer: HEAD %d, want 200 (manifest deletes free no blobs)", code)
	}

	bundled.CollectGarbage(t)
	for _, d := range []fmt.Stringer{own1, gens[0].Config.Digest} {
		if code := bundled.Head(t, blob(d)); code != http.StatusNotFound {
			t.Errorf("after GC, generation 1's own blob %s: HEAD %d, want 404", d, code)
		}
	}
	if code := bundled.Head(t, blob(shared)); code != http.StatusOK {
		t.Errorf("after GC, the base layer generations 2 and 3 share: HEAD %d, want 200", code)
	}

	up.Stop()
	assertClosed(t, up.Host())
	if got := freshPull(t, ctd, image); got != gens[2].Digest.String() {
		t.Fatalf("generation 3 after GC, upstream down: pulled %s, want %s", got, gens[2].Digest)
	}
	if err := c.Patch(ctx, &v1alpha1.Tag{ObjectMeta: metav1.ObjectMeta{Name: "gc"}}, client.RawPatch("application/merge-patch+json", []byte(`{"spec":{"generation":2}}`))); err != nil {
		t.Fatal(err)
	}
	rig.WaitFor(t, time.Minute, "generation 2 served on the node", func() (bool, string) {
		p, ok := agent.Pins().Lookup(ref.Registry, ref.Repository, ref.Tag)
		return ok && p.Digest == gens[1].Digest.String(), fmt.Sprintf("pin %+v (%v)", p, ok)
	})
	if got := freshPull(t, ctd, image); got != gens[1].Digest.String() {
		t.Fatalf("generation 2 after GC, upstream down: pulled %s, want %s", got, gens[1].Digest)
	}
}
