package mirror

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tagger-project/tagger/pkg/pins"
)

// containerdAccept is the Accept line containerd sends for manifests.
const containerdAccept = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, " +
	"application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*"

// cacheRig is a handler over the standard fixtures with the cache on, a
// fake bundled registry and metrics to read.
type cacheRig struct {
	reg *fakeRegistry
	h   *Handler
	m   *Metrics
}

func newCacheRig(t *testing.T, o Options) *cacheRig {
	t.Helper()
	reg, srv := newRegistry(t)
	c := &cacheRig{reg: reg, m: NewMetrics(nil)}
	if o.Table == nil {
		o.Table = newTable(t, nginxPin, redisPin, appPin, brokenPin)
	}
	o.RegistryURL, o.Metrics = srv.URL, c.m
	h, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	c.h = h
	return c
}

// asked counts the bundled registry's requests for path, by method.
func (c *cacheRig) asked(method, path string) int {
	n := 0
	for _, s := range c.reg.seen() {
		if s.method == method && s.path == path {
			n++
		}
	}
	return n
}

func (c *cacheRig) hits() float64   { return testutil.ToFloat64(c.m.cacheHits) }
func (c *cacheRig) misses() float64 { return testutil.ToFloat64(c.m.cacheMisses) }

func nginxByDigest() string {
	return "/v2/library/nginx/manifests/" + nginxPin.digest().String() + "?ns=docker.io"
}

func nginxRegistryPath() string {
	return "/v2/docker.io/library/nginx/manifests/" + nginxPin.digest().String()
}

