// Package cache proves the bundled-registry cache on real components: a
// real apiserver (envtest), the controller copying into a real distribution
// registry, a real upstream registry, a real containerd and the node agent.
// With the whole tree cached, a node pulls the pinned image while the
// upstream is down or has deleted it.
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

func TestCachedPulls(t *testing.T) {
	rig.RequireRoot(t)
	rig.RequireBins(t, "registry", "containerd", "ctr", "containerd-shim-runc-v2")
	ctx := context.Background()
	kc := rig.NewKube(t)
	c := kc.Client
	up := rig.NewRegistry(t, rig.RegistryOptions{})
	bundled := inproc.NewAuthRegistry(t, kc, rig.RegistryOptions{})
	uploads := rig.NewCountingProxy(t, bundled.URL())

	o := inproc.ControllerOptions()
	bundled.Controller(&o)
	o.RegistryURL = uploads.URL()
	inproc.RunController(kc, o)

	ctd := rig.NewContainerd(t, rig.ContainerdOptions{})
	agent := inproc.RunNodeAgentWith(t, kc, ctd, bundled.Agent)

	image := up.Host() + "/team/app:v1"
	idx := up.PushIndex(t, "team/app", "v1", []string{"linux/amd64", "linux/arm64"}, rig.IndexOptions{Attestations: true})
	tag := &v1alpha1.Tag{ObjectMeta: metav1.ObjectMeta{Name: "app"}, Spec: v1alpha1.TagSpec{Image: image, Cache: true}}
	if err := c.Create(ctx, tag); err != nil {
		t.Fatal(err)
	}
	rig.WaitFor(t, time.Minute, "generation 1 cached and served on the node", func() (bool, string) {
		var got v1alpha1.Tag
		if err := c.Get(ctx, client.ObjectKey{Name: "app"}, &got); err != nil {
			return false, err.Error()
		}
		ref, _ := pins.ParseReference(image)
		p, ok := agent.Pins().Lookup(ref.Registry, ref.Repository, ref.Tag)
		cond := ""
		for _, cd := range got.Status.Conditions {
			if cd.Type == v1alpha1.ConditionCached {
				cond = string(cd.Status) + " " + cd.Reason + ": " + cd.Message
			}
		}
		return got.Status.CachedServed && ok && p.Cached && p.Digest == idx.Digest.String() && len(agent.NotReady()) == 0,
			fmt.Sprintf("cachedServed %v, Cached %q, node pin %+v", got.Status.CachedServed, cond, p)
	})

	// 1. Every manifest and blob of the multi-arch tree is in the bundled
	// registry under the cache repository, byte-identical.
	ref, _ := pins.ParseReference(image)
	cacheRepo := ref.CacheRepository()
	check := func(path, accept string, want string) {
		t.Helper()
		resp, body := bundled.Get(t, cacheRepo, "/v2/"+cacheRepo+"/"+path, accept)
		if resp.StatusCode != http.StatusOK || fmt.Sprintf("sha256:%x", sha(body)) != want {
			t.Fatalf("bundled registry %s/%s: status %d, content %s, want %s", cacheRepo, path, resp.StatusCode, fmt.Sprintf("sha256:%x", sha(body)), want)
		}
	}
	check("manifests/"+idx.Digest.String(), idx.MediaType, idx.Digest.String())
	for _, img := range append(append([]rig.Image{}, idx.Images...), idx.Attestations...) {
		check("manifests/"+img.Digest.String(), img.MediaType, img.Digest.String())
		for d := range img.Blobs {
			check("blobs/"+d.String(), "", d.String())
		}
	}
	// A later reconcile (a check) uploads nothing again.
	before := uploads.Count(http.MethodPut, rig.KindUpload)
	rig.AnnotateCheck(t, c, "app", "again")
	rig.WaitFor(t, time.Minute, "check acted on", func() (bool, string) {
		var got v1alpha1.Tag
		_ = c.Get(ctx, client.ObjectKey{Name: "app"}, &got)
		return got.Status.CheckAnnotation == "again", got.Status.CheckAnnotation
	})
	if after := uploads.Count(http.MethodPut, rig.KindUpload); after != before {
		t.Fatalf("a second reconcile uploaded %d blobs again", after-before)
	}

	// 2. The upstream is down (process killed, port closed): a node with an
	// empty content store still pulls the pinned digest.
	up.Stop()
	if got := freshPull(t, ctd, image); got != idx.Digest.String() {
		t.Fatalf("upstream down: pulled %s, want %s", got, idx.Digest)
	}

	// 3. The upstream deleted the tag and its manifest: still pulls.
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	up.DeleteManifest(t, "team/app", idx.Digest)
	if got := freshPull(t, ctd, image); got != idx.Digest.String() {
		t.Fatalf("upstream deleted the image: pulled %s, want %s", got, idx.Digest)
	}
}

func freshPull(t *testing.T, ctd *rig.Containerd, ref string) string {
	t.Helper()
	ctx := context.Background()
	if err := ctd.RemoveAllImages(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := ctd.Pull(ctx, ref); err != nil {
		t.Fatalf("CRI pull %s: %v", ref, err)
	}
	d, ok, err := ctd.ImageDigest(ctx, ref)
	if err != nil || !ok {
		t.Fatalf("no record of %s: %v %v", ref, ok, err)
	}
	return d
}

// startCaching starts an apiserver, an upstream and a bundled registry with
// authentication on (as the chart deploys it), and the controller caching
// into the bundled one and issuing its tokens.
func startCaching(t *testing.T) (*rig.Kube, *rig.Registry, *inproc.AuthRegistry) {
	t.Helper()
	kc := rig.NewKube(t)
	up := rig.NewRegistry(t, rig.RegistryOptions{})
	bundled := inproc.NewAuthRegistry(t, kc, rig.RegistryOptions{})
	o := inproc.ControllerOptions()
	bundled.Controller(&o)
	inproc.RunController(kc, o)
	return kc, up, bundled
}
