package cache

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/internal/rig/inproc"
	"github.com/tagger-project/tagger/pkg/controller/registryauth"
	"github.com/tagger-project/tagger/pkg/pins"
	"github.com/tagger-project/tagger/pkg/registryclient"
)

// TestIntruderCannotTouchCache is issue #12's attack: an ordinary pod's
// identity (a ServiceAccount token bound to the registry's audience, the
// best it can get) and a pod without any token try to delete a cached
// manifest and push a blob into the bundled registry. Both are refused, the
// manifest stays, and the node still pulls the pinned image with the
// upstream down.
func TestIntruderCannotTouchCache(t *testing.T) {
	rig.RequireRoot(t)
	rig.RequireBins(t, "registry", "containerd", "ctr", "containerd-shim-runc-v2")
	ctx := context.Background()
	kc, up, bundled := startCaching(t)
	ctd := rig.NewContainerd(t, rig.ContainerdOptions{})
	agent := inproc.RunNodeAgentWith(t, kc, ctd, bundled.Agent)

	image := up.Host() + "/team/app:v1"
	img := up.PushImage(t, "team/app", "v1", rig.ImageOptions{})
	tag := &v1alpha1.Tag{ObjectMeta: metav1.ObjectMeta{Name: "app"}, Spec: v1alpha1.TagSpec{Image: image, Cache: true}}
	if err := kc.Client.Create(ctx, tag); err != nil {
		t.Fatal(err)
	}
	ref, _ := pins.ParseReference(image)
	rig.WaitFor(t, time.Minute, "cached and served on the node", func() (bool, string) {
		p, ok := agent.Pins().Lookup(ref.Registry, ref.Repository, ref.Tag)
		return ok && p.Cached && p.Digest == img.Digest.String(), "node pin not cached yet"
	})
	repo := ref.CacheRepository()

	// The intruder's identity, projected as the chart projects the agent's.
	tokFile := filepath.Join(t.TempDir(), "token")
	tok := inproc.ServiceAccountToken(t, kc, "default", "intruder", registryauth.DefaultAudience)
	if err := os.WriteFile(tokFile, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	ta, err := registryclient.NewTokenAuth(bundled.URL(), nil, registryclient.ServiceAccountToken(tokFile), "intruder")
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for name, hc := range map[string]*http.Client{"intruder's token": {Transport: ta}, "no token": http.DefaultClient} {
		ep, err := registryclient.NewEndpoint(bundled.URL(), hc)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ep.DeleteManifest(cctx, repo, img.Digest); err == nil || !refused(err) {
			t.Errorf("%s: delete cached manifest: %v, want refused", name, err)
		}
		blob := []byte("not from the controller")
		d := ocispec.Descriptor{MediaType: "application/octet-stream", Digest: digest.FromBytes(blob), Size: int64(len(blob))}
		if err := ep.PushBlob(cctx, repo, d, strings.NewReader(string(blob))); err == nil || !refused(err) {
			t.Errorf("%s: push blob: %v, want refused", name, err)
		}
		if code := bundled.Head(t, bundled.URL()+"/v2/"+repo+"/blobs/"+d.Digest.String()); code != http.StatusNotFound {
			t.Errorf("%s: the pushed blob is there (HEAD %d)", name, code)
		}
	}
	if code := bundled.Head(t, bundled.URL()+"/v2/"+repo+"/manifests/"+img.Digest.String()); code != http.StatusOK {
		t.Fatalf("cached manifest after the attack: HEAD %d, want 200", code)
	}

	up.Stop()
	if got := freshPull(t, ctd, image); got != img.Digest.String() {
		t.Fatalf("upstream down after the attack: pulled %s, want %s", got, img.Digest)
	}
}

// refused: the registry answered 401/403, or its issuer refused a token.
func refused(err error) bool {
	return registryclient.IsUnauthorized(err) || strings.Contains(err.Error(), "401")
}
