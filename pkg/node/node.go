// Package node assembles the node agent: it watches Tags (read-only),
// keeps the pin table, serves the mirror containerd asks first, writes
// hosts.toml for every registry with a served pin, checks that containerd
// will read those files, and converges the node's local image records when a
// served pin moves. cmd/node-agent only parses flags and calls Run or Cleanup.
package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/pkg/httplimits"
	"github.com/tagger-project/tagger/pkg/mirror"
	"github.com/tagger-project/tagger/pkg/node/containerdconfig"
	"github.com/tagger-project/tagger/pkg/node/hostsprobe"
	"github.com/tagger-project/tagger/pkg/node/hoststoml"
	"github.com/tagger-project/tagger/pkg/node/repull"
	"github.com/tagger-project/tagger/pkg/pins"
	"github.com/tagger-project/tagger/pkg/registryclient"
	"github.com/tagger-project/tagger/pkg/version"
)

// Options configure the node agent.
type Options struct {
	// Listen is the mirror's address; loopback by default, containerd runs on the node.
	Listen string
	// MetricsAddr and HealthAddr serve /metrics and /healthz, /readyz ("0" disables).
	MetricsAddr, HealthAddr string
	// HostsDir is containerd's config_path for registry hosts.
	HostsDir string
	// ContainerdConfig is the node's containerd config file, checked at start.
	ContainerdConfig string
	// CRIEndpoint is the CRI socket for local image store convergence ("" disables it).
	CRIEndpoint string
	// RegistryURL is the bundled registry.
	RegistryURL string
	// RegistryTokenFile is the projected ServiceAccount token presented to
	// the bundled registry's token issuer ("": no authentication).
	RegistryTokenFile string
	// DialTimeout is written as dial_timeout on our hosts.toml entry.
	DialTimeout time.Duration
	// StrictRegistries (path.Match patterns) get no upstream fallback.
	StrictRegistries []string
	// PlainHTTPRegistries (path.Match patterns) are upstreams reached over http://.
	PlainHTTPRegistries []string
	// ConvergeWorkers bounds concurrent CRI pulls.
	ConvergeWorkers int
	// ReadyFile is where the agent reports its readiness for the exec probe
	// `node-agent ready-check` ("" disables): during a rolling update two
	// agent pods share the node's ports, so an HTTP probe could be answered
	// by the other one. See lifecycle.go.
	ReadyFile string
	// ShutdownDelay is how long the mirror keeps serving after the agent is
	// told to stop, before its listener closes.
	ShutdownDelay time.Duration
	// StartupTaint is the taint key removed from node NodeName once the
	// agent is ready ("" disables the startup gate).
	StartupTaint string
	// NodeName is the Node this agent runs on.
	NodeName string
}

// DefaultOptions are the flag defaults.
func DefaultOptions() Options {
	return Options{
		Listen:           "127.0.0.1:5050",
		MetricsAddr:      ":9091",
		HealthAddr:       ":9092",
		HostsDir:         "/etc/containerd/certs.d",
		ContainerdConfig: "/etc/containerd/config.toml",
		CRIEndpoint:      "unix:///run/containerd/containerd.sock",
		DialTimeout:      200 * time.Millisecond,
		ConvergeWorkers:  2,
	}
}

// Agent is a running node agent.
type Agent struct {
	o         Options
	log       logrus.FieldLogger
	table     *pins.Table
	hosts     *hoststoml.Manager
	converger *repull.Converger
	report    containerdconfig.Report
	gate      *startupGate // nil when no startup taint is configured
	// probe proves containerd reads our hosts dir before the startup taint
	// goes (nil without a startup taint or a CRI endpoint); probing is true
	// while its hosts.toml is wanted.
	probe   *hostsprobe.Probe
	probing atomic.Bool

	pinsGauge prometheus.Gauge
	hostsOK   prometheus.Gauge
	cache     cache.Cache
	cri       *repull.CRI
	mirrorLn  net.Listener
	mirrorSrv *http.Server
	conns     *connTracker // the mirror's connections, for a drain that drops none
	servers   []served
	serving   atomic.Bool // the mirror accepts connections
	draining  atomic.Bool // told to stop: not ready, serving until ShutdownDelay ends

	synced      atomic.Bool
	hostsSynced atomic.Bool
	lastSyncErr atomic.Pointer[string]
}

// Cleanup removes every hosts.toml the agent wrote and restores the backups.
func Cleanup(o Options) error {
	m, err := newHosts(o)
	if err != nil {
		return err
	}
	return m.Cleanup()
}