// wantManifest checks a manifest answer: status 200, the registry's headers
// and (for GET) the bytes.
func wantManifest(t *testing.T, w *httptest.ResponseRecorder, method string, p testPin) {
	t.Helper()
	if w.Code != http.StatusOK {
		t.Fatalf("status %d, want 200; body %s", w.Code, w.Body)
	}
	d := p.digest().String()
	for k, v := range map[string]string{
		"Docker-Content-Digest": d, "Content-Type": p.mediaType, "Content-Length": strconv.Itoa(len(p.body)),
	} {
		if got := w.Header().Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if method == http.MethodGet && !bytes.Equal(w.Body.Bytes(), p.body) {
		t.Errorf("body = %q, want %q", w.Body, p.body)
	}
	if method == http.MethodHead && w.Body.Len() != 0 {
		t.Errorf("HEAD has a body")
	}
}

// TestManifestCacheHitMiss: the first GET by digest reads the bundled
// registry, everything after it (GET and HEAD by digest, GET by tag) is
// answered from memory with the registry's headers; and the other way
// round, a pinned tag's GET fills the cache for the digest.
func TestManifestCacheHitMiss(t *testing.T) {
	t.Run("digest first", func(t *testing.T) {
		c := newCacheRig(t, Options{})
		w := do(c.h, "GET", nginxByDigest(), "Accept", containerdAccept)
		wantManifest(t, w, "GET", nginxPin)
		if c.asked("GET", nginxRegistryPath()) != 1 || c.hits() != 0 || c.misses() != 1 {
			t.Fatalf("first GET: registry asked %d, hits %v misses %v", c.asked("GET", nginxRegistryPath()), c.hits(), c.misses())
		}
		for _, m := range []string{"GET", "HEAD", "GET"} {
			w := do(c.h, m, nginxByDigest(), "Accept", containerdAccept)
			wantManifest(t, w, m, nginxPin)
			if got := w.Header().Get("Etag"); got != `"`+nginxPin.digest().String()+`"` {
				t.Errorf("%s from cache: Etag = %q", m, got)
			}
		}
		w = do(c.h, "GET", "/v2/library/nginx/manifests/1.27?ns=docker.io", "Accept", containerdAccept)
		wantManifest(t, w, "GET", nginxPin)
		if n := len(c.reg.seen()); n != 1 {
			t.Errorf("registry asked %d times in all, want 1: %+v", n, c.reg.seen())
		}
		if c.hits() != 4 || c.misses() != 1 {
			t.Errorf("hits %v misses %v, want 4 and 1", c.hits(), c.misses())
		}
		if got, want := testutil.ToFloat64(c.m.cacheBytes), float64(len(nginxPin.body)); got != want {
			t.Errorf("cache bytes gauge = %v, want %v", got, want)
		}
		// Bytes sent: three GET bodies from the cache plus the first.
		if got, want := testutil.ToFloat64(c.m.bytes), float64(4*len(nginxPin.body)); got != want {
			t.Errorf("bytes_total = %v, want %v", got, want)
		}
	})
	t.Run("tag first", func(t *testing.T) {
		c := newCacheRig(t, Options{})
		for range 3 {
			wantManifest(t, do(c.h, "GET", "/v2/library/nginx/manifests/1.27?ns=docker.io"), "GET", nginxPin)
		}
		wantManifest(t, do(c.h, "GET", nginxByDigest()), "GET", nginxPin)
		wantManifest(t, do(c.h, "HEAD", nginxByDigest()), "HEAD", nginxPin)
		if n := len(c.reg.seen()); n != 1 {
			t.Errorf("registry asked %d times, want 1: %+v", n, c.reg.seen())
		}
		if c.hits() != 4 || c.misses() != 1 {
			t.Errorf("hits %v misses %v, want 4 and 1", c.hits(), c.misses())
		}
	})
	t.Run("HEAD miss does not fill", func(t *testing.T) {
		c := newCacheRig(t, Options{})
		wantManifest(t, do(c.h, "HEAD", nginxByDigest()), "HEAD", nginxPin)
		wantManifest(t, do(c.h, "HEAD", nginxByDigest()), "HEAD", nginxPin)
		if c.asked("HEAD", nginxRegistryPath()) != 2 || c.h.cache.entryCount() != 0 {
			t.Errorf("HEADs asked the registry %d times, cache holds %d", c.asked("HEAD", nginxRegistryPath()), c.h.cache.entryCount())
		}
	})
	t.Run("not in the bundled registry: 404, nothing cached", func(t *testing.T) {
		c := newCacheRig(t, Options{})
		target := "/v2/library/redis/manifests/" + redisPin.digest().String() + "?ns=docker.io"
		for range 2 {
			if w := do(c.h, "GET", target); w.Code != 404 || errorCode(w.Body.Bytes()) != "MANIFEST_UNKNOWN" {
				t.Fatalf("status %d %s", w.Code, w.Body)
			}
		}
		if len(c.reg.seen()) != 2 || c.misses() != 2 || c.h.cache.entryCount() != 0 {
			t.Errorf("registry asked %d, misses %v, entries %d", len(c.reg.seen()), c.misses(), c.h.cache.entryCount())
		}
	})
	t.Run("Range bypasses the cache", func(t *testing.T) {
		c := newCacheRig(t, Options{})
		do(c.h, "GET", nginxByDigest())
		w := do(c.h, "GET", nginxByDigest(), "Range", "bytes=0-9")
		if w.Code != http.StatusPartialContent || !bytes.Equal(w.Body.Bytes(), nginxPin.body[:10]) {
			t.Fatalf("ranged GET: %d %q", w.Code, w.Body)
		}
		if c.asked("GET", nginxRegistryPath()) != 2 || c.hits()+c.misses() != 1 {
			t.Errorf("registry asked %d, lookups %v", c.asked("GET", nginxRegistryPath()), c.hits()+c.misses())
		}
	})
}

// TestManifestCacheDisabled: a negative bound turns the cache off.
func TestManifestCacheDisabled(t *testing.T) {
	c := newCacheRig(t, Options{ManifestCacheBytes: -1})
	if c.h.cache != nil {
		t.Fatal("cache not disabled")
	}
	for range 3 {
		wantManifest(t, do(c.h, "GET", nginxByDigest()), "GET", nginxPin)
		wantManifest(t, do(c.h, "GET", "/v2/library/nginx/manifests/1.27?ns=docker.io"), "GET", nginxPin)
	}
	if n := len(c.reg.seen()); n != 6 || c.hits() != 0 || c.misses() != 0 {
		t.Errorf("registry asked %d times (want 6), hits %v misses %v", n, c.hits(), c.misses())
	}
	if h, err := New(Options{Table: pins.NewTable()}); err != nil || h.cache == nil || h.cache.max != DefaultManifestCacheBytes {
		t.Errorf("zero ManifestCacheBytes: cache %+v, want the default bound", h.cache)
	}
}

// cachePin is a distinct OCI manifest of about size bytes.
func cachePin(i, size int) testPin {
	body := fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","n":%d,"pad":"`, i)
	body = append(body, bytes.Repeat([]byte("x"), max(size-len(body)-2, 0))...)
	body = append(body, `"}`...)
	return testPin{image: fmt.Sprintf("docker.io/library/img%d:v1", i), mediaType: ocispec.MediaTypeImageManifest, body: body}
}

// TestManifestCacheEviction: the cache holds at most its bound in manifest
// bytes, drops the least recently used first, and does not keep a manifest
// larger than an eighth of the bound.
func TestManifestCacheEviction(t *testing.T) {
	const size = 200
	m := NewMetrics(nil)
	if c := newManifestCache(4*size, m); c.maxEntry != size/2 {
		t.Fatalf("maxEntry = %d, want an eighth of the bound", c.maxEntry)
	}
	c := newManifestCache(8*size, m) // 8 manifests of 200 bytes, each at the per-entry limit
	ps := make([]testPin, 12)
	key := func(p testPin) cacheKey { return cacheKey{"docker.io", "library/x", p.digest().String()} }
	for i := range ps {
		ps[i] = cachePin(i, size)
		if len(ps[i].body) != size {
			t.Fatalf("fixture is %d bytes", len(ps[i].body))
		}
	}
	for i := range 8 {
		if c.add(key(ps[i]), ps[i].body, ps[i].mediaType, true) == nil {
			t.Fatalf("add %d refused", i)
		}
	}
	if c.entryCount() != 8 || c.sizeBytes() != 8*size {
		t.Fatalf("%d entries, %d bytes", c.entryCount(), c.sizeBytes())
	}
	// Touch 0 and 1: 2 is now the least recently used.
	c.get(key(ps[0]))
	c.get(key(ps[1]))
	for i := 8; i < 11; i++ {
		c.add(key(ps[i]), ps[i].body, ps[i].mediaType, true)
		if c.sizeBytes() > c.max {
			t.Fatalf("size %d over the bound %d", c.sizeBytes(), c.max)
		}
	}
	for i, want := range map[int]bool{0: true, 1: true, 2: false, 3: false, 4: false, 5: true, 10: true} {
		if got := c.get(key(ps[i])) != nil; got != want {
			t.Errorf("manifest %d cached = %v, want %v", i, got, want)
		}
	}
	if got := testutil.ToFloat64(m.cacheBytes); got != float64(c.sizeBytes()) {
		t.Errorf("gauge %v, cache holds %d", got, c.sizeBytes())
	}
	// Re-adding a cached digest replaces it without double counting.
	c.add(key(ps[10]), ps[10].body, ps[10].mediaType, false)
	if c.sizeBytes() != 8*size || !c.get(key(ps[10])).byDigest {
		t.Errorf("re-add: size %d; byDigest must stay true", c.sizeBytes())
	}

	// One byte over an eighth of the bound: served, never kept.
	big := cachePin(99, size+1)
	if c.add(key(big), big.body, big.mediaType, true) != nil {
		t.Error("kept a manifest larger than an eighth of the bound")
	}

	// Through the handler: a bound too small for nginx's index still serves
	// it, from the registry every time.
	rig := newCacheRig(t, Options{ManifestCacheBytes: int64(len(nginxPin.body))})
	for range 2 {
		wantManifest(t, do(rig.h, "GET", nginxByDigest()), "GET", nginxPin)
	}
	if rig.asked("GET", nginxRegistryPath()) != 2 || rig.h.cache.entryCount() != 0 {
		t.Errorf("registry asked %d, entries %d", rig.asked("GET", nginxRegistryPath()), rig.h.cache.entryCount())
	}
}

// TestManifestCacheNeverUnverified: bytes that do not hash to their digest
// are never cached and never sent, from the registry or the upstream.
func TestManifestCacheNeverUnverified(t *testing.T) {
	c := newCacheRig(t, Options{Upstream: newUpstream()})
	// The fake bundled registry holds redis's bytes under broken's digest.
	byDigest := "/v2/o/broken/manifests/" + brokenPin.digest().String() + "?ns=quay.io"
	for range 2 {
		w := do(c.h, "GET", byDigest, "Accept", containerdAccept)
		if w.Code != 404 || bytes.Contains(w.Body.Bytes(), redisPin.body) {
			t.Fatalf("wrong bytes by digest: status %d body %q; want a 404 without them", w.Code, w.Body)
		}
		if w := do(c.h, "GET", "/v2/o/broken/manifests/v1?ns=quay.io", "Accept", containerdAccept); w.Code != 503 {
			t.Fatalf("wrong bytes by tag: status %d", w.Code)
		}
	}
	if n := c.h.cache.entryCount(); n != 0 {
		t.Errorf("cache holds %d entries", n)
	}
	if n := len(c.reg.seen()); n != 4 {
		t.Errorf("registry asked %d times, want every time (4)", n)
	}

	// The upstream answering wrong bytes: 503, not cached.
	up := &fakeUpstream{manifests: map[digestKey]content{
		digestKey(redisPin.digest()): {body: append(bytes.Clone(redisPin.body), ' '), mediaType: redisPin.mediaType},
	}}
	c = newCacheRig(t, Options{Upstream: up})
	if w := do(c.h, "GET", "/v2/library/redis/manifests/7?ns=docker.io"); w.Code != 503 || c.h.cache.entryCount() != 0 {
		t.Errorf("upstream's wrong bytes: status %d, entries %d", w.Code, c.h.cache.entryCount())
	}

	// And the cache itself refuses them, whatever a caller does.
	mc := newManifestCache(0, NewMetrics(nil))
	k := cacheKey{"docker.io", "library/nginx", nginxPin.digest().String()}
	if mc.add(k, redisPin.body, mediaTypeDockerManifest, true) != nil || mc.entryCount() != 0 {
		t.Error("cache accepted bytes of another digest")
	}
	if mc.add(cacheKey{"docker.io", "library/nginx", "md5:" + strings.Repeat("0", 32)}, nginxPin.body, "", true) != nil {
		t.Error("cache accepted a digest of an unknown algorithm")
	}
	if mc.add(k, nginxPin.body, nginxPin.mediaType, true) == nil {
		t.Error("cache refused the right bytes")
	}
}

// TestManifestCacheAccept: a cached manifest answers by digest and for its
// pinned tag whatever the request's Accept, with its own media type as
// Content-Type: the digest names exactly one manifest.
func TestManifestCacheAccept(t *testing.T) {
	c := newCacheRig(t, Options{})
	wantManifest(t, do(c.h, "GET", nginxByDigest(), "Accept", ocispec.MediaTypeImageIndex), "GET", nginxPin)
	for _, tc := range []struct {
		name   string
		accept []string
	}{
		{"containerd's", []string{containerdAccept}},
		{"none", nil},
		{"exact", []string{ocispec.MediaTypeImageIndex}},
		{"*/* only", []string{"*/*"}},
		{"text/html", []string{"text/html"}},
		{"Docker types only", []string{mediaTypeDockerManifest + ", " + mediaTypeDockerManifestList}},
		{"another OCI type", []string{ocispec.MediaTypeImageManifest}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, hits := len(c.reg.seen()), c.hits()
			var hdr []string
			for _, a := range tc.accept {
				hdr = append(hdr, "Accept", a)
			}
			for _, target := range []string{nginxByDigest(), "/v2/library/nginx/manifests/1.27?ns=docker.io"} {
				wantManifest(t, do(c.h, "GET", target, hdr...), "GET", nginxPin)
				wantManifest(t, do(c.h, "HEAD", target, hdr...), "HEAD", nginxPin)
			}
			if asked := len(c.reg.seen()) - before; asked != 0 || c.hits() != hits+3 {
				t.Errorf("registry asked %d times, hits +%v; want 0 and +3 (HEAD by tag is the pin's)", asked, c.hits()-hits)
			}
		})
	}
	// A miss is filled whatever the Accept: the mirror asks with every type.
	c = newCacheRig(t, Options{})
	wantManifest(t, do(c.h, "GET", nginxByDigest(), "Accept", "*/*"), "GET", nginxPin)
	wantManifest(t, do(c.h, "GET", nginxByDigest(), "Accept", "text/html"), "GET", nginxPin)
	if len(c.reg.seen()) != 1 {
		t.Errorf("registry asked %d times, want 1", len(c.reg.seen()))
	}
}

