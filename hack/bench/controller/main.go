// Command controller benchmarks the tagger controller and its webhooks on
// real components, in one run (docs/benchmarks.md, "Controller and
// webhooks"). The controller is the binary built from ./cmd/controller,
// run as a separate process against a real kube-apiserver and etcd
// (envtest, internal/rig) and a real distribution registry playing the
// upstream (internal/rig):
//
//  1. Webhook to served pin: a node agent (pkg/node, CRI convergence
//     off) runs in this process. Each iteration pushes a new image under
//     the pinned tag, POSTs the generic webhook, and times how long until
//     the node agent's pin table serves the new digest, with the breakdown
//     (webhook queue and patch, check and status write, node agent).
//     Iterations are spaced by more than the coalescing window; then a few
//     "back to back" pairs POST a second push inside the window.
//  2. 5,000 Tags, once per -scale-kube-api-qps value: a fresh controller
//     process, 100 repositories x 50 tags with checkInterval 1m, behind
//     the rig's counting proxy. After every Tag has its first check it
//     measures, over the following interval(s), upstream HEADs per interval,
//     manifest and blob GETs, and the controller's RSS (VmRSS every second).
//
// Every process it starts is stopped when it exits, on error and on
// SIGINT/SIGTERM too (the controller and the registry also get SIGKILL from
// the kernel if this program is killed: Pdeathsig; envtest's apiserver and
// etcd are stopped by envtest on every exit but SIGKILL).
//
//	go run ./hack/bench/controller                  # both parts (make bench)
//	go run ./hack/bench/controller -skip-scale      # the webhook part only
//	go run ./hack/bench/controller -skip-webhook -scale-kube-api-qps 150
//	go run ./hack/bench/controller -repos 10 -tags-per-repo 10 -measure 70s   # a quick look
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/hack/bench/internal/benchproc"
	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/pkg/hooks"
)

func main() {
	os.Exit(benchMain(os.Args[1:]))
}

type config struct {
	iterations    int
	warmup        int
	repos         int
	tagsPerRepo   int
	interval      time.Duration
	measure       time.Duration
	firstPass     time.Duration
	registryQPS   float64
	maxChecks     int
	scaleQPS      []string
	testbin       string
	out           string
	skipWebhook   bool
	skipScale     bool
	creators      int
	pushers       int
	listEvery     time.Duration
	controllerLog string
	verbose       bool
	backToBack    int
	controllerBin string
}

