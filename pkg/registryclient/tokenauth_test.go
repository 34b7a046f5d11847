package registryclient

import (
	"net/http"
	"net/url"
	"slices"
	"testing"
)

// TestRequestScopes pins the scope each bundled-registry request asks for:
// least privilege per request, and the mount source's pull.
func TestRequestScopes(t *testing.T) {
	for _, c := range []struct {
		method, url string
		want        []string
	}{
		{http.MethodGet, "/v2/", nil},
		{http.MethodGet, "/v2/_catalog", []string{"registry:catalog:*"}},
		{http.MethodHead, "/v2/cache/a/manifests/sha256:1", []string{"repository:cache/a:pull"}},
		{http.MethodGet, "/v2/cache/a/blobs/sha256:1", []string{"repository:cache/a:pull"}},
		{http.MethodGet, "/v2/cache/a/tags/list", []string{"repository:cache/a:pull"}},
		{http.MethodPut, "/v2/cache/a/manifests/v1", []string{"repository:cache/a:pull,push"}},
		{http.MethodPost, "/v2/cache/a/blobs/uploads/", []string{"repository:cache/a:pull,push"}},
		{http.MethodPost, "/v2/cache/a/blobs/uploads/?mount=sha256:1&from=cache/b", []string{"repository:cache/a:pull,push", "repository:cache/b:pull"}},
		{http.MethodPut, "/v2/cache/a/blobs/uploads/uuid?digest=sha256:1", []string{"repository:cache/a:pull,push"}},
		{http.MethodDelete, "/v2/cache/a/blobs/uploads/uuid", []string{"repository:cache/a:pull,push"}},
		{http.MethodDelete, "/v2/cache/a/manifests/sha256:1", []string{"repository:cache/a:delete"}},
		{http.MethodGet, "/v2/cache/blobs/x/blobs/sha256:1", []string{"repository:cache/blobs/x:pull"}},
		{http.MethodGet, "/other", nil},
	} {
		u, err := url.Parse("http://r:5000" + c.url)
		if err != nil {
			t.Fatal(err)
		}
		if got := RequestScopes(c.method, u); !slices.Equal(got, c.want) {
			t.Errorf("%s %s: %q, want %q", c.method, c.url, got, c.want)
		}
	}
}
