package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/tagger-project/tagger/pkg/controllerd"
	"github.com/tagger-project/tagger/pkg/logging"
)

// wrapperCommand re-runs this program as a controller process (-kube-api-qps).
const wrapperCommand = "run-controller"

// controllerMain runs controllerd.Run exactly as cmd/controller does, with
// the flags the benchmark uses, except that the Kubernetes client's
// client-side rate limit is set from --kube-api-qps and --kube-api-burst.
// cmd/controller has no such flag and builds its rest.Config with
// clientcmd, which leaves QPS 0: client-go then applies its default of 5
// requests/s (burst 10). This is the what-if the benchmark uses to show what
// the controller does without that limit; it is not the shipped binary.
func controllerMain(args []string) int {
	o := controllerd.DefaultOptions()
	fs := flag.NewFlagSet(wrapperCommand, flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "", "path to a kubeconfig")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level")
	plainHTTP := fs.String("plain-http-registries", "", "comma-separated registry hosts reached over http://")
	qps := fs.Float64("kube-api-qps", -1, "client-side Kubernetes API requests/s (-1: no client-side limit)")
	burst := fs.Int("kube-api-burst", 0, "client-side Kubernetes API burst")
	fs.StringVar(&o.MetricsAddr, "metrics-addr", o.MetricsAddr, "metrics listen address")
	fs.StringVar(&o.HealthAddr, "health-addr", o.HealthAddr, "health listen address")
	fs.StringVar(&o.WebhookAddr, "webhook-addr", o.WebhookAddr, "webhook listen address")
	fs.StringVar(&o.WebhookSecret, "webhook-secret", o.WebhookSecret, "namespace/name of the webhook Secret")
	fs.IntVar(&o.MaxConcurrentChecks, "max-concurrent-checks", o.MaxConcurrentChecks, "Tags reconciled at once")
	fs.Float64Var(&o.RegistryQPS, "registry-qps", o.RegistryQPS, "upstream requests per second per registry host")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *plainHTTP != "" {
		o.PlainHTTPRegistries = strings.Split(*plainHTTP, ",")
	}
	log, err := logging.New(os.Stderr, *logFormat, *logLevel)
	if err != nil {
		fmt.Fprintln(os.Stderr, "controller:", err)
		return 1
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		fmt.Fprintln(os.Stderr, "controller: load kubeconfig:", err)
		return 1
	}
	cfg.QPS, cfg.Burst = float32(*qps), *burst
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := controllerd.Run(ctx, cfg, o, log); err != nil {
		fmt.Fprintln(os.Stderr, "controller:", err)
		return 1
	}
	return 0
}