// TestManifestCacheScope: an entry answers by digest only in the repository
// it was read from, and only when it came from the bundled registry (or a
// strict registry's upstream), so no answer differs from the cacheless one.
func TestManifestCacheScope(t *testing.T) {
	c := newCacheRig(t, Options{Upstream: newUpstream()})
	// redis is not in the bundled registry: its pinned tag's GET comes from
	// the upstream and is cached for the tag only.
	for range 2 {
		wantManifest(t, do(c.h, "GET", "/v2/library/redis/manifests/7?ns=docker.io"), "GET", redisPin)
	}
	if up := c.h.upstream.(*fakeUpstream).seen(); len(up) != 1 {
		t.Errorf("upstream asked %d times, want 1 (then the cache)", len(up))
	}
	redisByDigest := "/v2/library/redis/manifests/" + redisPin.digest().String() + "?ns=docker.io"
	if w := do(c.h, "GET", redisByDigest); w.Code != 404 {
		t.Errorf("upstream bytes answered by digest: %d; without a cache it is a 404 (containerd goes upstream)", w.Code)
	}
	// nginx's digest cached for library/nginx is not answered for another
	// pinned repository: the bundled registry decides there.
	wantManifest(t, do(c.h, "GET", nginxByDigest()), "GET", nginxPin)
	before := len(c.reg.seen())
	if w := do(c.h, "GET", "/v2/library/redis/manifests/"+nginxPin.digest().String()+"?ns=docker.io"); w.Code != 404 || len(c.reg.seen()) != before+1 {
		t.Errorf("nginx's digest in library/redis: %d, registry asked %d; want the registry's 404", w.Code, len(c.reg.seen())-before)
	}
	// Once the bundled registry has it, by digest is served and cached.
	c.reg.put("/v2/docker.io/library/redis/manifests/"+redisPin.digest().String(), content{body: redisPin.body, mediaType: redisPin.mediaType})
	for range 2 {
		wantManifest(t, do(c.h, "GET", redisByDigest), "GET", redisPin)
	}
	if n := c.asked("GET", "/v2/docker.io/library/redis/manifests/"+redisPin.digest().String()); n != 3 {
		t.Errorf("registry asked %d times for redis by digest, want 3 (404, fill, then cache)", n)
	}

	// A strict registry: the mirror streams by digest from the upstream
	// anyway, so the pinned tag's upstream bytes answer by digest too.
	fc := &fakeContent{}
	s := newCacheRig(t, Options{Upstream: newUpstream(), Content: fc, Strict: func(reg string) bool { return reg == "docker.io" }})
	wantManifest(t, do(s.h, "GET", "/v2/library/redis/manifests/7?ns=docker.io"), "GET", redisPin)
	wantManifest(t, do(s.h, "GET", redisByDigest), "GET", redisPin)
	if len(fc.calls) != 0 {
		t.Errorf("strict: upstream content opened %v; want the cache", fc.calls)
	}
}