func newHosts(o Options) (*hoststoml.Manager, error) {
	userStrict, err := pins.HostMatcher(o.StrictRegistries)
	if err != nil {
		return nil, err
	}
	// The probe host's only endpoint is the mirror: it never resolves.
	strict := func(h string) bool { return h == hostsprobe.Host || userStrict(h) }
	plain, err := pins.HostMatcher(o.PlainHTTPRegistries)
	if err != nil {
		return nil, err
	}
	return hoststoml.New(hoststoml.Options{
		Dir:         o.HostsDir,
		MirrorURL:   "http://" + o.Listen,
		DialTimeout: o.DialTimeout,
		Strict:      strict,
		PlainHTTP:   plain,
	})
}

// Run runs the agent until ctx is cancelled.
func Run(ctx context.Context, cfg *rest.Config, o Options, log *logrus.Logger) error {
	a, err := New(cfg, o, log)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

// New builds the agent and binds its listeners (so ":0" addresses resolve
// before hosts.toml names the mirror); Run starts it.
func New(cfg *rest.Config, o Options, log *logrus.Logger) (a *Agent, err error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}), version.NewCollector())
	a = &Agent{
		o: o, log: log.WithField("component", "node-agent"), table: pins.NewTable(),
		pinsGauge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tagger_pins", Help: "Pins served by this node's mirror."}),
		hostsOK: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tagger_hosts_config_ok",
			Help: "1 when the node's containerd config makes it read the hosts.toml files the agent writes, else 0."}),
	}
	reg.MustRegister(a.pinsGauge, a.hostsOK)
	// "return nil, err" sets a to nil before this runs: close through self.
	self := a
	defer func() {
		if err != nil {
			self.closeAll()
		}
	}()

	// A fixed mirror port is bound in Run, once the pin table is loaded:
	// another agent may serve on it now (see lifecycle.go).
	if ephemeral(o.Listen) {
		if a.mirrorLn, err = listenShared(o.Listen); err != nil {
			return nil, fmt.Errorf("mirror listen on %s: %w", o.Listen, err)
		}
		o.Listen = a.mirrorLn.Addr().String()
		a.o = o
	}
	if a.hosts, err = newHosts(o); err != nil {
		return nil, err
	}
	a.report = containerdconfig.Check(o.ContainerdConfig, o.HostsDir)
	if a.report.OK {
		a.hostsOK.Set(1)
		a.log.WithFields(logrus.Fields{"config": o.ContainerdConfig, "version": a.report.Version, "configPath": a.report.ConfigPath}).Info("containerd will read our hosts.toml files")
	} else {
		a.hostsOK.Set(0)
		a.log.WithFields(logrus.Fields{"config": o.ContainerdConfig, "problems": a.report.Problems, "fix": a.report.Fix}).
			Error("containerd will IGNORE the hosts.toml files tagger writes: pins are not enforced on this node")
	}

	plain, err := pins.HostMatcher(o.PlainHTTPRegistries)
	if err != nil {
		return nil, err
	}
	strict, err := pins.HostMatcher(o.StrictRegistries)
	if err != nil {
		return nil, err
	}
	// No overall timeout: strict registries stream whole layers through it.
	up := registryclient.New(registryclient.Options{HTTPClient: httplimits.Upstream.HTTPClient(), PlainHTTP: plain, UserAgent: "tagger-node-agent"})
	bundled, err := bundledClient(o.RegistryURL, o.RegistryTokenFile)
	if err != nil {
		return nil, err
	}
	handler, err := mirror.New(mirror.Options{
		Table:       a.table,
		RegistryURL: o.RegistryURL,
		HTTPClient:  bundled,
		Upstream:    up.Anonymous(),
		Content:     up.Anonymous(),
		Strict:      strict,
		Metrics:     mirror.NewMetrics(reg),
		Log:         a.log.WithField("component", "mirror"),
	})
	if err != nil {
		return nil, fmt.Errorf("build mirror: %w", err)
	}
	var mirrorHandler http.Handler = handler
	if o.StartupTaint != "" && o.CRIEndpoint != "" {
		a.probe = hostsprobe.New()
		a.probing.Store(true)
		mirrorHandler = a.probe.Wrap(handler)
	}
	a.mirrorSrv = httplimits.Mirror.New(mirrorHandler)
	if o.MetricsAddr != "0" && o.MetricsAddr != "" {
		if err := a.listen(o.MetricsAddr, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), "metrics"); err != nil {
			return nil, err
		}
	}
	if o.HealthAddr != "0" && o.HealthAddr != "" {
		if err := a.listen(o.HealthAddr, a.healthHandler(), "health"); err != nil {
			return nil, err
		}
	}

	if o.CRIEndpoint != "" {
		if a.cri, err = repull.DialCRI(o.CRIEndpoint); err != nil {
			return nil, err
		}
		a.converger = repull.NewConverger(repull.Options{
			Images: a.cri, Workers: o.ConvergeWorkers, Metrics: repull.NewMetrics(reg),
			Log: a.log.WithField("component", "converger"),
		})
	}

	if a.gate, err = newStartupGate(cfg, o, reg, a.log.WithField("component", "startup-taint")); err != nil {
		return nil, err
	}
	if a.gate != nil && a.probe != nil {
		a.gate.confirm = a.confirmHostsRead
		// The probe's hosts.toml goes at the next rebuild.
		a.gate.finished = func() { a.probing.Store(false) }
	}

	scheme, err := v1alpha1.NewScheme()
	if err != nil {
		return nil, err
	}
	if a.cache, err = cache.New(cfg, cache.Options{
		Scheme:   scheme,
		ByObject: map[client.Object]cache.ByObject{&v1alpha1.Tag{}: {Transform: slimTag}},
	}); err != nil {
		return nil, fmt.Errorf("create Tag cache: %w", err)
	}
	return a, nil
}

