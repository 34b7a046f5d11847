package rig

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
)

func TestS3Server(t *testing.T) {
	s := NewS3(t, S3Options{Bucket: "probe"})
	if keys := s.Keys(t, ""); len(keys) != 0 {
		t.Fatalf("fresh bucket holds %v", keys)
	}

	// Signed requests work, unsigned ones are refused: the identity is real.
	ctx := context.Background()
	s.mu.Lock()
	status, body, err := s.do(ctx, s.client, http.MethodPut, "/probe/dir/obj", []byte("hello"))
	s.mu.Unlock()
	if err != nil || status != http.StatusOK {
		t.Fatalf("signed PUT: %d %v %s", status, err, body)
	}
	if keys := s.Keys(t, "dir/"); !slices.Equal(keys, []string{"dir/obj"}) {
		t.Fatalf("keys under dir/: %v", keys)
	}
	resp, err := http.Get(s.Endpoint() + "/probe/dir/obj")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("anonymous GET: %s, want 403", resp.Status)
	}

	s.Stop()
	if s.Running() {
		t.Fatal("running after Stop")
	}
	if _, err := http.Get(s.Endpoint() + "/"); err == nil {
		t.Fatal("gateway still answers after Stop")
	}
}

// TestRegistryOnS3: a registry configured with Options.S3 keeps its content
// in the bucket, and a second registry on the same bucket and root serves it.
func TestRegistryOnS3(t *testing.T) {
	s := NewS3(t, S3Options{})
	a := NewRegistry(t, RegistryOptions{S3: s.Storage("/reg")})
	b := NewRegistry(t, RegistryOptions{S3: s.Storage("/reg")})
	img := a.PushImage(t, "team/app", "v1", ImageOptions{Layers: 1})

	keys := s.Keys(t, "reg/docker/registry/v2/blobs/")
	want := "/" + img.Digest.Encoded() + "/data"
	if !slices.ContainsFunc(keys, func(k string) bool { return strings.HasSuffix(k, want) }) {
		t.Fatalf("manifest blob %s not in the bucket: %v", img.Digest, keys)
	}
	_, got := b.Get(t, "team/app", "/v2/team/app/manifests/"+img.Digest.String(), img.MediaType)
	if string(got) != string(img.Manifest) {
		t.Fatalf("registry B serves another manifest:\n%s", got)
	}
	for d := range img.Blobs {
		resp, _ := b.Get(t, "team/app", "/v2/team/app/blobs/"+d.String(), "")
		if resp.Request.URL.Host != b.Host() {
			t.Fatalf("blob %s served from %s, not by the registry", d, resp.Request.URL.Host)
		}
	}
}
