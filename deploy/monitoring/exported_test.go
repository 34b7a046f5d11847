package monitoring

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/internal/rig/inproc"
	"github.com/tagger-project/tagger/pkg/node"
)

// synthetic are series Prometheus makes itself, not scraped ones.
var synthetic = map[string]bool{"up": true}

// Every metric the alerting rules and the dashboard name is one the
// controller or the node agent exports: both run in-process against a real
// apiserver and registries, a cached Tag makes them check, copy and serve,
// and their /metrics endpoints are scraped over HTTP. No hand-kept list.
func TestNamedMetricsAreExported(t *testing.T) {
	rig.RequireBins(t, "kube-apiserver", "etcd", "registry")
	exported := scrapeTagger(t)

	g, err := LoadRules(RulesFile)
	if err != nil {
		t.Fatal(err)
	}
	d, err := LoadDashboard(DashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	named := map[string]string{}
	for _, r := range g.Alerts() {
		named["alert "+r.Alert] = r.Expr
	}
	for k, e := range d.Exprs() {
		named["dashboard "+k] = e
	}
	for where, expr := range named {
		names := MetricNames(expr)
		if len(names) == 0 {
			t.Errorf("%s: %q names no metric", where, expr)
		}
		for _, n := range names {
			if !exported[n] && !synthetic[n] {
				t.Errorf("%s: %s is not exported by the controller or the node agent", where, n)
			}
		}
	}
}

// scrapeTagger runs the controller and a node agent and returns every
// sample name their /metrics endpoints serve (a histogram's _bucket, _sum
// and _count included) once a cached Tag is served.
func scrapeTagger(t *testing.T) map[string]bool {
	k := rig.NewKube(t)
	upstream := rig.NewRegistry(t, rig.RegistryOptions{})
	bundled := rig.NewRegistry(t, rig.RegistryOptions{})
	upstream.PushImage(t, "monitoring/app", "v1", rig.ImageOptions{Layers: 1})

	o := inproc.ControllerOptions()
	o.MetricsAddr = rig.FreeAddr(t)
	o.RegistryURL = bundled.URL()
	inproc.RunController(k, o)

	const nodeName = "monitoring-node"
	if err := k.Client.Create(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName}}); err != nil {
		t.Fatal(err)
	}
	agentMetrics := runAgent(t, k, bundled.URL(), nodeName)

	tag := rig.NewTag("monitoring", upstream.Host()+"/monitoring/app:v1")
	tag.Spec.Cache = true
	rig.CreateTag(t, k.Client, tag)
	rig.WaitTag(t, k.Client, tag.Name, "cached", rig.ConditionIs(v1alpha1.ConditionCached, metav1.ConditionTrue, "Cached"))

	names := map[string]bool{}
	for _, addr := range []string{o.MetricsAddr, agentMetrics} {
		// The agent picks the Tag up from its watch: wait for its pin.
		rig.WaitFor(t, time.Minute, "metrics of "+addr, func() (bool, string) {
			got, err := sampleNames("http://" + addr + "/metrics")
			if err != nil {
				return false, err.Error()
			}
			if !got["tagger_tag_condition"] && !got["tagger_pins"] {
				return false, "no tagger_tag_condition or tagger_pins yet"
			}
			for n := range got {
				names[n] = true
			}
			return true, ""
		})
	}
	t.Logf("exported: %s", strings.Join(sorted(names), " "))
	return names
}

// runAgent runs a node agent with metrics on a free loopback port, the
// startup taint gate on and a CRI endpoint nothing listens on (so the
// convergence and startup metrics are registered; no pull is made), and
// returns its metrics address.
func runAgent(t *testing.T, k *rig.Kube, registryURL, nodeName string) string {
	dir := t.TempDir()
	o := node.DefaultOptions()
	o.Listen = "127.0.0.1:0"
	o.MetricsAddr, o.HealthAddr = rig.FreeAddr(t), "0"
	o.HostsDir = filepath.Join(dir, "certs.d")
	o.ContainerdConfig = filepath.Join(dir, "config.toml")
	o.CRIEndpoint = "unix://" + filepath.Join(dir, "no-containerd.sock")
	o.RegistryURL = registryURL
	o.PlainHTTPRegistries = []string{"127.0.0.1:*"}
	o.ReadyFile = filepath.Join(dir, "ready")
	o.StartupTaint, o.NodeName = "tagger.dev/agent-not-ready", nodeName
	o.ShutdownDelay = 0
	if err := os.WriteFile(o.ContainerdConfig, fmt.Appendf(nil,
		"version = 3\n[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = %q\n", o.HostsDir), 0o644); err != nil {
		t.Fatal(err)
	}
	a, err := node.New(k.Config, o, k.Log)
	if err != nil {
		t.Fatalf("node agent: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("node agent: %v", err)
		}
	})
	return o.MetricsAddr
}

// sampleNames reads a Prometheus text exposition and returns its sample
// names.
func sampleNames(url string) (map[string]bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	names := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	return names, nil
}

func sorted(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
