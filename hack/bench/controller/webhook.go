package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/hack/bench/internal/benchproc"
	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/pkg/hooks"
	"github.com/tagger-project/tagger/pkg/logging"
	"github.com/tagger-project/tagger/pkg/node"
	"github.com/tagger-project/tagger/pkg/node/containerdconfig"
	"github.com/tagger-project/tagger/pkg/pins"
)

const (
	webhookTag   = "webhook-bench"
	webhookRepo  = "bench/webhook"
	webhookTagOf = "v1"
)

// webhookIter is one measured iteration, durations in seconds from the
// moment the webhook was POSTed.
type webhookIter struct {
	Post       float64 `json:"post_s"`       // the POST's answer (202)
	Annotation float64 `json:"annotation_s"` // the Tag's check annotation seen changed (watch)
	Served     float64 `json:"served_s"`     // the Tag's status.servedDigest seen at the new digest (watch)
	Pin        float64 `json:"pin_s"`        // the node agent's pin table serves the new digest
}

// backToBack is a second push POSTed right after the first was served.
type backToBack struct {
	SincePrevCheck float64 `json:"since_prev_check_s"` // POST - the previous check's annotation seen
	Answer         string  `json:"answer"`             // the webhook's HTTP answer
	Served         bool    `json:"served"`             // the second digest reached the pin table without another webhook
	Pin            float64 `json:"pin_s"`              // POST -> pin table (the wait limit when not served)
	Recovered      float64 `json:"recovered_s"`        // when not served: a webhook after the window -> pin table
}

type webhookResults struct {
	Iterations []webhookIter  `json:"iterations"`
	BackToBack []backToBack   `json:"back_to_back"`
	Upstream   map[string]int `json:"upstream_requests"`
	Coalesce   string         `json:"coalesce"`
	Loadavg    [2]string      `json:"loadavg"`
	CPU        cpuShare       `json:"cpu"`
}

// cpuShare is CPU used during a part, in cores.
type cpuShare struct {
	Controller float64 `json:"controller_cores"`
	Machine    float64 `json:"machine_busy_cores"`
	Seconds    float64 `json:"seconds"`
}

