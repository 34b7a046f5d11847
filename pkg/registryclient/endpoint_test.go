package registryclient_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/pkg/registryclient"
)

// TestEndpointPushAndRead pushes an image by descriptor into a real
// registry, reads it back and deletes it: what the copier and a test pusher do.
func TestEndpointPushAndRead(t *testing.T) {
	reg := rig.NewRegistry(t, rig.RegistryOptions{})
	ctx := testCtx(t)
	e, err := registryclient.NewEndpoint(reg.URL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	const repo = "team/pushed"
	blob := func(b []byte, mt string) ocispec.Descriptor {
		return ocispec.Descriptor{MediaType: mt, Digest: digest.FromBytes(b), Size: int64(len(b))}
	}
	layerBytes := []byte("layer bytes")
	cfgBytes := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	layer, cfg := blob(layerBytes, ocispec.MediaTypeImageLayer), blob(cfgBytes, ocispec.MediaTypeImageConfig)
	for _, b := range []struct {
		d    ocispec.Descriptor
		body []byte
	}{{layer, layerBytes}, {cfg, cfgBytes}} {
		if ok, err := e.BlobExists(ctx, repo, b.d.Digest); err != nil || ok {
			t.Fatalf("BlobExists before push = %v, %v; want false, nil", ok, err)
		}
		if err := e.PushBlob(ctx, repo, b.d, bytes.NewReader(b.body)); err != nil {
			t.Fatalf("PushBlob: %v", err)
		}
		if ok, err := e.BlobExists(ctx, repo, b.d.Digest); err != nil || !ok {
			t.Fatalf("BlobExists after push = %v, %v; want true, nil", ok, err)
		}
	}
	mb, err := json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		Config: cfg, Layers: []ocispec.Descriptor{layer},
	})
	if err != nil {
		t.Fatal(err)
	}
	md := blob(mb, ocispec.MediaTypeImageManifest)
	if err := e.PushManifest(ctx, repo, "v1", md, mb); err != nil {
		t.Fatalf("PushManifest: %v", err)
	}
	if got, err := e.ManifestDigest(ctx, repo, "v1"); err != nil || got != md.Digest {
		t.Fatalf("ManifestDigest(v1) = %s, %v; want %s", got, err, md.Digest)
	}
	body, d, err := e.FetchManifest(ctx, repo, md.Digest)
	if err != nil || !bytes.Equal(body, mb) || d.MediaType != md.MediaType || d.Size != md.Size {
		t.Fatalf("FetchManifest = %q, %+v, %v", body, d, err)
	}

	// Mount into another repository: no bytes move.
	mounted, loc, err := e.StartUpload(ctx, "team/other", layer.Digest, repo)
	if err != nil || !mounted || loc != "" {
		t.Fatalf("StartUpload(mount) = %v, %q, %v; want mounted", mounted, loc, err)
	}

	if gone, err := e.DeleteManifest(ctx, repo, md.Digest); err != nil || gone {
		t.Fatalf("DeleteManifest = %v, %v; want deleted", gone, err)
	}
	if gone, err := e.DeleteManifest(ctx, repo, md.Digest); err != nil || !gone {
		t.Fatalf("DeleteManifest again = %v, %v; want already gone", gone, err)
	}
	_, _, err = e.FetchManifest(ctx, repo, digest.FromString("absent"))
	if !registryclient.IsNotFound(err) {
		t.Fatalf("FetchManifest(absent) = %v; want a 404 *Error", err)
	}
}

// TestEndpointTypedErrors: a failing answer is an *Error with the status,
// the Retry-After and the body's start.
func TestEndpointTypedErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "7")
		http.Error(w, "slow down", http.StatusTooManyRequests)
	}))
	t.Cleanup(srv.Close)
	e, err := registryclient.NewEndpoint(srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.BlobExists(testCtx(t), "a/b", digest.FromString("x"))
	var re *registryclient.Error
	if !errors.As(err, &re) || re.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("BlobExists = %v; want a 429 *Error", err)
	}
	if wait, ok := registryclient.RetryAfter(err); !ok || wait.Seconds() != 7 {
		t.Fatalf("RetryAfter = %v, %v; want 7s", wait, ok)
	}
	err = e.PushManifest(testCtx(t), "a/b", "v1", ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest}, []byte("{}"))
	if !errors.As(err, &re) || re.StatusCode != http.StatusTooManyRequests || !bytes.Contains([]byte(err.Error()), []byte("slow down")) {
		t.Fatalf("PushManifest = %v; want a 429 *Error saying the body", err)
	}
}
