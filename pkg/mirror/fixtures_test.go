package mirror

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/pkg/pins"
)

// testPin is a pin fixture.
type testPin struct {
	image     string
	body      []byte // the manifest
	mediaType string
	size      int64 // 0: len(body)
}

func (p testPin) digest() digest.Digest { return digest.FromBytes(p.body) }

// newTable builds a pin table from fixtures through pins.BuildSnapshot, the
// way the node agent does.
func newTable(tb testing.TB, ps ...testPin) *pins.Table {
	tb.Helper()
	tags := make([]v1alpha1.Tag, 0, len(ps))
	for i, p := range ps {
		size := p.size
		if size == 0 {
			size = int64(len(p.body))
		}
		if size < 0 {
			size = 0
		}
		d := p.digest().String()
		tags = append(tags, v1alpha1.Tag{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("t%d", i)},
			Spec:       v1alpha1.TagSpec{Image: p.image},
			Status: v1alpha1.TagStatus{
				ServedGeneration: 1,
				ServedDigest:     d,
				Generations:      []v1alpha1.Generation{{Generation: 1, Digest: d, MediaType: p.mediaType, Size: size}},
			},
		})
	}
	s := pins.BuildSnapshot(tags)
	if s.Len() != len(ps) {
		tb.Fatalf("BuildSnapshot kept %d of %d pins", s.Len(), len(ps))
	}
	t := pins.NewTable()
	t.Store(s)
	return t
}

// Manifest fixtures. Their bodies only need distinct digests.
var (
	nginxPin = testPin{image: "nginx:1.27", mediaType: ocispec.MediaTypeImageIndex,
		body: []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`)}
	redisPin = testPin{image: "docker.io/library/redis:7", mediaType: mediaTypeDockerManifest,
		body: []byte(`{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","layers":[]}`)}
	appPin = testPin{image: "localhost:5000/team/app:v1", mediaType: ocispec.MediaTypeImageManifest,
		body: []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}`)}
	brokenPin = testPin{image: "quay.io/o/broken:v1", mediaType: ocispec.MediaTypeImageManifest,
		body: []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{}}`)}
	// blob is a layer of nginx in the bundled registry.
	blob = bytes.Repeat([]byte("0123456789abcdef"), 8192) // 128 KiB
)

func blobDigest() digest.Digest { return digest.FromBytes(blob) }

// content is what the fake registry holds at one path.
type content struct {
	body      []byte
	mediaType string
	digest    string // Docker-Content-Digest; the requested digest if empty
}

// request is what the fake registry saw.
type request struct {
	method, path, accept, rng, ua, encoding string
}

// fakeRegistry behaves like distribution for reads: content by
// /v2/<repo>/(manifests|blobs)/<digest>, Range through http.ServeContent,
// and its trap: an OCI manifest is 404 unless Accept names its media type.
type fakeRegistry struct {
	mu       sync.Mutex
	content  map[string]content
	requests []request
}

func (f *fakeRegistry) put(path string, c content) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.content == nil {
		f.content = map[string]content{}
	}
	f.content[path] = c
}

func (f *fakeRegistry) seen() []request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.requests)
}

func (f *fakeRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.requests = append(f.requests, request{
		method: r.Method, path: r.URL.Path, accept: strings.Join(r.Header.Values("Accept"), ", "),
		rng: r.Header.Get("Range"), ua: r.Header.Get("User-Agent"), encoding: r.Header.Get("Accept-Encoding"),
	})
	c, ok := f.content[r.URL.Path]
	f.mu.Unlock()
	if ok && strings.Contains(r.URL.Path, "/manifests/") && strings.HasPrefix(c.mediaType, "application/vnd.oci.") &&
		!strings.Contains(strings.Join(r.Header.Values("Accept"), ","), c.mediaType) {
		ok = false
	}
	if !ok {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"errors":[{"code":"BLOB_UNKNOWN"}]}`))
		return
	}
	d := c.digest
	if d == "" {
		d = r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
	}
	w.Header().Set("Docker-Content-Digest", d)
	w.Header().Set("Etag", `"`+d+`"`)
	w.Header().Set("Content-Type", c.mediaType)
	http.ServeContent(w, r, "", nilTime(), bytes.NewReader(c.body))
}

// newRegistry starts a fake bundled registry holding nginx (manifest and
// blob), app, and a wrong body under broken's digest.
func newRegistry(t *testing.T) (*fakeRegistry, *httptest.Server) {
	t.Helper()
	f := &fakeRegistry{}
	f.put("/v2/docker.io/library/nginx/manifests/"+nginxPin.digest().String(), content{body: nginxPin.body, mediaType: nginxPin.mediaType})
	f.put("/v2/docker.io/library/nginx/blobs/"+blobDigest().String(), content{body: blob, mediaType: "application/octet-stream"})
	f.put("/v2/localhost_5000/team/app/manifests/"+appPin.digest().String(), content{body: appPin.body, mediaType: appPin.mediaType})
	f.put("/v2/quay.io/o/broken/manifests/"+brokenPin.digest().String(), content{body: redisPin.body, mediaType: brokenPin.mediaType})
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

// digestKey keys the fake upstream's manifests.
type digestKey string

// fakeUpstream serves manifests by digest.
type fakeUpstream struct {
	mu        sync.Mutex
	manifests map[digestKey]content
	calls     []string // "<ref name>@<digest> accept=<accept>"
}

func (u *fakeUpstream) FetchManifest(ctx context.Context, ref pins.Reference, dgst digest.Digest, accept []string) ([]byte, string, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.calls = append(u.calls, ref.Name()+"@"+dgst.String()+" accept="+strings.Join(accept, ", "))
	c, ok := u.manifests[digestKey(dgst)]
	if !ok {
		return nil, "", errors.New("fake upstream: 404 manifest unknown")
	}
	return c.body, c.mediaType, nil
}

func (u *fakeUpstream) seen() []string {
	if u == nil {
		return nil
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.calls)
}

func newUpstream() *fakeUpstream {
	return &fakeUpstream{manifests: map[digestKey]content{
		digestKey(redisPin.digest()): {body: redisPin.body, mediaType: redisPin.mediaType},
		digestKey(nginxPin.digest()): {body: nginxPin.body, mediaType: nginxPin.mediaType},
	}}
}

// newHandler builds a handler over the standard fixtures.
func newHandler(t *testing.T, registryURL string, up ManifestFetcher) *Handler {
	t.Helper()
	h, err := New(Options{
		Table:       newTable(t, nginxPin, redisPin, appPin, brokenPin),
		RegistryURL: registryURL,
		Upstream:    up,
		Metrics:     NewMetrics(nil),
	})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// do sends a request line straight to the handler, parsed as net/http's
// server parses it (so RawPath is what a client sent).
func do(h http.Handler, method, target string, hdr ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Add(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// errorCode is the first OCI error code of a response body.
func errorCode(body []byte) string {
	const k = `"code":"`
	i := bytes.Index(body, []byte(k))
	if i < 0 {
		return ""
	}
	rest := body[i+len(k):]
	return string(rest[:bytes.IndexByte(rest, '"')])
}

// nilTime: no Last-Modified, no If-Modified-Since handling.
func nilTime() time.Time { return time.Time{} }

func digestOf(b []byte) string { return digest.FromBytes(b).String() }
