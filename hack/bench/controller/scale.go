package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/hack/bench/internal/benchproc"
	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/pkg/pins"
)

func runtimeCPUs() int { return runtime.NumCPU() }

// sample is one second of the scale run.
type sample struct {
	T     float64 `json:"t_s"` // seconds since the controller started
	RSS   int64   `json:"rss_bytes"`
	CPU   float64 `json:"cpu_s"` // controller CPU time so far
	Total int     `json:"upstream_total"`
	Heads int     `json:"heads"`
	GetsM int     `json:"get_manifests"`
	GetsB int     `json:"get_blobs"`
	Busy  int64   `json:"-"`
	All   int64   `json:"-"`
}

type scaleResults struct {
	KubeAPIQPS     string         `json:"kube_api_qps"` // "default": the controller's own
	Tags           int            `json:"tags"`
	Repos          int            `json:"repos"`
	CreateSeconds  float64        `json:"create_s"`
	FirstPassDone  bool           `json:"first_pass_done"`
	FirstPassTags  int            `json:"first_pass_tags"` // Tags with their first check at measure start
	FirstPassSecs  float64        `json:"first_pass_s"`    // first create -> every Tag checked
	FirstPass      map[string]int `json:"first_pass_upstream"`
	MeasureStart   float64        `json:"measure_start_s"`
	MeasureSeconds float64        `json:"measure_s"`
	Window         map[string]int `json:"window_upstream"` // the whole measurement window
	PerInterval    []int          `json:"heads_per_interval"`
	// SteadyPerInterval is sum over Tags of interval / (the Tag's mean time
	// between HEADs over the whole run): HEADs per interval once the
	// phases of the first pass no longer matter. Tags with one HEAD only
	// (TagsOneHead) are left out.
	SteadyPerInterval float64            `json:"steady_heads_per_interval"`
	TagsOneHead       int                `json:"tags_with_one_head"`
	TagsCovered       int                `json:"tags_checked_within_1_1_intervals"`
	Gaps              gapStats           `json:"gaps"`
	RSSMax            int64              `json:"rss_max_bytes"`
	RSSMaxWindow      int64              `json:"rss_max_window_bytes"`
	RSSAtStart        int64              `json:"rss_at_measure_start_bytes"`
	RSSFinal          int64              `json:"rss_final_bytes"`
	CPU               cpuShare           `json:"cpu_window"`
	CPUFirstPass      cpuShare           `json:"cpu_first_pass"`
	MetricsAtStart    map[string]float64 `json:"metrics_at_measure_start"`
	MetricsAtEnd      map[string]float64 `json:"metrics_at_end"`
	Loadavg           [2]string          `json:"loadavg"`
	Samples           []sample           `json:"samples"`
	ControllerAlive   bool               `json:"controller_alive"`
}

// gapStats are the times between consecutive HEADs of one tag, in seconds
// (1 s resolution: requests are timestamped by the per-second sampler).
type gapStats struct {
	N        int     `json:"n"`
	Min      float64 `json:"min_s"`
	Median   float64 `json:"median_s"`
	Max      float64 `json:"max_s"`
	TooShort int     `json:"too_short"` // < 0.9 x interval - 2 s
	TooLong  int     `json:"too_long"`  // > 1.1 x interval + 2 s
}

var metricNames = []string{
	"tagger_checks_total", "workqueue_depth", "workqueue_adds_total",
	"rest_client_rate_limiter_duration_seconds_sum", "rest_client_rate_limiter_duration_seconds_count",
	"rest_client_requests_total", "tagger_upstream_rate_limited_total",
	"go_memstats_heap_inuse_bytes", "go_goroutines",
}