func runWebhook(ctx context.Context, r *rig.Program, c *config, e *env, cfg *rest.Config) (*webhookResults, error) {
	res := &webhookResults{Coalesce: hooks.DefaultCoalesce.String() + " (the controller's default --webhook-coalesce)"}
	proxy := rig.NewCountingProxy(r, e.up.URL())
	image := proxy.Host() + "/" + webhookRepo + ":" + webhookTagOf
	ref, err := pins.ParseReference(image)
	if err != nil {
		return nil, err
	}
	img := e.up.PushImage(r, webhookRepo, webhookTagOf, rig.ImageOptions{})

	logf("webhook: starting the controller process")
	ctl, err := startController(r, controllerSpec{bin: e.ctrl.bin, args: e.controllerArgs(c, "default"), dir: e.ctrl.dir, name: e.ctrl.name + "-webhook"})
	if err != nil {
		return nil, err
	}
	defer ctl.Stop()

	// The node agent, in process: CRI convergence off, hosts.toml into a
	// temp dir, and a containerd config that passes the agent's check.
	agentDir := r.TempDir()
	hostsDir := filepath.Join(agentDir, "certs.d")
	if err := os.MkdirAll(hostsDir, 0o755); err != nil {
		return nil, err
	}
	ctdConfig := filepath.Join(agentDir, "config.toml")
	if err := os.WriteFile(ctdConfig, fmt.Appendf(nil,
		"version = 3\n\n[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = %q\n", hostsDir), 0o644); err != nil {
		return nil, err
	}
	if rep := containerdconfig.Check(ctdConfig, hostsDir); !rep.OK {
		return nil, fmt.Errorf("containerd config fixture does not pass the check: %v", rep.Problems)
	}
	alog, err := logging.New(os.Stderr, "text", "warn")
	if err != nil {
		return nil, err
	}
	o := node.DefaultOptions()
	o.Listen, o.MetricsAddr, o.HealthAddr = "127.0.0.1:0", "0", "0"
	o.HostsDir, o.ContainerdConfig, o.CRIEndpoint = hostsDir, ctdConfig, ""
	o.PlainHTTPRegistries = []string{"127.0.0.1:*"}
	agent, err := node.New(cfg, o, alog)
	if err != nil {
		return nil, fmt.Errorf("node agent: %w", err)
	}
	actx, acancel := context.WithCancel(ctx)
	adone := make(chan error, 1)
	go func() { adone <- agent.Run(actx) }()
	stopAgent := sync.OnceFunc(func() {
		acancel()
		select {
		case err := <-adone:
			if err != nil {
				logf("node agent: %v", err)
			}
		case <-time.After(15 * time.Second):
			logf("node agent did not stop within 15s")
		}
	})
	r.Cleanup(stopAgent)
	defer stopAgent()

	tag := &v1alpha1.Tag{ObjectMeta: metav1.ObjectMeta{Name: webhookTag}, Spec: v1alpha1.TagSpec{Image: image}}
	if err := e.cl.Create(ctx, tag); err != nil {
		return nil, fmt.Errorf("create Tag: %w", err)
	}
	if _, err := waitPin(ctx, agent, ref, img.Digest.String(), 60*time.Second); err != nil {
		return nil, fmt.Errorf("first generation: %w", err)
	}
	logf("webhook: Tag %s serves generation 1 on the node agent", webhookTag)

	w := &tagWatch{}
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	go w.run(wctx, e.cl, webhookTag)
	if err := w.waitSynced(10 * time.Second); err != nil {
		return nil, err
	}

	url := "http://" + ctl.Webhook + "/hooks/generic/" + e.token
	hc := &http.Client{Timeout: 10 * time.Second}
	// post sends the generic webhook; id, when set, names the push (what
	// tells two pushes inside one coalescing window apart).
	post := func(id string) (time.Time, time.Time, string, error) {
		p := map[string]string{"image": image}
		if id != "" {
			p["id"] = id
		}
		body, _ := json.Marshal(p)
		t0 := time.Now()
		resp, err := hc.Post(url, "application/json", bytes.NewReader(body))
		if err != nil {
			return t0, t0, "", fmt.Errorf("POST webhook: %w", err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		tPost := time.Now()
		answer := fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(b))
		if resp.StatusCode != http.StatusAccepted {
			return t0, tPost, answer, fmt.Errorf("POST webhook: %s", answer)
		}
		return t0, tPost, answer, nil
	}
	// lastCheck is when the watch last saw the check annotation change; the
	// hooks window runs from just before that.
	var lastCheck time.Time
	spacing := func() {
		if wait := time.Until(lastCheck.Add(hooks.DefaultCoalesce + 250*time.Millisecond)); wait > 0 {
			time.Sleep(wait)
		}
	}
	// single is one push and one webhook, outside any window.
	single := func(i int) (webhookIter, error) {
		spacing()
		next := e.up.PushImage(r, webhookRepo, webhookTagOf, rig.ImageOptions{})
		want := next.Digest.String()
		w.arm(want)
		t0, tPost, _, err := post("")
		if err != nil {
			return webhookIter{}, err
		}
		tPin, err := waitPin(ctx, agent, ref, want, 30*time.Second)
		if err != nil {
			return webhookIter{}, fmt.Errorf("iteration %d: %w (controller log tail:\n%s)", i, err, benchproc.Tail(ctl.LogPath, 2048))
		}
		annot, served, err := w.wait(5 * time.Second)
		if err != nil {
			return webhookIter{}, fmt.Errorf("iteration %d: %w", i, err)
		}
		lastCheck = annot
		return webhookIter{
			Post: tPost.Sub(t0).Seconds(), Annotation: annot.Sub(t0).Seconds(),
			Served: served.Sub(t0).Seconds(), Pin: tPin.Sub(t0).Seconds(),
		}, nil
	}

	total := c.warmup + c.iterations
	proxy.Reset()
	var cpu0 time.Duration
	var busy0, all0 int64
	var start time.Time
	for i := range total {
		if i == c.warmup {
			cpu0, _ = benchproc.CPUTime(ctl.Pid())
			busy0, all0 = benchproc.MachineCPU()
			start = time.Now()
			res.Loadavg[0] = benchproc.Loadavg()
		}
		it, err := single(i)
		if err != nil {
			return nil, err
		}
		if i >= c.warmup {
			res.Iterations = append(res.Iterations, it)
		}
		if c.verbose || (i+1)%10 == 0 || i == total-1 {
			logf("webhook: %d/%d, last: webhook->pin %.3fs (annotation %.3fs, served %.3fs)", i+1, total, it.Pin, it.Annotation, it.Served)
		}
	}
	cpu1, _ := benchproc.CPUTime(ctl.Pid())
	busy1, all1 := benchproc.MachineCPU()
	secs := time.Since(start).Seconds()
	res.CPU = cpuShare{
		Controller: (cpu1 - cpu0).Seconds() / secs,
		Machine:    float64(busy1-busy0) / float64(max(all1-all0, 1)) * float64(runtimeCPUs()),
		Seconds:    secs,
	}
	res.Loadavg[1] = benchproc.Loadavg()
	res.Upstream = map[string]int{
		"HEAD manifest": proxy.Count(http.MethodHead, rig.KindManifest),
		"GET manifest":  proxy.Count(http.MethodGet, rig.KindManifest),
		"GET blob":      proxy.Count(http.MethodGet, rig.KindBlob),
		"total":         proxy.Total(),
	}

	// Back to back: a second push of the tag, and its webhook carrying the
	// push's id (the new digest, as a CI step would send), right after the
	// first one was served, i.e. inside the window after its check: the
	// queue runs a trailing check when the window ends.
	for j := range c.backToBack {
		if _, err := single(-1 - j); err != nil {
			return nil, err
		}
		next := e.up.PushImage(r, webhookRepo, webhookTagOf, rig.ImageOptions{})
		want := next.Digest.String()
		w.arm(want)
		t0, _, answer, err := post(want)
		if err != nil {
			return nil, err
		}
		b := backToBack{SincePrevCheck: t0.Sub(lastCheck).Seconds(), Answer: answer}
		limit := hooks.DefaultCoalesce + 3*time.Second
		if tPin, err := waitPin(ctx, agent, ref, want, limit); err == nil {
			b.Served, b.Pin = true, tPin.Sub(t0).Seconds()
			if annot, _, err := w.wait(5 * time.Second); err == nil {
				lastCheck = annot
			}
		} else {
			b.Pin = limit.Seconds()
			// Recover: the same webhook once the window is over.
			spacing()
			w.arm(want)
			t1, _, _, err := post(want)
			if err != nil {
				return nil, err
			}
			tPin, err := waitPin(ctx, agent, ref, want, 30*time.Second)
			if err != nil {
				return nil, fmt.Errorf("back-to-back %d: a webhook after the window did not bring %s either: %w", j, want, err)
			}
			b.Recovered = tPin.Sub(t1).Seconds()
			if annot, _, err := w.wait(5 * time.Second); err == nil {
				lastCheck = annot
			}
		}
		res.BackToBack = append(res.BackToBack, b)
		logf("webhook: back-to-back %d/%d: second push POSTed %.3fs after the first check: %s; served: %v",
			j+1, c.backToBack, b.SincePrevCheck, b.Answer, b.Served)
	}

	// Leave nothing behind for the scale part: its controller must see only its Tags.
	if err := e.cl.Delete(ctx, &v1alpha1.Tag{ObjectMeta: metav1.ObjectMeta{Name: webhookTag}}); err != nil {
		return nil, fmt.Errorf("delete Tag %s: %w", webhookTag, err)
	}
	return res, nil
}

// waitPin polls the node agent's pin table (an atomic pointer load and a map
// lookup) until ref serves digest, and returns when it first did.
func waitPin(ctx context.Context, agent *node.Agent, ref pins.Reference, digest string, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		if snap := agent.Pins(); snap != nil {
			if p, ok := snap.Lookup(ref.Registry, ref.Repository, ref.Tag); ok && p.Digest == digest {
				return time.Now(), nil
			}
		}
		if ctx.Err() != nil {
			return time.Time{}, ctx.Err()
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("node agent does not serve %s for %s after %v", digest, ref, timeout)
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// tagWatch watches one Tag and timestamps, after arm, the first event whose
// check annotation differs from the value before, and the first whose
// status serves the wanted digest.
type tagWatch struct {
	mu        sync.Mutex
	synced    bool
	lastAnnot string
	armed     bool
	fromAnnot string
	want      string
	annotAt   time.Time
	servedAt  time.Time
}

func (w *tagWatch) run(ctx context.Context, cl client.WithWatch, name string) {
	for ctx.Err() == nil {
		wi, err := cl.Watch(ctx, &v1alpha1.TagList{}, client.MatchingFields{"metadata.name": name})
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		for ev := range wi.ResultChan() {
			t, ok := ev.Object.(*v1alpha1.Tag)
			if !ok {
				continue
			}
			now := time.Now()
			w.mu.Lock()
			annot := t.Annotations[v1alpha1.CheckAnnotation]
			if w.armed {
				if w.annotAt.IsZero() && annot != w.fromAnnot {
					w.annotAt = now
				}
				if w.servedAt.IsZero() && t.Status.ServedDigest == w.want {
					w.servedAt = now
				}
			}
			w.lastAnnot = annot
			w.synced = true
			w.mu.Unlock()
		}
		wi.Stop()
	}
}

func (w *tagWatch) waitSynced(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		w.mu.Lock()
		ok := w.synced
		w.mu.Unlock()
		if ok {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("watch of Tag %s got no event within %v", webhookTag, timeout)
}

func (w *tagWatch) arm(want string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.armed, w.fromAnnot, w.want = true, w.lastAnnot, want
	w.annotAt, w.servedAt = time.Time{}, time.Time{}
}

// wait returns both timestamps once seen.
func (w *tagWatch) wait(timeout time.Duration) (annot, served time.Time, err error) {
	deadline := time.Now().Add(timeout)
	for {
		w.mu.Lock()
		annot, served = w.annotAt, w.servedAt
		w.mu.Unlock()
		if !annot.IsZero() && !served.IsZero() {
			w.mu.Lock()
			w.armed = false
			w.mu.Unlock()
			return annot, served, nil
		}
		if time.Now().After(deadline) {
			return annot, served, fmt.Errorf("watch did not see the annotation change and the served digest within %v", timeout)
		}
		time.Sleep(time.Millisecond)
	}
}
