// Package controller assembles the tagger controller process: the manager,
// leader election, health and metrics endpoints, the upstream client and the
// three Tag controllers (check-and-serve, caching, workload restarts), each
// with its own workers so long copies and restart waves never hold up a check. cmd/controller only parses flags and calls Run; tests and
// the demo run the same code in-process.
package controller

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	ctrlcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/pkg/controller/cache"
	"github.com/tagger-project/tagger/pkg/controller/check"
	"github.com/tagger-project/tagger/pkg/controller/imagecopy"
	"github.com/tagger-project/tagger/pkg/controller/ratelimit"
	"github.com/tagger-project/tagger/pkg/controller/registryauth"
	"github.com/tagger-project/tagger/pkg/controller/registryprobe"
	"github.com/tagger-project/tagger/pkg/controller/restart"
	"github.com/tagger-project/tagger/pkg/hooks"
	"github.com/tagger-project/tagger/pkg/httplimits"
	"github.com/tagger-project/tagger/pkg/pins"
	"github.com/tagger-project/tagger/pkg/registryclient"
)

// Options configure the controller process.
type Options struct {
	MetricsAddr             string // "0" disables
	HealthAddr              string // "0" disables
	LeaderElect             bool
	LeaderElectionNamespace string
	LeaderElectionID        string
	MaxConcurrentChecks     int
	// MaxConcurrentCaches bounds the Tags copied into the bundled registry
	// at once (the caching controller's workers).
	MaxConcurrentCaches int
	// PlainHTTPRegistries are registry hosts reached over http:// (in-cluster
	// or test registries); every other registry is https. Entries are
	// path.Match patterns ("127.0.0.1:*", "*.svc.cluster.local:5000").
	PlainHTTPRegistries []string
	// UpstreamTimeout bounds one upstream request.
	UpstreamTimeout time.Duration
	// KubeAPIQPS and KubeAPIBurst bound the controller's requests to the
	// apiserver; every check writes a status, so they bound checks/s too.
	KubeAPIQPS   float32
	KubeAPIBurst int
	// RegistryURL is the bundled registry Tags with spec.cache are copied
	// into ("" disables caching).
	RegistryURL string
	// RegistryTokenFile is the projected ServiceAccount token the controller
	// presents to the bundled registry's token issuer ("": the registry is
	// reached without authentication).
	RegistryTokenFile string
	// RegistryAuth configures the bundled registry's token issuer, served
	// by every replica (docs/design.md, "Bundled registry authentication").
	RegistryAuth registryauth.Options
	// MaxConcurrentCopies bounds the blobs in flight per copy.
	MaxConcurrentCopies int
	// WebhookAddr serves the registry webhook receivers ("0" disables).
	WebhookAddr string
	// WebhookSecret is "namespace/name" of the Secret holding per-provider
	// webhook secrets (keys dockerhub, quay, github, harbor, generic); a
	// provider without a key is disabled.
	WebhookSecret string
	// WebhookSecretRefresh is how often the webhook Secret is re-read, so a
	// rotation takes effect without a restart (0: read once).
	WebhookSecretRefresh time.Duration
	// WebhookCoalesce is the window after a Tag's webhook-triggered check
	// in which further notifications for it are merged.
	WebhookCoalesce time.Duration
	// DockerHubCallback posts the result to Docker Hub's callback_url.
	DockerHubCallback bool
	// RegistryQPS and RegistryBurst bound upstream requests per registry host.
	RegistryQPS   float64
	RegistryBurst int
	// PullSecretNamespace confines the pull Secrets Tags may name
	// (spec.pullSecretRef) to this one namespace: a Tag naming a Secret
	// elsewhere fails its checks with PullSecretNotAllowed, and the
	// manager's cache may hold Secrets of this namespace only. "": any
	// namespace (the chart's pullSecrets.scope=cluster).
	PullSecretNamespace string
	// RestartQPS and RestartBurst bound workload restart patches.
	RestartQPS   float64
	RestartBurst int
}