// prepareScale pushes one image per repository to the upstream and tags it
// tagsPerRepo times; it returns each repository's digest.
func prepareScale(r *rig.Program, c *config, e *env) ([]string, error) {
	logf("scale: pushing %d images under %d tags", c.repos, c.repos*c.tagsPerRepo)
	digests := make([]string, c.repos)
	err := parallel(r, c.pushers, c.repos, func(i int) error {
		repo := scaleRepo(i)
		img := e.up.PushImage(r, repo, scaleTagName(0), rig.ImageOptions{})
		for j := 1; j < c.tagsPerRepo; j++ {
			e.up.PushManifest(r, repo, scaleTagName(j), img.MediaType, img.Manifest)
		}
		digests[i] = img.Digest.String()
		return nil
	})
	return digests, err
}

// deleteTags deletes every Tag and waits until they are gone.
func deleteTags(ctx context.Context, e *env) error {
	logf("scale: deleting the Tags of the previous run")
	if err := e.cl.DeleteAllOf(ctx, &v1alpha1.Tag{}); err != nil {
		return fmt.Errorf("delete Tags: %w", err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var list v1alpha1.TagList
		if err := e.cl.List(ctx, &list, client.Limit(1)); err != nil {
			return fmt.Errorf("list Tags: %w", err)
		}
		if len(list.Items) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("Tags still there 2 minutes after deleting them all")
		}
		time.Sleep(time.Second)
	}
}