func benchMain(args []string) int {
	var c config
	fs := flag.NewFlagSet("controller", flag.ExitOnError)
	fs.IntVar(&c.iterations, "n", 50, "webhook iterations measured")
	fs.IntVar(&c.warmup, "warmup", 1, "webhook iterations run first and not measured")
	fs.IntVar(&c.repos, "repos", 100, "repositories in the scale run (one image each)")
	fs.IntVar(&c.tagsPerRepo, "tags-per-repo", 50, "tags per repository in the scale run (a Tag each)")
	fs.DurationVar(&c.interval, "interval", time.Minute, "spec.checkInterval of the scale run's Tags (the CRD's minimum is 1m)")
	fs.DurationVar(&c.measure, "measure", 2*time.Minute, "how long to measure after every Tag has its first check (at least 1.1 x -interval)")
	fs.DurationVar(&c.firstPass, "first-pass-timeout", 30*time.Minute, "how long to wait for every Tag's first check before measuring anyway")
	fs.Float64Var(&c.registryQPS, "registry-qps", 250, "the controller's --registry-qps")
	fs.IntVar(&c.maxChecks, "max-concurrent-checks", 8, "the controller's --max-concurrent-checks")
	scaleQPS := fs.String("scale-kube-api-qps", "default,150", "comma-separated: one scale run per value; \"default\" leaves the "+
		"controller's --kube-api-qps at its default, a number N passes --kube-api-qps N --kube-api-burst 2N")
	fs.StringVar(&c.testbin, "testbin", rig.BinDir(), "directory holding kube-apiserver, etcd and registry (make testbin)")
	fs.StringVar(&c.out, "json", "", "also write every raw measurement to this JSON file")
	fs.BoolVar(&c.skipWebhook, "skip-webhook", false, "skip the webhook latency part")
	fs.BoolVar(&c.skipScale, "skip-scale", false, "skip the 5,000-Tag part")
	fs.IntVar(&c.creators, "creators", 8, "concurrent Tag creates in the scale run")
	fs.IntVar(&c.pushers, "pushers", 8, "concurrent pushes while preparing the scale run's upstream")
	fs.DurationVar(&c.listEvery, "list-every", 3*time.Second, "how often the first pass is polled (a List of every Tag)")
	fs.StringVar(&c.controllerLog, "controller-log", "", "copy the controller processes' logs into this directory")
	fs.BoolVar(&c.verbose, "v", false, "log every webhook iteration")
	fs.StringVar(&c.controllerBin, "controller-bin", "", "run this controller binary instead of building ./cmd/controller (e.g. one built from another commit)")
	fs.IntVar(&c.backToBack, "back-to-back", 5, "webhook pairs where a second push is POSTed right after the first was served (inside the coalescing window)")
	_ = fs.Parse(args)
	for _, v := range strings.Split(*scaleQPS, ",") {
		if v = strings.TrimSpace(v); v != "" {
			if _, err := strconv.ParseFloat(v, 64); err != nil && v != "default" {
				fmt.Fprintf(os.Stderr, "bench: -scale-kube-api-qps: %q is neither a number nor \"default\"\n", v)
				return 2
			}
			c.scaleQPS = append(c.scaleQPS, v)
		}
	}
	if c.iterations < 1 || c.repos < 1 || c.tagsPerRepo < 1 || c.interval < time.Minute || c.maxChecks < 1 || c.registryQPS <= 0 {
		fmt.Fprintln(os.Stderr, "bench: -n, -repos, -tags-per-repo, -max-concurrent-checks must be >= 1, -registry-qps > 0, -interval >= 1m")
		return 2
	}

	return benchproc.Main("tagger-bench-controller", func(ctx context.Context, r *rig.Program) error { return run(ctx, r, &c) })
}

// env is what both parts share.
type env struct {
	root       string
	cl         client.WithWatch
	kubeconfig string
	up         *rig.Registry
	ctrl       controllerSpec
	secretRef  string
	token      string
	logDir     string
}

// results is everything measured; -json writes it.
type results struct {
	Machine map[string]any  `json:"machine"`
	Config  map[string]any  `json:"config"`
	Webhook *webhookResults `json:"webhook,omitempty"`
	Scale   []*scaleResults `json:"scale,omitempty"`
}

// run sets up the rig, measures the parts asked for, then reports.
func run(ctx context.Context, r *rig.Program, c *config) error {
	root, err := benchproc.CheckRig(ctx, c.testbin)
	if err != nil {
		return err
	}
	res := newResults(c)
	logf("machine: %d CPUs, load average %s", runtime.NumCPU(), benchproc.Loadavg())
	e, cfg, err := setup(ctx, r, c, root)
	if err != nil {
		return err
	}
	if err := measure(ctx, r, c, e, cfg, res); err != nil {
		return err
	}
	res.Machine["loadavg_end"] = benchproc.Loadavg()
	return benchproc.Emit(c.out, res, func(w io.Writer) { report(w, c, res) }, logf)
}

// newResults records the machine and the configuration.
func newResults(c *config) *results {
	return &results{
		Machine: map[string]any{"cpus": runtime.NumCPU(), "go": runtime.Version(), "loadavg_start": benchproc.Loadavg()},
		Config: map[string]any{
			"iterations": c.iterations, "warmup": c.warmup, "repos": c.repos, "tags_per_repo": c.tagsPerRepo,
			"interval": c.interval.String(), "measure": c.measure.String(), "registry_qps": c.registryQPS,
			"max_concurrent_checks": c.maxChecks, "scale_kube_api_qps": c.scaleQPS,
			"webhook_coalesce": hooks.DefaultCoalesce.String(), "controller_bin": c.controllerBin,
		},
	}
}

