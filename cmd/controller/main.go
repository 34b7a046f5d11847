// Command controller runs the tagger controller: it records a generation each
// time an upstream tag moves and chooses the generation every node serves.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/tagger-project/tagger/internal/daemonflags"
	"github.com/tagger-project/tagger/pkg/controller"
	"github.com/tagger-project/tagger/pkg/version"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "controller:", err)
		os.Exit(1)
	}
}

func run() error {
	o := controller.DefaultOptions()
	fs := flag.NewFlagSet("controller", flag.ContinueOnError)
	var common daemonflags.Common
	common.Register(fs)
	plainHTTP := fs.String("plain-http-registries", "", "comma-separated registry hosts reached over http:// instead of https://")
	fs.StringVar(&o.MetricsAddr, "metrics-addr", o.MetricsAddr, "Prometheus metrics listen address (\"0\" disables)")
	fs.StringVar(&o.HealthAddr, "health-addr", o.HealthAddr, "/healthz and /readyz listen address (\"0\" disables)")
	fs.BoolVar(&o.LeaderElect, "leader-elect", o.LeaderElect, "elect a leader so only one replica reconciles")
	fs.StringVar(&o.LeaderElectionNamespace, "leader-election-namespace", o.LeaderElectionNamespace, "namespace of the leader election Lease")
	fs.IntVar(&o.MaxConcurrentChecks, "max-concurrent-checks", o.MaxConcurrentChecks, "Tags reconciled (and upstream checks in flight) at once")
	kubeQPS := fs.Float64("kube-api-qps", float64(o.KubeAPIQPS), "requests per second to the apiserver (each check writes a status)")
	fs.IntVar(&o.KubeAPIBurst, "kube-api-burst", o.KubeAPIBurst, "burst of requests to the apiserver")
	fs.StringVar(&o.RegistryURL, "registry-url", o.RegistryURL, "bundled registry that Tags with spec.cache are copied into (\"\" disables caching)")
	fs.StringVar(&o.RegistryTokenFile, "registry-token-file", o.RegistryTokenFile, "projected ServiceAccount token presented to the bundled registry's token issuer (\"\": no authentication)")
	ra := &o.RegistryAuth
	fs.StringVar(&ra.Addr, "registry-auth-addr", ra.Addr, "listen address of the bundled registry's token issuer, the registry's auth.token.realm (\"0\" disables)")
	fs.StringVar(&ra.KeyFile, "registry-auth-key-file", ra.KeyFile, "PEM private key the issuer signs registry tokens with (re-read when it changes)")
	fs.StringVar(&ra.Audience, "registry-auth-audience", ra.Audience, "audience the presented ServiceAccount tokens must be bound to")
	fs.StringVar(&ra.Service, "registry-auth-service", ra.Service, "the registry's auth.token.service (aud of issued tokens)")
	fs.StringVar(&ra.Issuer, "registry-auth-issuer", ra.Issuer, "the registry's auth.token.issuer (iss of issued tokens)")
	fs.DurationVar(&ra.TTL, "registry-auth-token-ttl", ra.TTL, "lifetime of issued registry tokens")
	pushers := fs.String("registry-auth-pushers", "", "comma-separated users (system:serviceaccount:<ns>:<name>) that may pull, push and delete in the bundled registry")
	pullers := fs.String("registry-auth-pullers", "", "comma-separated users that may only pull from the bundled registry")
	fs.IntVar(&o.MaxConcurrentCaches, "max-concurrent-caches", o.MaxConcurrentCaches, "Tags copied into the bundled registry at once (the caching controller's workers, apart from the checks)")
	fs.IntVar(&o.MaxConcurrentCopies, "max-concurrent-copies", o.MaxConcurrentCopies, "blobs in flight per copy into the bundled registry")
	fs.StringVar(&o.WebhookAddr, "webhook-addr", o.WebhookAddr, "registry webhook receivers listen address (\"0\" disables)")
	fs.StringVar(&o.WebhookSecret, "webhook-secret", o.WebhookSecret, "namespace/name of the Secret with per-provider webhook secrets (keys dockerhub, quay, github, harbor, generic)")
	fs.DurationVar(&o.WebhookSecretRefresh, "webhook-secret-refresh", o.WebhookSecretRefresh, "how often the webhook Secret is re-read so a rotated secret takes effect (0: read once at start)")
	fs.DurationVar(&o.WebhookCoalesce, "webhook-coalesce", o.WebhookCoalesce, "after a webhook-triggered check of a Tag, merge further notifications for it for this long (identical payloads are dropped, others get one trailing check)")
	fs.BoolVar(&o.DockerHubCallback, "dockerhub-callback", o.DockerHubCallback, "report check results to Docker Hub's callback_url")
	fs.Float64Var(&o.RegistryQPS, "registry-qps", o.RegistryQPS, "upstream requests per second per registry host")
	fs.IntVar(&o.RegistryBurst, "registry-burst", o.RegistryBurst, "upstream requests a registry may get at once (0: one second's worth)")
	fs.Float64Var(&o.RestartQPS, "restart-qps", o.RestartQPS, "workload restart patches per second (spec.rollout.restart)")
	fs.IntVar(&o.RestartBurst, "restart-burst", o.RestartBurst, "burst of workload restart patches")
	fs.StringVar(&o.PullSecretNamespace, "pull-secret-namespace", o.PullSecretNamespace, "the only namespace Tags may name pull Secrets in (spec.pullSecretRef); \"\": any namespace, which needs get on Secrets cluster-wide")
	fs.DurationVar(&o.UpstreamTimeout, "upstream-timeout", o.UpstreamTimeout, "timeout of one upstream registry request")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	if common.Version {
		fmt.Println(version.Line("controller"))
		return nil
	}
	o.PlainHTTPRegistries = daemonflags.List(*plainHTTP)
	o.KubeAPIQPS = float32(*kubeQPS)
	ra.Pushers, ra.Pullers = daemonflags.List(*pushers), daemonflags.List(*pullers)
	log, err := common.Logger()
	if err != nil {
		return err
	}
	cfg, err := common.RESTConfig()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return controller.Run(ctx, cfg, o, log)
}
