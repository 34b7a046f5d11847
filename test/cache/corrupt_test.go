package cache

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/pkg/pins"
)

// flipper is a reverse proxy in front of an upstream that, while on, flips
// one byte of every blob body it passes.
type flipper struct {
	on  atomic.Bool
	srv *httptest.Server
}

func newFlipper(t *testing.T, target string) *flipper {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	f := &flipper{}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ModifyResponse = func(resp *http.Response) error {
		// Layers only (the small config must pass: the check reads it for
		// the platform).
		if f.on.Load() && resp.Request.Method == http.MethodGet && strings.Contains(resp.Request.URL.Path, "/blobs/") && resp.ContentLength > 16<<10 {
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if len(body) > 0 {
				body[len(body)/2] ^= 0xff
			}
			resp.Body = io.NopCloser(strings.NewReader(string(body)))
		}
		return nil
	}
	f.srv = httptest.NewServer(rp)
	t.Cleanup(f.srv.Close)
	return f
}

// TestCorruptUpstreamLayer: a corrupted layer is rejected, nothing corrupt is
// committed, the Cached condition says so while the pin is served, and a
// later clean upstream completes the copy.
func TestCorruptUpstreamLayer(t *testing.T) {
	ctx := context.Background()
	kc, up, bundled := startCaching(t)
	c := kc.Client

	f := newFlipper(t, up.URL())
	f.on.Store(true)
	host := strings.TrimPrefix(f.srv.URL, "http://")
	img := up.PushImage(t, "bad/app", "v1", rig.ImageOptions{Layers: 2, LayerSize: 64 << 10})
	tag := &v1alpha1.Tag{ObjectMeta: metav1.ObjectMeta{Name: "corrupt"}, Spec: v1alpha1.TagSpec{Image: host + "/bad/app:v1", Cache: true}}
	if err := c.Create(ctx, tag); err != nil {
		t.Fatal(err)
	}
	get := func() *v1alpha1.Tag {
		var got v1alpha1.Tag
		if err := c.Get(ctx, client.ObjectKey{Name: "corrupt"}, &got); err != nil {
			t.Fatal(err)
		}
		return &got
	}
	rig.WaitFor(t, time.Minute, "Cached=False CopyFailed with a digest mismatch", func() (bool, string) {
		got := get()
		cd := meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionCached)
		if cd == nil {
			return false, "no Cached condition"
		}
		return cd.Reason == "CopyFailed" && strings.Contains(cd.Message, "digest mismatch") && got.Status.ServedDigest == img.Digest.String(),
			fmt.Sprintf("%s: %s; served %s", cd.Reason, cd.Message, got.Status.ServedDigest)
	})
	if got := get(); got.Status.CachedServed || got.Status.Generations[0].Cached {
		t.Fatal("a generation with a corrupt layer is marked cached")
	}
	// Nothing corrupt was committed: neither the manifest nor the bad layers.
	ref, _ := pins.ParseReference(tag.Spec.Image)
	for _, l := range img.Layers {
		if code := bundled.Head(t, bundled.URL()+"/v2/"+ref.CacheRepository()+"/blobs/"+l.Digest.String()); code != http.StatusNotFound {
			t.Fatalf("layer %s is in the bundled registry (HEAD %d) after a corrupt copy", l.Digest, code)
		}
	}
	if code := bundled.Head(t, bundled.URL()+"/v2/"+ref.CacheRepository()+"/manifests/"+img.Digest.String()); code != http.StatusNotFound {
		t.Fatalf("manifest committed after a corrupt copy (HEAD %d)", code)
	}

	// The upstream serves clean bytes again: the retry completes.
	f.on.Store(false)
	rig.WaitFor(t, time.Minute, "cached after the upstream recovered", func() (bool, string) {
		got := get()
		cd := meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionCached)
		return got.Status.CachedServed && cd != nil && cd.Status == metav1.ConditionTrue, fmt.Sprintf("%+v", cd)
	})
}
