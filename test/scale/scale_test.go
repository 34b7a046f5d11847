// Package scale runs the Tag controller against a real kube-apiserver and
// etcd (envtest) and a real distribution registry with 1,000 Tags, and
// checks that upstream checks stay friendly at that size: one HEAD per Tag,
// one request in flight per repository, the per-registry rate respected,
// and the scheduled re-checks spread over the interval.
package scale

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/pkg/controller"
	"github.com/tagger-project/tagger/pkg/controller/check"
	"github.com/tagger-project/tagger/pkg/controller/ratelimit"
	"github.com/tagger-project/tagger/pkg/logging"
	"github.com/tagger-project/tagger/pkg/pins"
	"github.com/tagger-project/tagger/pkg/registryclient"
)

const (
	repos       = 50
	tagsPerRepo = 20
	tags        = repos * tagsPerRepo
	interval    = 15 * time.Minute
	// The scale test's registry rate: high enough to finish quickly, low
	// enough that the limiter, not the apiserver, sets the pace.
	registryQPS   = 200
	registryBurst = 20
	// rateWindow is the sliding window the rate bound is checked over.
	rateWindow = time.Second
	// rateLatency allows for the time between a token being granted and
	// the request reaching the proxy (a platform read's second request is
	// sent after the first one's answer), during which the bucket refills.
	rateLatency = 100 * time.Millisecond
)

