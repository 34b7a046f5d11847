package registryclient_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/pkg/registryclient"
)

// TestTokenAuthOpenRegistry: against a registry that asks for no token
// (authentication not on yet, mid-upgrade) requests go through without
// one, and no credentials are read.
func TestTokenAuthOpenRegistry(t *testing.T) {
	reg := rig.NewRegistry(t, rig.RegistryOptions{})
	img := reg.PushImage(t, "team/app", "v1", rig.ImageOptions{})
	creds := func(context.Context) (registryclient.Credentials, error) {
		t.Error("credentials read for a registry that wants none")
		return registryclient.Credentials{}, errors.New("no credentials here")
	}
	ta, err := registryclient.NewTokenAuth(reg.URL(), nil, creds, "test")
	if err != nil {
		t.Fatal(err)
	}
	ep, err := registryclient.NewEndpoint(reg.URL(), &http.Client{Transport: ta})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for range 3 {
		if _, _, err := ep.FetchManifest(ctx, "team/app", img.Digest); err != nil {
			t.Fatalf("fetch through TokenAuth from an open registry: %v", err)
		}
	}
}
