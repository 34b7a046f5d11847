package mirror

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/pkg/httplimits"
	"github.com/tagger-project/tagger/pkg/pins"
	"github.com/tagger-project/tagger/pkg/registryclient"
)

// stalledPeer accepts connections and never answers, optionally after
// sending response headers: the upstream that hung the mirror. It returns
// its host:port; every connection is closed when the test ends.
func stalledPeer(t *testing.T, headers string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			if headers != "" {
				go func() {
					// Read the request line first, as a server would.
					buf := make([]byte, 4096)
					_, _ = c.Read(buf)
					_, _ = io.WriteString(c, headers)
				}()
			}
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return ln.Addr().String()
}

// upstreamClient is the node agent's upstream client with a short response
// header timeout, every registry over plain HTTP.
func upstreamClient(header time.Duration) *registryclient.Client {
	lim := httplimits.Upstream
	lim.ResponseHeader = header
	return registryclient.New(registryclient.Options{HTTPClient: lim.HTTPClient(), PlainHTTP: func(string) bool { return true }})
}

// serveMirror serves h on a loopback port with the node agent's server
// limits and returns its base URL.
func serveMirror(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httplimits.Mirror.New(h)
	go func() { _ = srv.Serve(httplimits.Mirror.Listener(ln)) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

func get(t *testing.T, method, url string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	resp, body, err := getBody(t, method, url, hdr...)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return resp, body
}

// getBody sends one request; err is the error reading the body.
func getBody(t *testing.T, method, url string, hdr ...string) (*http.Response, []byte, error) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

// TestOCIManifestWhateverAccept is defect 1 on the real registry: a pinned
// OCI image manifest is answered from the bundled registry by tag and by
// digest whatever the Accept ("*/*", text/html, Docker types only, none),
// with its own media type, and never from the upstream, which here stalls:
// one request there would take the header timeout and end in a 503.
func TestOCIManifestWhateverAccept(t *testing.T) {
	reg := rig.NewRegistry(t, rig.RegistryOptions{})
	upstream := stalledPeer(t, "")
	ref := upstream + "/team/app"
	pinRef, err := pins.ParseReference(ref + ":v1")
	if err != nil {
		t.Fatal(err)
	}
	img := reg.PushImage(t, pinRef.CacheRepository(), "", rig.ImageOptions{})
	if img.MediaType != ocispec.MediaTypeImageManifest {
		t.Fatalf("rig pushed %s, want an OCI manifest", img.MediaType)
	}
	pin := testPin{image: ref + ":v1", body: img.Manifest, mediaType: img.MediaType}
	const headerTimeout = 2 * time.Second
	for _, cache := range []int64{-1, 0} {
		h, err := New(Options{Table: newTable(t, pin), RegistryURL: reg.URL(), Upstream: upstreamClient(headerTimeout).Anonymous(),
			ManifestCacheBytes: cache})
		if err != nil {
			t.Fatal(err)
		}
		base := serveMirror(t, h)
		_, repo, _ := strings.Cut(ref, "/")
		ns := "?ns=" + upstream
		for _, accept := range []string{"", "*/*", "text/html", mediaTypeDockerManifest + ", " + mediaTypeDockerManifestList} {
			for _, target := range []string{"/v2/" + repo + "/manifests/v1" + ns, "/v2/" + repo + "/manifests/" + img.Digest.String() + ns} {
				for _, method := range []string{http.MethodGet, http.MethodHead} {
					start := time.Now()
					var hdr []string
					if accept != "" {
						hdr = []string{"Accept", accept}
					}
					resp, body := get(t, method, base+target, hdr...)
					if resp.StatusCode != 200 || time.Since(start) >= headerTimeout {
						t.Fatalf("cache %d, Accept %q, %s %s: %d after %v, want 200 from the bundled registry", cache, accept, method, target, resp.StatusCode, time.Since(start))
					}
					if ct := resp.Header.Get("Content-Type"); ct != img.MediaType {
						t.Errorf("Accept %q, %s %s: Content-Type %q, want the manifest's %q", accept, method, target, ct, img.MediaType)
					}
					if d := resp.Header.Get("Docker-Content-Digest"); d != img.Digest.String() {
						t.Errorf("Docker-Content-Digest %q", d)
					}
					if method == http.MethodGet && !bytes.Equal(body, img.Manifest) {
						t.Errorf("Accept %q, GET %s: wrong body", accept, target)
					}
				}
			}
		}
	}
}

// TestStalledUpstreamBounded: a pinned tag whose manifest only the upstream
// has, and an upstream that accepts and never answers (or sends headers,
// then nothing): the GET ends in 503 within the bound, it does not hang.
// The same for a strict registry's blob streamed from the upstream: 404, or
// when the upstream sent its headers, a 200 whose body is cut off.
func TestStalledUpstreamBounded(t *testing.T) {
	for _, tc := range []struct {
		name    string
		headers string
	}{
		{"no answer", ""},
		{"headers then nothing", "HTTP/1.1 200 OK\r\nContent-Type: " + ocispec.MediaTypeImageManifest + "\r\nContent-Length: 1000\r\n\r\n{"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			upstream := stalledPeer(t, tc.headers)
			pin := testPin{image: upstream + "/team/app:v1", body: appPin.body, mediaType: appPin.mediaType}
			up := upstreamClient(500 * time.Millisecond).Anonymous()
			h, err := New(Options{Table: newTable(t, pin), Upstream: up, Content: up, Strict: func(string) bool { return true },
				UpstreamTimeout: time.Second, StreamProgress: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			base := serveMirror(t, h)
			ns := "?ns=" + upstream
			blobStatus := http.StatusNotFound
			if tc.headers != "" {
				blobStatus = http.StatusOK
			}
			for _, c := range []struct {
				target string
				status int
				cut    bool
			}{
				{"/v2/team/app/manifests/v1" + ns, http.StatusServiceUnavailable, false},
				{"/v2/team/app/blobs/" + blobDigest().String() + ns, blobStatus, tc.headers != ""},
			} {
				start := time.Now()
				resp, _, err := getBody(t, http.MethodGet, base+c.target)
				if took := time.Since(start); resp.StatusCode != c.status || took > 3*time.Second {
					t.Errorf("GET %s: %d after %v, want %d within the bound", c.target, resp.StatusCode, took, c.status)
				}
				if c.cut != (err != nil) {
					t.Errorf("GET %s: body error %v, want one: %v", c.target, err, c.cut)
				}
			}
		})
	}
}

// TestRangeAnswers is defect 3 on the real registry: a range starting at
// the blob's size is 416 with "bytes */<size>" and no warning; "bytes=-0"
// is the whole blob with 200, never a 206 with an inverted Content-Range.
func TestRangeAnswers(t *testing.T) {
	reg := rig.NewRegistry(t, rig.RegistryOptions{})
	pinRef, err := pins.ParseReference("docker.io/library/nginx:1.27")
	if err != nil {
		t.Fatal(err)
	}
	desc := reg.PushBlob(t, pinRef.CacheRepository(), "application/octet-stream", blob)
	log, hook := logtest.NewNullLogger()
	log.SetLevel(logrus.InfoLevel)
	h, err := New(Options{Table: newTable(t, nginxPin), RegistryURL: reg.URL(), Log: log})
	if err != nil {
		t.Fatal(err)
	}
	base := serveMirror(t, h)
	url := base + "/v2/library/nginx/blobs/" + desc.Digest.String() + "?ns=docker.io"
	size := strconv.Itoa(len(blob))
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		for _, rg := range []string{"bytes=" + size + "-", "bytes=" + strconv.Itoa(len(blob)+10) + "-"} {
			resp, body := get(t, method, url, "Range", rg)
			if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable || resp.Header.Get("Content-Range") != "bytes */"+size {
				t.Errorf("%s Range %s: %d, Content-Range %q; want 416, bytes */%s", method, rg, resp.StatusCode, resp.Header.Get("Content-Range"), size)
			}
			if method == http.MethodGet && errorCode(body) != "SIZE_INVALID" {
				t.Errorf("416 body %q, want OCI JSON", body)
			}
		}
		resp, body := get(t, method, url, "Range", "bytes=-0")
		if resp.StatusCode != 200 || resp.Header.Get("Content-Range") != "" || resp.ContentLength != int64(len(blob)) {
			t.Errorf("%s bytes=-0: %d, Content-Range %q, length %d; want 200 with the whole blob", method, resp.StatusCode, resp.Header.Get("Content-Range"), resp.ContentLength)
		}
		if method == http.MethodGet && !bytes.Equal(body, blob) {
			t.Error("bytes=-0: wrong body")
		}
		// A satisfiable range still works.
		resp, body = get(t, method, url, "Range", "bytes=10-19")
		if resp.StatusCode != 206 || resp.Header.Get("Content-Range") != "bytes 10-19/"+size || (method == http.MethodGet && !bytes.Equal(body, blob[10:20])) {
			t.Errorf("%s bytes=10-19: %d %q", method, resp.StatusCode, resp.Header.Get("Content-Range"))
		}
	}
	for _, e := range hook.AllEntries() {
		if e.Level <= logrus.WarnLevel {
			t.Errorf("logged %s: %s %v", e.Level, e.Message, e.Data)
		}
	}
}

// TestStreamOutlastsReadTimeout: a blob that takes longer to stream than
// the server's read timeout (which bounds reading the request) arrives
// whole: net/http's background read hitting that deadline must not cancel
// the stream.
func TestStreamOutlastsReadTimeout(t *testing.T) {
	const chunks = 10
	body := bytes.Repeat([]byte("x"), chunks*1024)
	slow := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusOK)
		for i := range chunks {
			_, _ = w.Write(body[i*1024 : (i+1)*1024])
			w.(http.Flusher).Flush()
			time.Sleep(100 * time.Millisecond)
		}
	})
	reg := httptest.NewServer(slow)
	defer reg.Close()
	h, err := New(Options{Table: newTable(t, nginxPin), RegistryURL: reg.URL, StreamProgress: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lim := httplimits.Mirror
	lim.ReadHeader, lim.Read = 200*time.Millisecond, 300*time.Millisecond
	srv := lim.New(h)
	go func() { _ = srv.Serve(lim.Listener(ln)) }()
	defer func() { _ = srv.Close() }()
	resp, got, err := getBody(t, http.MethodGet, "http://"+ln.Addr().String()+"/v2/library/nginx/blobs/"+digestOf(body)+"?ns=docker.io")
	if err != nil || resp.StatusCode != 200 || !bytes.Equal(got, body) {
		t.Fatalf("status %d, %d of %d bytes, err %v", resp.StatusCode, len(got), len(body), err)
	}
}

// TestClientThatStopsReading: a client that asks for a large blob and
// stops reading is dropped after StreamProgress; it does not hold the
// handler, its buffer and the registry connection for ever.
func TestClientThatStopsReading(t *testing.T) {
	const size = 256 << 20 // far beyond socket buffers
	reg := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(size))
		w.WriteHeader(http.StatusOK)
		_, _ = io.Copy(w, io.LimitReader(zeros{}, size))
	}))
	defer reg.Close()
	h, err := New(Options{Table: newTable(t, nginxPin), RegistryURL: reg.URL, StreamProgress: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	base := serveMirror(t, h)
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	target := "/v2/library/nginx/blobs/sha256:" + strings.Repeat("0", 64) + "?ns=docker.io"
	if _, err := io.WriteString(c, "GET "+target+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// Not reading, for well over the bound: the server's writes block.
	time.Sleep(2 * time.Second)
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	n, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server kept the connection open (%d bytes read)", n)
	}
	if n >= size {
		t.Fatalf("read %d bytes: the whole blob, the server never gave up", n)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