func runScale(ctx context.Context, r *rig.Program, c *config, e *env, digests []string, kubeQPS string) (*scaleResults, error) {
	n := c.repos * c.tagsPerRepo
	res := &scaleResults{Tags: n, Repos: c.repos, KubeAPIQPS: kubeQPS}
	proxy := rig.NewCountingProxy(r, e.up.URL())

	args := e.controllerArgs(c, kubeQPS)
	logf("scale: starting a fresh controller process: --kube-api-qps %s", kubeQPS)
	ctl, err := startController(r, controllerSpec{bin: e.ctrl.bin, args: args, dir: e.ctrl.dir, name: e.ctrl.name + "-scale-qps-" + kubeQPS})
	if err != nil {
		return nil, err
	}
	defer ctl.Stop()
	started := time.Now()

	// The sampler: VmRSS, CPU and the proxy's counts every second.
	var smu sync.Mutex
	var samples []sample
	take := func() {
		s := sample{T: time.Since(started).Seconds()}
		s.RSS, _ = benchproc.VmRSS(ctl.Pid())
		cpu, _ := benchproc.CPUTime(ctl.Pid())
		s.CPU = cpu.Seconds()
		s.Total = proxy.Total()
		s.Heads = proxy.Count(http.MethodHead, rig.KindManifest)
		s.GetsM = proxy.Count(http.MethodGet, rig.KindManifest)
		s.GetsB = proxy.Count(http.MethodGet, rig.KindBlob)
		s.Busy, s.All = benchproc.MachineCPU()
		smu.Lock()
		samples = append(samples, s)
		smu.Unlock()
	}
	sctx, scancel := context.WithCancel(ctx)
	sdone := make(chan struct{})
	go func() {
		defer close(sdone)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		take()
		for {
			select {
			case <-sctx.Done():
				return
			case <-tick.C:
				take()
			}
		}
	}()
	stopSampler := sync.OnceFunc(func() { scancel(); <-sdone })
	defer stopSampler()
	last := func() sample {
		smu.Lock()
		defer smu.Unlock()
		return samples[len(samples)-1]
	}

	// n Tags in a shuffled order.
	logf("scale: creating %d Tags (checkInterval %v)", n, c.interval)
	createStart := time.Now()
	order := rand.New(rand.NewPCG(1, 2)).Perm(n)
	if err := parallel(r, c.creators, n, func(k int) error {
		i := order[k]
		repo, tag := i%c.repos, i/c.repos
		obj := &v1alpha1.Tag{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("scale-%03d-%02d", repo, tag)},
			Spec: v1alpha1.TagSpec{
				Image:         proxy.Host() + "/" + scaleRepo(repo) + ":" + scaleTagName(tag),
				CheckInterval: &metav1.Duration{Duration: c.interval},
			},
		}
		if err := e.cl.Create(ctx, obj); err != nil {
			return fmt.Errorf("create Tag %s: %w", obj.Name, err)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	res.CreateSeconds = time.Since(createStart).Seconds()
	logf("scale: created %d Tags in %.1fs", n, res.CreateSeconds)

	// The first pass: every Tag has a check and serves its repository's digest.
	deadline := createStart.Add(c.firstPass)
	var measureStart time.Time
	lastLog := time.Time{}
	for {
		var list v1alpha1.TagList
		if err := e.cl.List(ctx, &list); err != nil {
			return nil, fmt.Errorf("list Tags: %w", err)
		}
		done := 0
		for i := range list.Items {
			t := &list.Items[i]
			ref, err := pins.ParseReference(t.Spec.Image)
			if err != nil {
				continue
			}
			ri := 0
			fmt.Sscanf(strings.TrimPrefix(ref.Repository, "scale/app"), "%d", &ri)
			if t.Status.LastCheck != nil && t.Status.LatestGeneration == 1 && t.Status.ServedDigest == digests[ri] {
				done++
			}
		}
		now := time.Now()
		if done == n {
			res.FirstPassDone = true
			res.FirstPassTags = done
			measureStart = now
			break
		}
		if !ctl.Alive() {
			return nil, fmt.Errorf("controller exited (%v); log:\n%s", ctl.Err(), benchproc.Tail(ctl.LogPath, 4096))
		}
		if now.After(deadline) {
			res.FirstPassTags = done
			measureStart = now
			logf("scale: first pass NOT complete after %v: %d of %d Tags checked; measuring anyway", c.firstPass, done, n)
			break
		}
		if now.Sub(lastLog) >= 15*time.Second {
			s := last()
			logf("scale: %5.0fs: %d/%d Tags have their first check; upstream %s; controller RSS %.1f MiB",
				now.Sub(createStart).Seconds(), done, n, proxy, float64(s.RSS)/(1<<20))
			lastLog = now
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(c.listEvery):
		}
	}
	res.FirstPassSecs = measureStart.Sub(createStart).Seconds()
	take()
	startSample := last()
	res.MeasureStart = startSample.T
	res.RSSAtStart = startSample.RSS
	res.FirstPass = map[string]int{
		"HEAD manifest": startSample.Heads, "GET manifest": startSample.GetsM, "GET blob": startSample.GetsB, "total": startSample.Total,
	}
	smu.Lock()
	first := samples[0]
	smu.Unlock()
	res.CPUFirstPass = cpuShare{
		Controller: (startSample.CPU - first.CPU) / (startSample.T - first.T),
		Machine:    float64(startSample.Busy-first.Busy) / float64(max(startSample.All-first.All, 1)) * float64(runtimeCPUs()),
		Seconds:    startSample.T - first.T,
	}
	res.MetricsAtStart, _ = benchproc.Scrape(ctl.Metrics, metricNames...)
	res.Loadavg[0] = benchproc.Loadavg()
	logf("scale: first pass %s after %.1fs (%d of %d Tags); upstream so far: %s. Measuring for %v",
		map[bool]string{true: "complete", false: "incomplete"}[res.FirstPassDone], res.FirstPassSecs, res.FirstPassTags, n, proxy, c.measure)

	// The measurement: nothing moves upstream now.
	end := measureStart.Add(c.measure)
	for time.Now().Before(end) {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(min(15*time.Second, time.Until(end))):
		}
		s := last()
		logf("scale: measuring, %3.0fs of %v: HEADs since start %d, manifest GETs %d, RSS %.1f MiB",
			s.T-startSample.T, c.measure, s.Heads-startSample.Heads, s.GetsM-startSample.GetsM, float64(s.RSS)/(1<<20))
		if !ctl.Alive() {
			return nil, fmt.Errorf("controller exited (%v); log:\n%s", ctl.Err(), benchproc.Tail(ctl.LogPath, 4096))
		}
	}
	take()
	res.MetricsAtEnd, _ = benchproc.Scrape(ctl.Metrics, metricNames...)
	res.ControllerAlive = ctl.Alive()
	stopSampler()
	ctl.Stop()
	res.Loadavg[1] = benchproc.Loadavg()
	endSample := samples[len(samples)-1]
	res.MeasureSeconds = endSample.T - startSample.T
	res.Samples = samples
	res.RSSFinal = endSample.RSS
	for _, s := range samples {
		res.RSSMax = max(res.RSSMax, s.RSS)
		if s.T >= startSample.T {
			res.RSSMaxWindow = max(res.RSSMaxWindow, s.RSS)
		}
	}
	res.CPU = cpuShare{
		Controller: (endSample.CPU - startSample.CPU) / res.MeasureSeconds,
		Machine:    float64(endSample.Busy-startSample.Busy) / float64(max(endSample.All-startSample.All, 1)) * float64(runtimeCPUs()),
		Seconds:    res.MeasureSeconds,
	}
	res.Window = map[string]int{
		"HEAD manifest": endSample.Heads - startSample.Heads,
		"GET manifest":  endSample.GetsM - startSample.GetsM,
		"GET blob":      endSample.GetsB - startSample.GetsB,
		"total":         endSample.Total - startSample.Total,
	}

	// Timestamp every request by the sample that first counted it, then
	// look at HEADs per interval and per tag.
	reqs := proxy.Requests()
	times := make([]float64, len(reqs))
	k := 0
	for i := range reqs {
		for k < len(samples)-1 && samples[k].Total <= i {
			k++
		}
		times[i] = samples[k].T
	}
	iv := c.interval.Seconds()
	for w := 0; float64(w+1)*iv <= res.MeasureSeconds+0.5; w++ {
		from, to := startSample.T+float64(w)*iv, startSample.T+float64(w+1)*iv
		heads := 0
		for i, q := range reqs {
			if strings.HasPrefix(q, "HEAD ") && times[i] > from && times[i] <= to {
				heads++
			}
		}
		res.PerInterval = append(res.PerInterval, heads)
	}
	perTag := map[string][]float64{}
	for i, q := range reqs {
		if strings.HasPrefix(q, "HEAD ") {
			perTag[q] = append(perTag[q], times[i])
		}
	}
	var gaps []float64
	coverTo := startSample.T + 1.1*iv + 2
	for _, ts := range perTag {
		covered := false
		for j, t := range ts {
			if t > startSample.T && t <= coverTo {
				covered = true
			}
			if j > 0 {
				gaps = append(gaps, t-ts[j-1])
			}
		}
		if covered {
			res.TagsCovered++
		}
		if len(ts) >= 2 {
			res.SteadyPerInterval += iv / ((ts[len(ts)-1] - ts[0]) / float64(len(ts)-1))
		} else {
			res.TagsOneHead++
		}
	}
	sort.Float64s(gaps)
	if len(gaps) > 0 {
		res.Gaps = gapStats{N: len(gaps), Min: gaps[0], Median: gaps[len(gaps)/2], Max: gaps[len(gaps)-1]}
		for _, g := range gaps {
			if g < 0.9*iv-2 {
				res.Gaps.TooShort++
			}
			if g > 1.1*iv+2 {
				res.Gaps.TooLong++
			}
		}
	}
	return res, nil
}

func scaleRepo(i int) string    { return fmt.Sprintf("scale/app%03d", i) }
func scaleTagName(j int) string { return fmt.Sprintf("t%02d", j) }

// parallel runs f(0..n-1) on workers goroutines, each call under p.Run (a
// Fatalf in a goroutine must not end the process before the cleanups), and
// returns the first error.
func parallel(p *rig.Program, workers, n int, f func(i int) error) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	next := make(chan int)
	for range max(1, min(workers, n)) {
		wg.Go(func() {
			for i := range next {
				mu.Lock()
				failed := first != nil
				mu.Unlock()
				if failed {
					continue
				}
				if err := p.Run(func() error { return f(i) }); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}
