package cache

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/internal/rig/inproc"
	"github.com/tagger-project/tagger/pkg/pins"
)

// TestCachedPullsS3 is TestCachedPulls' scenarios 1 and 2 with the bundled
// registry on S3-compatible storage (a real SeaweedFS), scaled out: two
// registry processes share one bucket and root directory, the controller
// writes through A only, and node agents read through either.
func TestCachedPullsS3(t *testing.T) {
	rig.RequireRoot(t)
	rig.RequireBins(t, "registry", "weed", "containerd", "ctr", "containerd-shim-runc-v2")
	ctx := context.Background()
	kc := rig.NewKube(t)
	c := kc.Client
	store := rig.NewS3(t, rig.S3Options{Bucket: "tagger-cache"})
	const root = "/tagger"
	regA := rig.NewRegistry(t, rig.RegistryOptions{S3: store.Storage(root)})
	regB := rig.NewRegistry(t, rig.RegistryOptions{S3: store.Storage(root)})
	up := rig.NewRegistry(t, rig.RegistryOptions{})

	o := inproc.ControllerOptions()
	o.RegistryURL = regA.URL()
	inproc.RunController(kc, o)

	// One node (containerd + agent) reading through each replica.
	ctdB := rig.NewContainerd(t, rig.ContainerdOptions{})
	agentB := inproc.RunNodeAgent(t, kc, ctdB, regB.URL())
	ctdA := rig.NewContainerd(t, rig.ContainerdOptions{})
	agentA := inproc.RunNodeAgent(t, kc, ctdA, regA.URL())

	image := up.Host() + "/team/app:v1"
	idx := up.PushIndex(t, "team/app", "v1", []string{"linux/amd64", "linux/arm64"}, rig.IndexOptions{Attestations: true})
	tag := &v1alpha1.Tag{ObjectMeta: metav1.ObjectMeta{Name: "app"}, Spec: v1alpha1.TagSpec{Image: image, Cache: true}}
	if err := c.Create(ctx, tag); err != nil {
		t.Fatal(err)
	}
	ref, _ := pins.ParseReference(image)
	rig.WaitFor(t, time.Minute, "generation 1 cached and served on both nodes", func() (bool, string) {
		var got v1alpha1.Tag
		if err := c.Get(ctx, client.ObjectKey{Name: "app"}, &got); err != nil {
			return false, err.Error()
		}
		pa, okA := agentA.Pins().Lookup(ref.Registry, ref.Repository, ref.Tag)
		pb, okB := agentB.Pins().Lookup(ref.Registry, ref.Repository, ref.Tag)
		cond := ""
		for _, cd := range got.Status.Conditions {
			if cd.Type == v1alpha1.ConditionCached {
				cond = string(cd.Status) + " " + cd.Reason + ": " + cd.Message
			}
		}
		want := idx.Digest.String()
		return got.Status.CachedServed && okA && okB && pa.Cached && pb.Cached && pa.Digest == want && pb.Digest == want &&
				len(agentA.NotReady()) == 0 && len(agentB.NotReady()) == 0,
			fmt.Sprintf("cachedServed %v, Cached %q, pin on A %+v, on B %+v", got.Status.CachedServed, cond, pa, pb)
	})

	// 1. Every descriptor of the multi-arch tree (index, platform and
	// attestation manifests, configs, layers) is served byte-identical by
	// both replicas: B, which the controller never wrote to, reads it from
	// the bucket.
	cacheRepo := ref.CacheRepository()
	type desc struct{ path, accept, digest string }
	descs := []desc{{"manifests/" + idx.Digest.String(), idx.MediaType, idx.Digest.String()}}
	for _, img := range append(append([]rig.Image{}, idx.Images...), idx.Attestations...) {
		descs = append(descs, desc{"manifests/" + img.Digest.String(), img.MediaType, img.Digest.String()})
		for d := range img.Blobs {
			descs = append(descs, desc{"blobs/" + d.String(), "", d.String()})
		}
	}
	for _, reg := range []struct {
		name string
		r    *rig.Registry
	}{{"B", regB}, {"A", regA}} {
		for _, d := range descs {
			resp, body := reg.r.Get(t, cacheRepo, "/v2/"+cacheRepo+"/"+d.path, d.accept)
			if got := fmt.Sprintf("sha256:%x", sha(body)); got != d.digest {
				t.Fatalf("registry %s %s/%s: content %s, want %s", reg.name, cacheRepo, d.path, got, d.digest)
			}
			// Streamed by the registry itself (redirect disabled), never
			// a 307 to the store: nodes need no route to S3.
			if resp.Request.URL.Host != reg.r.Host() {
				t.Fatalf("registry %s %s/%s: answered from %s", reg.name, cacheRepo, d.path, resp.Request.URL.Host)
			}
		}
	}
	// And the content really is in the bucket, under the shared root.
	keys := store.Keys(t, strings.TrimPrefix(root, "/")+"/docker/registry/v2/blobs/")
	for _, d := range descs {
		dg := d.digest[len("sha256:"):]
		if !slices.Contains(keys, fmt.Sprintf("tagger/docker/registry/v2/blobs/sha256/%s/%s/data", dg[:2], dg)) {
			t.Fatalf("%s is not in bucket %s (%d blob keys)", d.digest, store.Bucket(), len(keys))
		}
	}

	// 2. The upstream is down (process killed, port closed): a node with an
	// empty content store pulls the pinned digest through either replica,
	// each while the other replica is down too.
	up.Stop()
	assertClosed(t, up.Host())
	for _, n := range []struct {
		name        string
		ctd         *rig.Containerd
		serve, down *rig.Registry
	}{{"B", ctdB, regB, regA}, {"A", ctdA, regA, regB}} {
		n.down.Stop()
		assertClosed(t, n.down.Host())
		if got := freshPull(t, n.ctd, image); got != idx.Digest.String() {
			t.Fatalf("upstream down, pull through registry %s: pulled %s, want %s", n.name, got, idx.Digest)
		}
		if err := n.down.Start(); err != nil {
			t.Fatal(err)
		}
	}
}

// assertClosed fails unless nothing accepts connections on host.
func assertClosed(t *testing.T, host string) {
	t.Helper()
	if conn, err := net.DialTimeout("tcp", host, time.Second); err == nil {
		conn.Close()
		t.Fatalf("%s still accepts connections", host)
	}
}
