package process

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/pkg/pins"
)

// TestKillMidCopy: the controller process is SIGKILLed while it copies a
// large image into the bundled registry; a new process completes the copy,
// and no blob is uploaded twice: the blobs the first process completed are
// found by HEAD, not sent again.
func TestKillMidCopy(t *testing.T) {
	rig.RequireBins(t, "registry")
	start := time.Now()
	ctx := context.Background()
	kc := rig.NewKube(t)
	c := kc.Client
	tmp := t.TempDir()
	kubeconfig := filepath.Join(tmp, "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	bin := rig.Command(t, rig.Race, "controller")

	up := rig.NewRegistry(t, rig.RegistryOptions{})
	bundled := rig.NewRegistry(t, rig.RegistryOptions{})
	proxy := rig.NewCountingProxy(t, bundled.URL())

	// A large image: 10 layers of 8-16 MiB of random bytes (gzip without
	// compression: random bytes do not compress, and it is quick to build).
	sizes := make([]int, 10)
	for i := range sizes {
		sizes[i] = 8<<20 + rand.IntN(8<<20)
	}
	img := up.PushImage(t, "big/app", "v1", rig.ImageOptions{LayerSizes: sizes, StoredLayers: true})
	var total int64
	for _, l := range img.Layers {
		total += l.Size
	}
	blobs := append([]digest.Digest{img.Config.Digest}, layerDigests(img)...)
	t.Logf("image %s: %d blobs, %d MiB; set up in %v", img.Digest, len(blobs), total>>20, time.Since(start).Round(time.Millisecond))

	image := up.Host() + "/big/app:v1"
	ref, err := pins.ParseReference(image)
	if err != nil {
		t.Fatal(err)
	}
	cacheRepo := ref.CacheRepository()
	if err := c.Create(ctx, &v1alpha1.Tag{ObjectMeta: metav1.ObjectMeta{Name: "big"}, Spec: v1alpha1.TagSpec{Image: image, Cache: true}}); err != nil {
		t.Fatal(err)
	}

	args := []string{
		"--kubeconfig", kubeconfig,
		// No listeners: nothing here needs them, and nothing can collide.
		"--metrics-addr", "0", "--health-addr", "0", "--webhook-addr", "0",
		"--log-format", "json", "--plain-http-registries", "127.0.0.1:*",
		"--registry-url", proxy.URL(), "--max-concurrent-copies", "4",
		// Without --leader-elect: a SIGKILLed leader keeps its Lease until it
		// expires (15 s), which would only delay the restart; the copy's
		// resumption is the same with it.
	}

	// 1. Uploads crawl (16 MiB/s for all of them together) so the kill
	// lands mid-copy: once at least 2 layers are complete, and not all.
	proxy.Throttle(16 << 20)
	first := startController(t, bin, args)
	layers := map[digest.Digest]bool{}
	for _, d := range layerDigests(img) {
		layers[d] = true
	}
	rig.WaitFor(t, time.Minute, "2 layers uploaded by the first controller", func() (bool, string) {
		n := 0
		for d := range proxy.Committed() {
			if layers[d] {
				n++
			}
		}
		return n >= 2, fmt.Sprintf("%d layers committed; %s", n, proxy)
	})
	first.kill(t)
	killedAt := time.Now()
	// The dead process's requests end (their bodies break off); only then
	// is every request after mark the second process's.
	rig.WaitFor(t, time.Minute, "the proxy to drain the killed controller's requests", func() (bool, string) {
		return proxy.InFlight() == 0, fmt.Sprintf("%d in flight", proxy.InFlight())
	})
	proxy.Throttle(0)
	mark := len(proxy.Requests())
	before := proxy.Committed()
	var interrupted []string
	for _, w := range proxy.BlobWrites() {
		if !w.Committed() {
			interrupted = append(interrupted, fmt.Sprintf("%s %s: %d", w.Method, w.Digest, w.Status))
		}
	}
	t.Logf("killed after %v: %d blobs committed, interrupted: %v", time.Since(start).Round(time.Millisecond), len(before), interrupted)

	// What the first process left: exactly the committed blobs, no manifest,
	// and a registry that still answers (upload sessions it abandoned and
	// all).
	if code := status(t, http.MethodGet, bundled.URL()+"/v2/", ""); code != http.StatusOK {
		t.Fatalf("bundled registry after the kill: GET /v2/ answered %d", code)
	}
	present := 0
	for _, d := range blobs {
		code := status(t, http.MethodHead, bundled.URL()+"/v2/"+cacheRepo+"/blobs/"+d.String(), "")
		if (code == http.StatusOK) != (before[d] > 0) {
			t.Fatalf("blob %s: HEAD %d after the kill, but the proxy saw %d commits of it", d, code, before[d])
		}
		if code == http.StatusOK {
			present++
		}
	}
	if present == len(blobs) {
		t.Fatalf("all %d blobs were uploaded before the kill: the copy was not interrupted (uploads too fast?)", len(blobs))
	}
	if code := status(t, http.MethodHead, bundled.URL()+"/v2/"+cacheRepo+"/manifests/"+img.Digest.String(), img.MediaType); code != http.StatusNotFound {
		t.Fatalf("manifest committed before its blobs were all there (HEAD %d)", code)
	}
	// The pin did not wait for the copy: generation 1 was recorded and
	// served (nodes fetch it from the upstream meanwhile), not cached.
	var tag v1alpha1.Tag
	if err := c.Get(ctx, client.ObjectKey{Name: "big"}, &tag); err != nil {
		t.Fatal(err)
	}
	if st := tag.Status; len(st.Generations) != 1 || st.Generations[0].Digest != img.Digest.String() || st.Generations[0].Cached ||
		st.ServedDigest != img.Digest.String() || st.CachedServed {
		t.Fatalf("status at the kill: generations %+v, served %q, cachedServed %v; want generation 1 recorded and served, not cached",
			st.Generations, st.ServedDigest, st.CachedServed)
	}

	// 2. A new process completes the copy.
	startController(t, bin, args)
	rig.WaitFor(t, time.Minute, "generation 1 cached by the second controller", func() (bool, string) {
		var got v1alpha1.Tag
		if err := c.Get(ctx, client.ObjectKey{Name: "big"}, &got); err != nil {
			return false, err.Error()
		}
		cd := meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionCached)
		ok := cd != nil && cd.Status == metav1.ConditionTrue && len(got.Status.Generations) == 1 &&
			got.Status.Generations[0].Cached && got.Status.Generations[0].Digest == img.Digest.String() &&
			got.Status.ServedDigest == img.Digest.String() && got.Status.CachedServed
		return ok, fmt.Sprintf("Cached %+v; generations %+v", cd, got.Status.Generations)
	})
	t.Logf("cached %v after the kill", time.Since(killedAt).Round(time.Millisecond))

	// 3. The whole tree is there, byte-identical.
	check := func(path, accept string, want digest.Digest) {
		t.Helper()
		_, body := bundled.Get(t, cacheRepo, "/v2/"+cacheRepo+"/"+path, accept)
		if got := digest.NewDigestFromEncoded(digest.SHA256, fmt.Sprintf("%x", sha256.Sum256(body))); got != want {
			t.Fatalf("bundled registry %s/%s holds %s, want %s", cacheRepo, path, got, want)
		}
	}
	check("manifests/"+img.Digest.String(), img.MediaType, img.Digest)
	for _, d := range blobs {
		check("blobs/"+d.String(), "", d)
	}

	// 4. No blob was committed twice across both processes. A blob whose
	// upload the kill interrupted was started again by the second process:
	// that is correct (the registry never committed it), and it is still
	// committed once only.
	all := proxy.Committed()
	for _, d := range blobs {
		if all[d] != 1 {
			t.Errorf("blob %s committed %d times (uploads and mounts), want once", d, all[d])
		}
	}
	// The blobs the first process completed were found by HEAD, not sent.
	after := proxy.Requests()[mark:]
	for d := range before {
		heads, puts := 0, 0
		for _, r := range after {
			if r == "HEAD /v2/"+cacheRepo+"/blobs/"+d.String() {
				heads++
			}
		}
		for _, w := range proxy.BlobWrites() {
			if w.Digest == d {
				puts++
			}
		}
		if heads == 0 || puts != 1 {
			t.Errorf("blob %s, complete before the kill: %d HEADs by the second controller, %d writes in all (want >= 1 and 1)", d, heads, puts)
		}
	}
	if t.Failed() {
		t.Logf("blob writes: %+v\nrequests after the restart:\n%s", proxy.BlobWrites(), strings.Join(after, "\n"))
	}
	if code := status(t, http.MethodGet, bundled.URL()+"/v2/", ""); code != http.StatusOK {
		t.Fatalf("bundled registry at the end: GET /v2/ answered %d", code)
	}
	t.Logf("total %v", time.Since(start).Round(time.Millisecond))
}

func layerDigests(img rig.Image) []digest.Digest {
	var out []digest.Digest
	for _, l := range img.Layers {
		out = append(out, l.Digest)
	}
	return out
}

// controllerProc is a controller process; it is killed when the test ends.
type controllerProc struct {
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan struct{} // closed once the process has exited
}

func startController(t *testing.T, bin string, args []string) *controllerProc {
	t.Helper()
	p := &controllerProc{cmd: exec.Command(bin, args...), logs: &syncBuffer{}, done: make(chan struct{})}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start controller: %v", err)
	}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.logs.add(sc.Text())
		}
		_ = p.cmd.Wait()
	}()
	t.Cleanup(func() {
		p.kill(t)
		if t.Failed() {
			t.Logf("controller (pid %d) logs:\n%s", p.cmd.Process.Pid, strings.Join(p.logs.all(), "\n"))
		}
	})
	return p
}

// kill sends SIGKILL (no chance to clean up) and waits for the exit.
func (p *controllerProc) kill(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Errorf("controller pid %d still running 30s after SIGKILL", p.cmd.Process.Pid)
	}
}

// status sends one request and returns the answer's status code.
func status(t *testing.T, method, u, accept string) int {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