// TestManifestCacheConcurrent hammers one handler with GETs by tag, GETs
// and HEADs by digest of several manifests and with a cache too small for
// all of them (run with -race). Every answer must be right, and concurrent
// misses of one manifest must cost one registry GET.
func TestManifestCacheConcurrent(t *testing.T) {
	const n = 24
	ps := make([]testPin, n)
	reg := &fakeRegistry{}
	for i := range ps {
		ps[i] = cachePin(i, 300)
		ref, _ := pins.ParseReference(ps[i].image)
		reg.put("/v2/"+ref.CacheRepository()+"/manifests/"+ps[i].digest().String(), content{body: ps[i].body, mediaType: ps[i].mediaType})
	}
	var gets atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			gets.Add(1)
		}
		reg.ServeHTTP(w, r)
	}))
	defer srv.Close()

	run := func(t *testing.T, bound int64, workers, rounds int) {
		m := NewMetrics(nil)
		h, err := New(Options{Table: newTable(t, ps...), RegistryURL: srv.URL, ManifestCacheBytes: bound, Metrics: m})
		if err != nil {
			t.Fatal(err)
		}
		gets.Store(0)
		var wg sync.WaitGroup
		errs := make(chan string, workers)
		for g := range workers {
			wg.Go(func() {
				for i := range rounds {
					p := ps[(g+i)%n]
					name := strings.TrimPrefix(strings.TrimSuffix(p.image, ":v1"), "docker.io/")
					var method, target string
					switch i % 3 {
					case 0:
						method, target = "GET", "/v2/"+name+"/manifests/v1?ns=docker.io"
					case 1:
						method, target = "GET", "/v2/"+name+"/manifests/"+p.digest().String()+"?ns=docker.io"
					default:
						method, target = "HEAD", "/v2/"+name+"/manifests/"+p.digest().String()+"?ns=docker.io"
					}
					w := do(h, method, target, "Accept", containerdAccept)
					if w.Code != 200 || w.Header().Get("Docker-Content-Digest") != p.digest().String() ||
						(method == "GET" && !bytes.Equal(w.Body.Bytes(), p.body)) {
						errs <- fmt.Sprintf("%s %s: %d %q", method, target, w.Code, w.Body)
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Error(e)
		}
		hits, misses := testutil.ToFloat64(m.cacheHits), testutil.ToFloat64(m.cacheMisses)
		if hits+misses != float64(workers*rounds) {
			t.Errorf("hits %v + misses %v != %d requests", hits, misses, workers*rounds)
		}
		if got := testutil.ToFloat64(m.cacheBytes); got != float64(h.cache.sizeBytes()) || h.cache.sizeBytes() > h.cache.max {
			t.Errorf("gauge %v, size %d, bound %d", got, h.cache.sizeBytes(), h.cache.max)
		}
		t.Logf("bound %d: %v hits, %v misses, %d registry GETs, %d entries", bound, hits, misses, gets.Load(), h.cache.entryCount())
		if bound == 0 && gets.Load() != n {
			t.Errorf("registry GETs = %d, want one per manifest (%d): concurrent misses must be collapsed", gets.Load(), n)
		}
	}
	t.Run("everything fits", func(t *testing.T) { run(t, 0, 16, 300) })
	// 8 x 300 bytes: a third of the manifests; constant eviction.
	t.Run("eviction", func(t *testing.T) { run(t, 8*300, 16, 300) })
}

// TestManifestCacheMetricsRegistered: the cache's metrics are registered and
// valid for a pedantic registry.
func TestManifestCacheMetricsRegistered(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	NewMetrics(reg)
	assertRegistered(t, reg, "tagger_mirror_manifest_cache_hits_total", "tagger_mirror_manifest_cache_misses_total", "tagger_mirror_manifest_cache_bytes")
}