func TestThousandTags(t *testing.T) {
	rig.RequireBins(t, "kube-apiserver", "etcd", "registry")
	start := time.Now()
	lap := func(what string) { t.Logf("%-32s %6.1fs", what, time.Since(start).Seconds()) }

	// Upstream: real registry <- counting proxy <- in-flight proxy <- controller.
	up := rig.NewRegistry(t, rig.RegistryOptions{})
	counting := rig.NewCountingProxy(t, up.URL())
	watch := newRepoWatch(t, counting.URL())
	digests := map[string]string{} // repository -> digest of its one image
	for i := range repos {
		repo := fmt.Sprintf("scale/app%02d", i)
		img := up.PushImage(t, repo, tagName(0), rig.ImageOptions{})
		for j := 1; j < tagsPerRepo; j++ {
			up.PushManifest(t, repo, tagName(j), img.MediaType, img.Manifest)
		}
		digests[repo] = img.Digest.String()
	}
	lap("pushed 50 images, 1000 tags")

	cfg := rig.NewKube(t).Config
	lap("apiserver ready")

	// The controller, assembled as controller.Run does, with the limiter
	// in front of the upstream client.
	log, err := logging.New(os.Stderr, "text", "warn")
	if err != nil {
		t.Fatal(err)
	}
	ctrl.SetLogger(logging.Logr(log))
	scheme, err := v1alpha1.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := ctrl.NewManager(cfg, manager.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		t.Fatalf("create manager: %v", err)
	}
	plain, err := pins.HostMatcher([]string{"127.0.0.1:*"})
	if err != nil {
		t.Fatal(err)
	}
	limitMetrics := prometheus.NewRegistry()
	limiter := ratelimit.New(registryclient.New(registryclient.Options{
		HTTPClient: &http.Client{Timeout: 10 * time.Second},
		PlainHTTP:  plain,
		UserAgent:  "tagger-controller",
	}), ratelimit.Options{RegistryQPS: registryQPS, Burst: registryBurst, Metrics: limitMetrics})
	r := &check.Reconciler{
		Client:       mgr.GetClient(),
		SecretReader: mgr.GetAPIReader(),
		Resolver:     limiter,
		Recorder:     mgr.GetEventRecorder("tagger-controller"),
		Log:          log.WithField("component", "tag-controller"),
	}
	ctx, cancel := context.WithCancel(context.Background())
	maxConcurrent := controller.DefaultOptions().MaxConcurrentChecks
	if err := r.SetupWithManager(ctx, mgr, maxConcurrent); err != nil {
		t.Fatalf("set up Tag controller: %v", err)
	}
	mgrDone := make(chan error, 1)
	go func() { mgrDone <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-mgrDone:
			if err != nil {
				t.Errorf("manager: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("manager did not stop within 30s")
		}
	})

	// 1,000 Tags in a shuffled order, so the workers often pick Tags of the
	// same repository at once and have to take turns.
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	createStart := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, tags)
	const creators = 8
	order := rand.New(rand.NewPCG(1, 2)).Perm(tags)
	for w := range creators {
		wg.Go(func() {
			for k := w; k < tags; k += creators {
				i := order[k]
				repo, tag := fmt.Sprintf("scale/app%02d", i%repos), tagName(i/repos)
				obj := &v1alpha1.Tag{
					ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("scale-%04d", i)},
					Spec: v1alpha1.TagSpec{
						Image:         watch.Host() + "/" + repo + ":" + tag,
						CheckInterval: &metav1.Duration{Duration: interval},
					},
				}
				if err := c.Create(ctx, obj); err != nil {
					errs <- fmt.Errorf("create Tag %s: %w", obj.Name, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	lap("created 1000 Tags")

	// Every Tag gets generation 1, at its repository's digest.
	var list v1alpha1.TagList
	deadline := time.Now().Add(90 * time.Second)
	for {
		if err := c.List(ctx, &list); err != nil {
			t.Fatalf("list Tags: %v", err)
		}
		done := 0
		for i := range list.Items {
			if list.Items[i].Status.LatestGeneration == 1 {
				done++
			}
		}
		if done == tags && len(list.Items) == tags {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 90s only %d of %d Tags have generation 1; upstream: %s", done, tags, counting)
		}
		time.Sleep(250 * time.Millisecond)
	}
	checksTook := time.Since(createStart)
	lap("all Tags at generation 1")
	for i := range list.Items {
		tag := &list.Items[i]
		ref, err := pins.ParseReference(tag.Spec.Image)
		if err != nil {
			t.Fatal(err)
		}
		want := digests[ref.Repository]
		gens := tag.Status.Generations
		if len(gens) != 1 || gens[0].Generation != 1 || gens[0].Digest != want ||
			!slices.Equal(gens[0].Platforms, []string{"linux/amd64"}) ||
			tag.Status.ServedGeneration != 1 || tag.Status.LastCheck == nil || tag.Status.LastCheck.Result != v1alpha1.CheckNewGeneration {
			t.Errorf("Tag %s: generations %+v served %d lastCheck %+v; want generation 1 = %s (linux/amd64) served",
				tag.Name, gens, tag.Status.ServedGeneration, tag.Status.LastCheck, want)
		}
	}

	// What the upstream saw: one HEAD per Tag, and for each Tag one read of
	// its new digest's platforms (the manifest and its config).
	perPath := map[string]int{}
	for _, req := range counting.Requests() {
		perPath[req]++
	}
	heads := counting.Count(http.MethodHead, rig.KindManifest)
	manifestGets := counting.Count(http.MethodGet, rig.KindManifest)
	blobGets := counting.Count(http.MethodGet, rig.KindBlob)
	t.Logf("upstream requests: %s (total %d)", counting, counting.Total())
	if heads != tags {
		t.Errorf("manifest HEADs = %d, want exactly %d (one per Tag)", heads, tags)
	}
	for i := range tags {
		p := fmt.Sprintf("HEAD /v2/scale/app%02d/manifests/%s", i%repos, tagName(i/repos))
		if n := perPath[p]; n != 1 {
			t.Errorf("%s sent %d times, want 1", p, n)
		}
	}
	for repo, d := range digests {
		// Each Tag reads its new digest once; the 20 Tags of a repository share it.
		p := "GET /v2/" + repo + "/manifests/" + d
		if n := perPath[p]; n != tagsPerRepo {
			t.Errorf("%s sent %d times, want %d (once per Tag)", p, n, tagsPerRepo)
		}
	}
	if manifestGets != tags {
		t.Errorf("manifest GETs = %d, want %d: only the platform reads of new digests, none by tag", manifestGets, tags)
	}
	if blobGets != tags {
		t.Errorf("blob GETs = %d, want %d (one config per platform read)", blobGets, tags)
	}
	if other := counting.Total() - heads - manifestGets - blobGets; other != 0 {
		t.Errorf("%d other upstream requests, want none: %s", other, counting)
	}

	// At most one request in flight per repository; many across them.
	st := watch.stats()
	worst := ""
	for repo, n := range st.maxPerRepo {
		if n > 1 {
			t.Errorf("repository %s had %d requests in flight at once, want at most 1", repo, n)
		}
		if worst == "" || n > st.maxPerRepo[worst] {
			worst = repo
		}
	}
	if len(st.maxPerRepo) != repos {
		t.Errorf("requests seen for %d repositories, want %d", len(st.maxPerRepo), repos)
	}
	t.Logf("in flight: max %d per repository (%s), max %d across repositories", st.maxPerRepo[worst], worst, st.maxTotal)
	if st.maxTotal < 2 {
		t.Errorf("at most %d request in flight across all repositories: repositories must not wait for each other", st.maxTotal)
	}

	// The registry's rate: no window holds more than the bucket allows.
	maxInWindow, at := maxWindow(st.arrivals, rateWindow)
	bound := int(registryQPS*(rateWindow+rateLatency).Seconds()) + registryBurst
	span := st.arrivals[len(st.arrivals)-1].Sub(st.arrivals[0])
	t.Logf("rate: %d requests in %.1fs (%.0f/s on average); busiest %v window: %d requests (starting %.1fs in); bound %d = %d/s x (%v + %v latency) + burst %d",
		len(st.arrivals), span.Seconds(), float64(len(st.arrivals)-1)/span.Seconds(), rateWindow, maxInWindow,
		at.Sub(st.arrivals[0]).Seconds(), bound, registryQPS, rateWindow, rateLatency, registryBurst)
	if maxInWindow > bound {
		t.Errorf("%d requests within %v, more than the %d the registry's rate allows", maxInWindow, rateWindow, bound)
	}
	// Lower bound too: the tokens the requests needed take this long to refill.
	if minSpan := time.Duration(float64(len(st.arrivals)-registryBurst) / registryQPS * float64(time.Second)); span < minSpan-rateLatency {
		t.Errorf("%d requests took %v; at %d/s with burst %d they need at least %v", len(st.arrivals), span, registryQPS, registryBurst, minSpan)
	}
	t.Logf("1000 first checks took %.1fs from the first create (%.0f Tags/s)", checksTook.Seconds(), tags/checksTook.Seconds())

	for name, want := range map[string]float64{"tagger_upstream_rate_limited_total": 0, "tagger_upstream_requests_waiting": 0} {
		if got := sumMetric(t, limitMetrics, name); got != want {
			t.Errorf("%s = %v after all checks, want %v", name, got, want)
		}
	}

	// The schedule: where each Tag's next check falls in [0.9, 1.1) x the
	// interval. The jitter function is unexported, so ask the reconciler
	// itself: reconciling a Tag that is not due checks nothing and returns
	// RequeueAfter = due - now; with a fixed clock, due is exact.
	cached := waitCached(t, ctx, mgr.GetClient())
	counting.Reset()
	now := time.Now()
	probe := &check.Reconciler{
		Client:       mgr.GetClient(),
		SecretReader: mgr.GetAPIReader(),
		Resolver:     limiter,
		Log:          log.WithField("component", "schedule-probe"),
		Now:          func() time.Time { return now },
	}
	const buckets = 10
	var hist [buckets]int
	for _, tag := range cached {
		res, err := probe.Reconcile(ctx, ctrl.Request{NamespacedName: types.NamespacedName{Name: tag.Name}})
		if err != nil {
			t.Fatalf("reconcile %s: %v", tag.Name, err)
		}
		due := now.Add(res.RequeueAfter)
		f := float64(due.Sub(tag.Status.LastCheck.Time.Time)) / float64(interval)
		b := int((f - 0.9) / 0.2 * buckets)
		if f < 0.9 || f >= 1.1 || b < 0 || b >= buckets {
			t.Errorf("Tag %s: next check at %.4f x the interval after the last, want [0.9, 1.1)", tag.Name, f)
			continue
		}
		hist[b]++
	}
	filled := 0
	for _, n := range hist {
		if n > 0 {
			filled++
		}
	}
	t.Logf("next checks over [0.9, 1.1) x %v in %d buckets: %v", interval, buckets, hist)
	if filled < 8 {
		t.Errorf("next checks fall in %d of %d buckets, want at least 8: %v", filled, buckets, hist)
	}
	if n := counting.Total(); n != 0 {
		t.Errorf("reconciling Tags that are not due sent %d upstream requests, want 0: %s", n, counting)
	}
	lap("done")
}

func tagName(j int) string { return fmt.Sprintf("t%02d", j) }

// waitCached waits until the manager's cache holds every Tag with its
// first check, so the probe reconciles see what the controller wrote.
func waitCached(t *testing.T, ctx context.Context, c client.Client) []v1alpha1.Tag {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var list v1alpha1.TagList
		if err := c.List(ctx, &list); err != nil {
			t.Fatalf("list cached Tags: %v", err)
		}
		n := 0
		for i := range list.Items {
			if list.Items[i].Status.LastCheck != nil {
				n++
			}
		}
		if n == tags {
			return list.Items
		}
		if time.Now().After(deadline) {
			t.Fatalf("cache holds %d of %d checked Tags after 30s", n, tags)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sumMetric sums a counter or gauge family's series in reg (0 when it has none).
func sumMetric(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// maxWindow returns the most arrivals within any window of length w, and
// where that window starts.
func maxWindow(arrivals []time.Time, w time.Duration) (int, time.Time) {
	best, at := 0, time.Time{}
	j := 0
	for i := range arrivals {
		for j < len(arrivals) && arrivals[j].Sub(arrivals[i]) < w {
			j++
		}
		if j-i > best {
			best, at = j-i, arrivals[i]
		}
	}
	return best, at
}

// repoWatch is a reverse proxy that records, per repository, how many
// requests are in flight at once, and when each request arrived.
type repoWatch struct {
	srv *httptest.Server

	mu         sync.Mutex
	inFlight   map[string]int
	maxPerRepo map[string]int
	total      int
	maxTotal   int
	arrivals   []time.Time
}

type doneKey struct{}

func newRepoWatch(t *testing.T, target string) *repoWatch {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	w := &repoWatch{inFlight: map[string]int{}, maxPerRepo: map[string]int{}}
	finish := func(r *http.Request) {
		if f, ok := r.Context().Value(doneKey{}).(func()); ok {
			f()
		}
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = pr.In.Host
		},
		// A request stops counting once its answer is back from the
		// registry, before the client can see it: the client cannot send
		// its next request to the repository before this one is counted out.
		ModifyResponse: func(resp *http.Response) error {
			finish(resp.Request)
			return nil
		},
		ErrorHandler: func(rw http.ResponseWriter, r *http.Request, err error) {
			finish(r)
			http.Error(rw, err.Error(), http.StatusBadGateway)
		},
	}
	w.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		repo := repoOf(r.URL.Path)
		w.mu.Lock()
		w.arrivals = append(w.arrivals, time.Now())
		w.inFlight[repo]++
		w.maxPerRepo[repo] = max(w.maxPerRepo[repo], w.inFlight[repo])
		w.total++
		w.maxTotal = max(w.maxTotal, w.total)
		w.mu.Unlock()
		done := sync.OnceFunc(func() {
			w.mu.Lock()
			w.inFlight[repo]--
			w.total--
			w.mu.Unlock()
		})
		defer done()
		rp.ServeHTTP(rw, r.WithContext(context.WithValue(r.Context(), doneKey{}, done)))
	}))
	t.Cleanup(w.srv.Close)
	return w
}

// Host is the proxy's "127.0.0.1:port".
func (w *repoWatch) Host() string { return strings.TrimPrefix(w.srv.URL, "http://") }

type watchStats struct {
	maxPerRepo map[string]int
	maxTotal   int
	arrivals   []time.Time
}

func (w *repoWatch) stats() watchStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := watchStats{maxPerRepo: map[string]int{}, maxTotal: w.maxTotal, arrivals: slices.Clone(w.arrivals)}
	for k, v := range w.maxPerRepo {
		s.maxPerRepo[k] = v
	}
	sort.Slice(s.arrivals, func(i, j int) bool { return s.arrivals[i].Before(s.arrivals[j]) })
	return s
}

// repoOf returns the repository of a registry API path
// (/v2/<repo>/manifests/<ref> or /v2/<repo>/blobs/<digest>), or the path.
func repoOf(path string) string {
	p := strings.TrimPrefix(path, "/v2/")
	for _, marker := range []string{"/manifests/", "/blobs/"} {
		if i := strings.LastIndex(p, marker); i >= 0 {
			return p[:i]
		}
	}
	return path
}