// DefaultOptions are the flag defaults.
func DefaultOptions() Options {
	return Options{
		MetricsAddr:             ":8443",
		HealthAddr:              ":8081",
		WebhookAddr:             ":8080",
		WebhookSecretRefresh:    time.Minute,
		WebhookCoalesce:         hooks.DefaultCoalesce,
		KubeAPIQPS:              50,
		KubeAPIBurst:            100,
		MaxConcurrentCopies:     imagecopy.DefaultMaxConcurrent,
		LeaderElectionNamespace: "tagger-system",
		LeaderElectionID:        "tagger-controller.tagger.dev",
		MaxConcurrentChecks:     8,
		MaxConcurrentCaches:     cache.DefaultMaxConcurrent,
		UpstreamTimeout:         30 * time.Second,
		RegistryQPS:             ratelimit.DefaultRegistryQPS,
		RestartQPS:              float64(restart.DefaultQPS),
		RestartBurst:            restart.DefaultBurst,
		RegistryAuth: registryauth.Options{
			Addr: "0", Audience: registryauth.DefaultAudience, TTL: registryauth.DefaultTTL,
			Service: "tagger-registry", Issuer: "tagger-controller",
		},
	}
}

// copyMetrics registers the copy metrics once per process (Run may be called
// more than once in one process by tests).
var copyMetrics = sync.OnceValue(func() *imagecopy.Metrics { return imagecopy.NewMetrics(metrics.Registry) })

// Run runs the controller until ctx is cancelled.
func Run(ctx context.Context, cfg *rest.Config, o Options, log *logrus.Logger) error {
	if o.MaxConcurrentChecks < 1 {
		return fmt.Errorf("--max-concurrent-checks must be at least 1, got %d", o.MaxConcurrentChecks)
	}
	if o.MaxConcurrentCaches < 1 {
		return fmt.Errorf("--max-concurrent-caches must be at least 1, got %d", o.MaxConcurrentCaches)
	}
	// client-go's default (5/s, burst 10) would cap the controller at about
	// five checks a second, whatever the upstream allows.
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = o.KubeAPIQPS, o.KubeAPIBurst
	scheme, err := v1alpha1.NewScheme()
	if err != nil {
		return err
	}
	metricsAddr := o.MetricsAddr
	mgr, err := ctrl.NewManager(cfg, manager.Options{
		Scheme:                  scheme,
		Metrics:                 metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress:  o.HealthAddr,
		LeaderElection:          o.LeaderElect,
		LeaderElectionNamespace: o.LeaderElectionNamespace,
		LeaderElectionID:        o.LeaderElectionID,
		// Release the lease on shutdown so a new leader takes over at once.
		LeaderElectionReleaseOnCancel: true,
		// managedFields are a large share of every cached object and never
		// read here (status writes are Updates, the rest merge patches).
		Cache: cacheOptions(o),
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return fmt.Errorf("add healthz check: %w", err)
	}
	if err := mgr.AddReadyzCheck("informers", func(req *http.Request) error {
		if !mgr.GetCache().WaitForCacheSync(req.Context()) {
			return fmt.Errorf("Tag cache not synced")
		}
		return nil
	}); err != nil {
		return fmt.Errorf("add readyz check: %w", err)
	}

	plain, err := pins.HostMatcher(o.PlainHTTPRegistries)
	if err != nil {
		return err
	}
	if o.RegistryQPS <= 0 {
		return fmt.Errorf("--registry-qps must be above 0, got %v", o.RegistryQPS)
	}
	// One check in flight per repository, a token bucket per registry, and a
	// registry's Retry-After honoured for every Tag of that registry.
	upstream := httplimits.Upstream
	upstream.Total = o.UpstreamTimeout
	resolver := ratelimit.New(registryclient.New(registryclient.Options{
		HTTPClient: upstream.HTTPClient(),
		PlainHTTP:  plain,
		UserAgent:  "tagger-controller",
	}), ratelimit.Options{RegistryQPS: o.RegistryQPS, Burst: o.RegistryBurst, Metrics: metrics.Registry})
	if err := addControllers(ctx, mgr, o, resolver, plain, log); err != nil {
		return err
	}
	if err := addWebhooks(ctx, mgr, o, log); err != nil {
		return err
	}
	if o.RegistryAuth.Enabled() {
		srv, err := registryauth.NewServer(cfg, o.RegistryAuth, log.WithField("component", "registry-auth"))
		if err != nil {
			return err
		}
		if err := mgr.Add(srv); err != nil {
			return fmt.Errorf("add registry token issuer: %w", err)
		}
	}
	log.WithFields(logrus.Fields{"metrics": metricsAddr, "health": o.HealthAddr, "leaderElect": o.LeaderElect}).Info("starting tagger controller")
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("run manager: %w", err)
	}
	return nil
}