// slimTag keeps only what the pin table is built from, so 10,000 Tags with
// long histories cost the node little memory: identity, spec.image, the
// served generation and its history entry.
func slimTag(obj any) (any, error) {
	t, ok := obj.(*v1alpha1.Tag)
	if !ok {
		return obj, nil
	}
	slim := &v1alpha1.Tag{
		TypeMeta: t.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name: t.Name, UID: t.UID, ResourceVersion: t.ResourceVersion,
			CreationTimestamp: t.CreationTimestamp, DeletionTimestamp: t.DeletionTimestamp,
		},
		Spec: v1alpha1.TagSpec{Image: t.Spec.Image},
		Status: v1alpha1.TagStatus{
			ServedGeneration: t.Status.ServedGeneration,
			ServedDigest:     t.Status.ServedDigest,
		},
	}
	if g, ok := pins.Find(t.Status.Generations, t.Status.ServedGeneration); ok {
		g.Platforms = nil
		slim.Status.Generations = []v1alpha1.Generation{g}
	}
	return slim, nil
}

type served struct {
	srv  *http.Server
	ln   net.Listener
	name string
}

func (a *Agent) listen(addr string, h http.Handler, name string) error {
	ln, err := listenShared(addr)
	if err != nil {
		return fmt.Errorf("%s listen on %s: %w", name, addr, err)
	}
	a.servers = append(a.servers, served{httplimits.Probes.New(h), ln, name})
	return nil
}

// Addr returns the bound address of the mirror, "metrics" or "health" server.
func (a *Agent) Addr(name string) string {
	if name == "mirror" {
		if a.mirrorLn == nil {
			return a.o.Listen // bound once Run has loaded the pins
		}
		return a.mirrorLn.Addr().String()
	}
	for _, s := range a.servers {
		if s.name == name {
			return s.ln.Addr().String()
		}
	}
	return ""
}

func (a *Agent) closeAll() {
	for _, s := range a.servers {
		_ = s.ln.Close()
	}
	if a.mirrorLn != nil {
		_ = a.mirrorLn.Close()
	}
	if a.cri != nil {
		_ = a.cri.Close()
	}
}

// Run serves until ctx is cancelled. The hosts.toml files stay when it
// returns, for the next agent to take over (lifecycle.go): meanwhile
// containerd keeps asking the (gone) mirror first and falls back to the
// upstream after dial_timeout (strict registries fail). Only `node-agent
// cleanup`, run by the chart's uninstall hook, removes them.
func (a *Agent) Run(ctx context.Context) error {
	defer a.closeAll()
	inf, err := a.cache.GetInformer(ctx, &v1alpha1.Tag{})
	if err != nil {
		return fmt.Errorf("Tag informer: %w", err)
	}
	kick := make(chan struct{}, 1)
	notify := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { notify() },
		UpdateFunc: func(any, any) { notify() },
		DeleteFunc: func(any) { notify() },
	}); err != nil {
		return fmt.Errorf("watch Tags: %w", err)
	}

	// stopping ends the agent's work; its own context (the Tag cache, the
	// servers) outlives it until drain and shutdown are done.
	stopping := ctx
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, len(a.servers)+2)
	go func() { errc <- a.cache.Start(ctx) }()
	for _, s := range a.servers {
		go func() { errc <- serve(s.srv, s.ln, s.name) }()
	}
	defer a.shutdown()
	go a.reportReady(ctx)

	if !a.cache.WaitForCacheSync(stopping) {
		return fmt.Errorf("Tag cache did not sync: %w", stopping.Err())
	}
	a.synced.Store(true)
	// The mirror serves only once the table holds every pin: an agent that
	// shares the port with the previous one must never answer with fewer.
	if _, ok := a.loadPins(ctx); !ok {
		return errors.New("load the pin table from the synced Tag cache")
	}
	if err := a.serveMirror(errc); err != nil {
		return err
	}
	if a.converger != nil {
		go a.converger.Run(ctx)
	}
	if a.gate != nil {
		go a.gate.run(ctx)
	}
	a.log.WithFields(logrus.Fields{"listen": a.o.Listen, "hostsDir": a.o.HostsDir, "registry": a.o.RegistryURL}).Info("node agent serving")

	// Rebuild on every Tag change, coalesced; and periodically, so a hosts.toml
	// removed by hand is rewritten.
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	recheck := time.NewTicker(hostsRecheck)
	defer recheck.Stop()
	notify()
	for {
		select {
		case <-stopping.Done():
			a.drain()
			return nil
		case err := <-errc:
			if err != nil {
				return err
			}
		case <-kick:
			a.rebuild(ctx)
		case <-tick.C:
			a.rebuild(ctx)
		case <-recheck.C:
			a.writeHosts(a.table.Load())
		}
	}
}