// setup builds the controller unless given, and starts kube-apiserver with
// the webhook Secret and the upstream registry.
func setup(ctx context.Context, r *rig.Program, c *config, root string) (*env, *rest.Config, error) {
	var err error
	e := &env{root: root, logDir: r.TempDir()}
	if c.controllerLog != "" {
		if err := os.MkdirAll(c.controllerLog, 0o755); err != nil {
			return nil, nil, err
		}
		e.logDir = c.controllerLog
	}

	bin := c.controllerBin
	if bin == "" {
		logf("building ./cmd/... (rig.Commands, as the Dockerfile builds)")
		bin = rig.Command(r, rig.Static, "controller")
	} else {
		logf("controller binary: %s", bin)
	}
	e.ctrl = controllerSpec{bin: bin, dir: e.logDir, name: "controller"}
	logf("starting kube-apiserver + etcd (envtest, internal/rig)")
	cluster, err := rig.StartKube(c.testbin)
	if err != nil {
		return nil, nil, err
	}
	r.Cleanup(func() {
		if err := cluster.Stop(); err != nil {
			logf("stop envtest: %v", err)
		}
	})
	cfg := cluster.Config
	scheme, err := v1alpha1.NewScheme()
	if err != nil {
		return nil, nil, err
	}
	if e.cl, err = client.NewWithWatch(cfg, client.Options{Scheme: scheme}); err != nil {
		return nil, nil, err
	}
	e.kubeconfig = filepath.Join(r.TempDir(), "kubeconfig")
	if err := os.WriteFile(e.kubeconfig, cluster.KubeConfig, 0o600); err != nil {
		return nil, nil, err
	}

	// The webhook Secret: the generic provider's token.
	const ns, secretName = "tagger-system", "tagger-webhooks"
	e.token = fmt.Sprintf("bench-%d", time.Now().UnixNano())
	e.secretRef = ns + "/" + secretName
	if err := e.cl.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		return nil, nil, fmt.Errorf("create namespace: %w", err)
	}
	if err := e.cl.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: secretName},
		Data:       map[string][]byte{hooks.SecretKeyGeneric: []byte(e.token)},
	}); err != nil {
		return nil, nil, fmt.Errorf("create webhook secret: %w", err)
	}

	logf("starting the upstream registry (distribution)")
	e.up = rig.StartRegistry(r, filepath.Join(c.testbin, "registry"), rig.RegistryOptions{})
	return e, cfg, nil
}

// measure runs the webhook part and the scale part (once per
// -scale-kube-api-qps value) into res.
func measure(ctx context.Context, r *rig.Program, c *config, e *env, cfg *rest.Config, res *results) error {
	if !c.skipWebhook {
		w, err := runWebhook(ctx, r, c, e, cfg)
		if err != nil {
			return fmt.Errorf("webhook part: %w", err)
		}
		res.Webhook = w
	}
	if !c.skipScale {
		digests, err := prepareScale(r, c, e)
		if err != nil {
			return fmt.Errorf("scale part: %w", err)
		}
		for i, qps := range c.scaleQPS {
			if i > 0 {
				if err := deleteTags(ctx, e); err != nil {
					return fmt.Errorf("scale part: %w", err)
				}
			}
			s, err := runScale(ctx, r, c, e, digests, qps)
			if err != nil {
				return fmt.Errorf("scale part (--kube-api-qps %s): %w", qps, err)
			}
			res.Scale = append(res.Scale, s)
		}
	}
	return nil
}

// controllerArgs are the flags both parts start the controller with (the
// listen addresses are added by startController). kubeQPS "default" (or "")
// leaves the controller's Kubernetes API rate limit at its default.
func (e *env) controllerArgs(c *config, kubeQPS string) []string {
	args := []string{
		"--kubeconfig", e.kubeconfig,
		"--webhook-secret", e.secretRef,
		"--plain-http-registries", "127.0.0.1:*",
		"--registry-qps", fmt.Sprint(c.registryQPS),
		"--max-concurrent-checks", fmt.Sprint(c.maxChecks),
		"--log-format", "json",
	}
	if kubeQPS != "" && kubeQPS != "default" {
		q, _ := strconv.ParseFloat(kubeQPS, 64)
		args = append(args, "--kube-api-qps", kubeQPS, "--kube-api-burst", fmt.Sprint(int(max(2*q, 10))))
	}
	return args
}