// cacheOptions strips managedFields, a large share of every cached object
// that is never read here (status writes are Updates, the rest merge
// patches). With a pull-secret namespace it also confines Secrets to it:
// pull Secrets are read uncached by name, so no Secret informer runs, and
// should a cached read of a Secret ever be added, it could not start a
// cluster-wide list and watch the controller's RBAC does not grant.
func cacheOptions(o Options) ctrlcache.Options {
	opts := ctrlcache.Options{DefaultTransform: ctrlcache.TransformStripManagedFields()}
	if o.PullSecretNamespace != "" {
		opts.ByObject = map[client.Object]ctrlcache.ByObject{
			&corev1.Secret{}: {Namespaces: map[string]ctrlcache.Config{o.PullSecretNamespace: {}}},
		}
	}
	return opts
}

// restartWorkers is the restart controller's workers: waves share one
// rate limit (--restart-qps), so more would only queue on it.
const restartWorkers = 2

// addControllers sets up the three Tag controllers. They share the
// manager's cache and one Event recorder; each writes only its own status
// fields (docs/design.md, "Controllers").
func addControllers(ctx context.Context, mgr manager.Manager, o Options, resolver check.Resolver, plain func(string) bool, log *logrus.Logger) error {
	recorder := mgr.GetEventRecorder("tagger-controller")
	checker := &check.Reconciler{
		Client:       mgr.GetClient(),
		SecretReader: mgr.GetAPIReader(),
		APIReader:    mgr.GetAPIReader(),
		Resolver:     resolver,
		Recorder:     recorder,
		Log:          log.WithField("component", "tag-controller"),

		// Checked before any read: a Secret elsewhere is refused unread.
		PullSecretNamespace: o.PullSecretNamespace,
	}
	if err := checker.SetupWithManager(ctx, mgr, o.MaxConcurrentChecks); err != nil {
		return fmt.Errorf("set up Tag check-and-serve controller: %w", err)
	}
	cacher := &cache.Reconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Recorder:  recorder,
		Log:       log.WithField("component", "cache-controller"),

		PullSecretNamespace: o.PullSecretNamespace,
	}
	if o.RegistryURL != "" {
		hc, err := bundledClient(o.RegistryURL, o.RegistryTokenFile, "tagger-controller")
		if err != nil {
			return err
		}
		cacher.Copier = &imagecopy.Copier{
			// No overall timeout: a layer streams within one request; the
			// copy's context bounds it.
			Upstream:      registryclient.New(registryclient.Options{HTTPClient: httplimits.Upstream.HTTPClient(), PlainHTTP: plain, UserAgent: "tagger-controller"}),
			Registry:      strings.TrimRight(o.RegistryURL, "/"),
			HTTPClient:    hc,
			MaxConcurrent: o.MaxConcurrentCopies,
			Metrics:       copyMetrics(),
			Log:           log.WithField("component", "copy"),
		}
	}
	if err := addRegistryProbe(mgr, o, log); err != nil {
		return err
	}
	if err := cacher.SetupWithManager(mgr, o.MaxConcurrentCaches); err != nil {
		return fmt.Errorf("set up Tag caching controller: %w", err)
	}
	restarter := &restart.Reconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		// Workload informers start on the first restart wave, not before.
		Waver: &restart.Restarter{
			Client: mgr.GetClient(), Recorder: recorder,
			QPS: rate.Limit(o.RestartQPS), Burst: o.RestartBurst,
			Log: log.WithField("component", "rollout"),
		},
		Log: log.WithField("component", "restart-controller"),
	}
	if err := restarter.SetupWithManager(mgr, restartWorkers); err != nil {
		return fmt.Errorf("set up Tag restart controller: %w", err)
	}
	return nil
}

// bundledClient is the HTTP client for the bundled registry: without a
// token file, nil (the copier's default); with one, authenticating with the
// ServiceAccount token at tokenFile and caching the registry's tokens.
func bundledClient(registry, tokenFile, userAgent string) (*http.Client, error) {
	if tokenFile == "" {
		return nil, nil
	}
	hc := httplimits.InCluster.HTTPClient()
	ta, err := registryclient.NewTokenAuth(registry, hc.Transport, registryclient.ServiceAccountToken(tokenFile), userAgent)
	if err != nil {
		return nil, err
	}
	hc.Transport = ta
	return hc, nil
}

// addRegistryProbe exports whether the bundled registry answers
// (tagger_bundled_registry_up), on every replica.
func addRegistryProbe(mgr manager.Manager, o Options, log *logrus.Logger) error {
	if o.RegistryURL == "" {
		return nil
	}
	if err := mgr.Add(registryprobe.New(o.RegistryURL, log.WithField("component", "registry-probe"))); err != nil {
		return fmt.Errorf("add bundled registry probe: %w", err)
	}
	return nil
}

