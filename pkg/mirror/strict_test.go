package mirror

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/tagger-project/tagger/pkg/pins"
)

// fakeContent serves blob (and only blob) as an upstream would, by digest.
type fakeContent struct{ calls []string }

func (f *fakeContent) Open(_ context.Context, ref pins.Reference, method, kind string, dgst digest.Digest, _, rangeHeader string) (*http.Response, error) {
	f.calls = append(f.calls, method+" "+ref.Name()+"/"+kind+"/"+dgst.String()+" "+rangeHeader)
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(method, "/", nil)
	if rangeHeader != "" {
		req.Header.Set("Range", rangeHeader)
	}
	if dgst != blobDigest() {
		http.NotFound(rec, req)
		return rec.Result(), nil
	}
	rec.Header().Set("Docker-Content-Digest", dgst.String())
	http.ServeContent(rec, req, "", nilTime(), bytes.NewReader(blob))
	return rec.Result(), nil
}

// TestStrictUpstreamContent: a strict registry has no upstream host in
// hosts.toml, so content the bundled registry lacks is streamed from the
// upstream by the mirror; a non-strict one answers 404 so containerd goes itself.
func TestStrictUpstreamContent(t *testing.T) {
	target := "/v2/library/nginx/blobs/" + blobDigest().String() + "?ns=docker.io"
	for _, strict := range []bool{false, true} {
		fc := &fakeContent{}
		h, err := New(Options{
			Table:   newTable(t, nginxPin),
			Content: fc,
			Strict:  func(reg string) bool { return strict && reg == "docker.io" },
		})
		if err != nil {
			t.Fatal(err)
		}
		w := do(h, http.MethodGet, target)
		if !strict {
			if w.Code != http.StatusNotFound || len(fc.calls) != 0 {
				t.Fatalf("non-strict: status %d, upstream calls %v; want 404 and none", w.Code, fc.calls)
			}
			continue
		}
		if w.Code != http.StatusOK || !bytes.Equal(w.Body.Bytes(), blob) {
			t.Fatalf("strict: status %d, %d bytes; want the blob from upstream", w.Code, w.Body.Len())
		}
		w = do(h, http.MethodGet, target, "Range", "bytes=10-19")
		if w.Code != http.StatusPartialContent || !bytes.Equal(w.Body.Bytes(), blob[10:20]) {
			t.Fatalf("strict range: status %d body %q", w.Code, w.Body.Bytes())
		}
		missing := "/v2/library/nginx/blobs/" + digest.FromString("absent").String() + "?ns=docker.io"
		if w = do(h, http.MethodGet, missing); w.Code != http.StatusNotFound {
			t.Fatalf("strict, absent upstream too: status %d, want 404", w.Code)
		}
		// An unpinned repository is never proxied, strict or not.
		if w = do(h, http.MethodGet, "/v2/library/other/blobs/"+blobDigest().String()+"?ns=docker.io"); w.Code != http.StatusNotFound || len(fc.calls) != 3 {
			t.Fatalf("unpinned repository: status %d, upstream calls %v", w.Code, fc.calls)
		}
	}
}