// rebuild recomputes the pin table from the cached Tags, then writes
// hosts.toml and queues convergence. The table is stored first: containerd
// must find the pin the moment it is told to ask us.
func (a *Agent) rebuild(ctx context.Context) {
	snap, ok := a.loadPins(ctx)
	if !ok {
		return
	}
	a.writeHosts(snap)
	if a.converger != nil {
		a.converger.Update(snap.Pins())
	}
	// The table is synced, hosts.toml written and containerd reads them:
	// the node may take pods.
	if a.gate != nil && len(a.NotReady()) == 0 {
		a.gate.markReady()
	}
}

// writeHosts makes the hosts dir match snap (a no-op on disk when it does),
// plus the startup probe's entry while the gate still needs it.
func (a *Agent) writeHosts(snap *pins.Snapshot) {
	registries := snap.Registries()
	if a.probing.Load() {
		registries = append(slices.Clone(registries), hostsprobe.Host) // the snapshot's slice is shared
	}
	if err := a.hosts.Sync(registries); err != nil {
		msg := err.Error()
		a.lastSyncErr.Store(&msg)
		a.log.WithError(err).Error("write hosts.toml")
	} else {
		a.lastSyncErr.Store(nil)
		a.hostsSynced.Store(true)
	}
}

// NotReady lists why the agent is not ready; empty means ready: the Tag
// cache has synced, hosts.toml is written, and containerd will read it.
func (a *Agent) NotReady() []string {
	var problems []string
	if !a.synced.Load() {
		problems = append(problems, "Tag cache not synced")
	}
	if !a.hostsSynced.Load() {
		problems = append(problems, "hosts.toml not written yet")
	}
	if e := a.lastSyncErr.Load(); e != nil {
		problems = append(problems, "last hosts.toml write failed: "+*e)
	}
	if !a.serving.Load() {
		problems = append(problems, "mirror not serving yet")
	}
	if !a.report.OK {
		problems = append(problems, fmt.Sprintf("containerd ignores hosts.toml (%v); fix: %s", a.report.Problems, a.report.Fix))
	}
	return problems
}

// ConvergencePending lists pinned refs whose local image record is not yet
// at the served digest.
func (a *Agent) ConvergencePending() []string {
	if a.converger == nil {
		return nil
	}
	return a.converger.Pending()
}

// Pins returns the current pin snapshot.
func (a *Agent) Pins() *pins.Snapshot { return a.table.Load() }

func (a *Agent) healthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if problems := a.NotReady(); len(problems) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			for _, p := range problems {
				fmt.Fprintln(w, p)
			}
			return
		}
		fmt.Fprintf(w, "ok: %d pins\n", a.table.Load().Len())
	})
	return mux
}

func serve(s *http.Server, ln net.Listener, name string) error {
	if err := s.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("%s server: %w", name, err)
	}
	return nil
}

// bundledClient is the mirror's client for the bundled registry: nil (the
// mirror's default) without a token file; with one, authenticating with the
// node agent's ServiceAccount token and caching the registry's tokens, so
// a pull costs no token fetch in the steady state.
func bundledClient(registry, tokenFile string) (*http.Client, error) {
	if tokenFile == "" || registry == "" {
		return nil, nil
	}
	hc := httplimits.InCluster.HTTPClient()
	ta, err := registryclient.NewTokenAuth(registry, hc.Transport, registryclient.ServiceAccountToken(tokenFile), "tagger-node-agent")
	if err != nil {
		return nil, err
	}
	hc.Transport = ta
	return hc, nil
}