// addWebhooks runs the webhook receivers on every replica (not only the
// leader): a hook only patches the Tag's check annotation, which the leader
// then acts on.
func addWebhooks(ctx context.Context, mgr manager.Manager, o Options, log *logrus.Logger) error {
	if o.WebhookAddr == "" || o.WebhookAddr == "0" {
		return nil
	}
	var secrets hooks.Secrets
	var key client.ObjectKey
	if o.WebhookSecret != "" {
		ns, name, ok := strings.Cut(o.WebhookSecret, "/")
		if !ok || ns == "" || name == "" {
			return fmt.Errorf("--webhook-secret %q: want namespace/name", o.WebhookSecret)
		}
		key = client.ObjectKey{Namespace: ns, Name: name}
		var err error
		// Missing or unreadable at start is fatal: a receiver that silently
		// refuses every delivery is worse than a crash loop that says why.
		if secrets, err = readWebhookSecrets(ctx, mgr.GetAPIReader(), key); err != nil {
			return err
		}
	}
	srv, err := hooks.New(hooks.Options{
		Client:            mgr.GetClient(),
		Secrets:           secrets,
		DockerHubCallback: o.DockerHubCallback,
		Coalesce:          o.WebhookCoalesce,
		Log:               log.WithField("component", "webhooks"),
		Metrics:           metrics.Registry,
	})
	if err != nil {
		return fmt.Errorf("webhook receivers: %w", err)
	}
	if err := mgr.Add(srv); err != nil {
		return fmt.Errorf("add webhook worker: %w", err)
	}
	if key.Name != "" && o.WebhookSecretRefresh > 0 {
		r := &secretRefresher{reader: mgr.GetAPIReader(), key: key, every: o.WebhookSecretRefresh, current: secrets, srv: srv,
			log: log.WithFields(logrus.Fields{"component": "webhooks", "secret": key.String()})}
		if err := mgr.Add(r); err != nil {
			return fmt.Errorf("add webhook secret refresher: %w", err)
		}
	}
	ln, err := net.Listen("tcp", o.WebhookAddr)
	if err != nil {
		return fmt.Errorf("webhook listen on %s: %w", o.WebhookAddr, err)
	}
	hs := httplimits.Webhooks.New(srv.Handler())
	return mgr.Add(webhookServer{hs, httplimits.RewriteErrors(ln, hooks.ServerError)})
}

// readWebhookSecrets reads the webhook Secret by name (uncached: the
// controller may not list or watch Secrets).
func readWebhookSecrets(ctx context.Context, r client.Reader, key client.ObjectKey) (hooks.Secrets, error) {
	var sec corev1.Secret
	if err := r.Get(ctx, key, &sec); err != nil {
		return hooks.Secrets{}, fmt.Errorf("read webhook secret %s: %w", key, err)
	}
	return hooks.LoadSecrets(sec.Data), nil
}

// secretRefresher re-reads the webhook Secret periodically, so a rotated
// secret takes effect without a restart. A failed read keeps the secrets in
// use (a deleted Secret does not open or close any endpoint by accident).
type secretRefresher struct {
	reader  client.Reader
	key     client.ObjectKey
	every   time.Duration
	current hooks.Secrets
	srv     *hooks.Server
	log     logrus.FieldLogger
}

func (r *secretRefresher) NeedLeaderElection() bool { return false }

func (r *secretRefresher) Start(ctx context.Context) error {
	t := time.NewTicker(r.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		sec, err := readWebhookSecrets(ctx, r.reader, r.key)
		if err != nil {
			if ctx.Err() == nil {
				r.log.WithError(err).Warn("webhook secret refresh failed; keeping the secrets in use")
			}
			continue
		}
		if sec != r.current {
			r.current = sec
			r.srv.SetSecrets(sec)
			r.log.WithField("providers", sec.String()).Info("webhook secrets changed; now in use")
		}
	}
}

// webhookServer serves until the manager stops; it runs without leadership.
type webhookServer struct {
	srv *http.Server
	ln  net.Listener
}

func (w webhookServer) NeedLeaderElection() bool { return false }

func (w webhookServer) Start(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- w.srv.Serve(w.ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("webhook server: %w", err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return w.srv.Shutdown(sctx)
	}
}
