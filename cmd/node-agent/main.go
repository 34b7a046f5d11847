// Command node-agent runs on every node: it serves the pin-aware mirror
// containerd asks first, writes containerd's hosts.toml files, and keeps the
// node's local image records at the served digests.
//
//	node-agent [flags]                   run
//	node-agent cleanup [flags]           remove our hosts.toml files, restore the backups
//	node-agent cleanup --hold [flags]    the same, then report ready and hold until SIGTERM (uninstall hook)
//	node-agent cleanup-wait [flags]      wait until every node's cleanup hook pod is done (uninstall hook)
//	node-agent ready-check [flags]       exec probe: is this container's agent ready (or alive)?
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/tagger-project/tagger/internal/daemonflags"
	"github.com/tagger-project/tagger/pkg/node"
	"github.com/tagger-project/tagger/pkg/node/cleanupwait"
	"github.com/tagger-project/tagger/pkg/node/readyfile"
	"github.com/tagger-project/tagger/pkg/version"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "node-agent:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	sub := ""
	if len(args) > 0 {
		switch args[0] {
		case "cleanup", "cleanup-wait", "ready-check":
			sub, args = args[0], args[1:]
		}
	}
	switch sub {
	case "cleanup-wait":
		return cleanupWait(args)
	case "ready-check":
		return readyCheck(args)
	}
	o := node.DefaultOptions()
	fs := flag.NewFlagSet("node-agent", flag.ContinueOnError)
	var common daemonflags.Common
	common.Register(fs)
	strict := fs.String("strict-registries", "", "comma-separated registry patterns with no upstream fallback: pulls fail when the agent is down")
	plain := fs.String("plain-http-registries", "", "comma-separated registry patterns whose upstream is plain http://")
	fs.StringVar(&o.Listen, "listen", o.Listen, "mirror listen address (containerd asks it first)")
	fs.StringVar(&o.MetricsAddr, "metrics-addr", o.MetricsAddr, "Prometheus metrics listen address (\"0\" disables)")
	fs.StringVar(&o.HealthAddr, "health-addr", o.HealthAddr, "/healthz and /readyz listen address (\"0\" disables)")
	fs.StringVar(&o.HostsDir, "hosts-dir", o.HostsDir, "containerd registry hosts directory (its config_path)")
	fs.StringVar(&o.ContainerdConfig, "containerd-config", o.ContainerdConfig, "containerd config file, checked at start")
	fs.StringVar(&o.CRIEndpoint, "cri-endpoint", o.CRIEndpoint, "CRI socket for local image convergence (\"\" disables)")
	fs.StringVar(&o.RegistryURL, "registry-url", o.RegistryURL, "URL of the bundled registry")
	fs.StringVar(&o.RegistryTokenFile, "registry-token-file", o.RegistryTokenFile, "projected ServiceAccount token presented to the bundled registry's token issuer (\"\": no authentication)")
	fs.DurationVar(&o.DialTimeout, "dial-timeout", o.DialTimeout, "dial_timeout on our hosts.toml entry: how fast containerd falls back when the agent is down")
	fs.IntVar(&o.ConvergeWorkers, "converge-workers", o.ConvergeWorkers, "concurrent CRI pulls when converging local images")
	fs.StringVar(&o.ReadyFile, "ready-file", o.ReadyFile, "file this process writes its readiness to, for `node-agent ready-check` (\"\" disables)")
	fs.DurationVar(&o.ShutdownDelay, "shutdown-delay", o.ShutdownDelay, "on SIGTERM, keep serving the mirror this long before closing it (the next agent pod already serves on the same port)")
	var hold node.HoldOptions
	holding := false
	if sub == "cleanup" {
		fs.BoolVar(&holding, "hold", false, "after restoring, report ready through --ready-file and hold (repeating the restore) until SIGTERM")
		fs.DurationVar(&hold.Interval, "hold-interval", 5*time.Second, "with --hold: how often the restore repeats")
	}
	fs.StringVar(&o.StartupTaint, "startup-taint", o.StartupTaint, "taint key removed from this node once the agent serves pins (\"\" disables)")
	fs.StringVar(&o.NodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if common.Version {
		fmt.Println(version.Line("node-agent"))
		return nil
	}
	o.StrictRegistries, o.PlainHTTPRegistries = daemonflags.List(*strict), daemonflags.List(*plain)
	if sub == "cleanup" && !holding {
		return node.Cleanup(o)
	}
	log, err := common.Logger()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if sub == "cleanup" {
		if o.ReadyFile == "" {
			return fmt.Errorf("cleanup --hold needs --ready-file")
		}
		hold.ReadyFile = o.ReadyFile
		return node.CleanupHold(ctx, o, hold, log)
	}
	cfg, err := common.RESTConfig()
	if err != nil {
		return err
	}
	return node.Run(ctx, cfg, o, log)
}

// cleanupWait is the uninstall hook's waiter Job.
func cleanupWait(args []string) error {
	fs := flag.NewFlagSet("node-agent cleanup-wait", flag.ContinueOnError)
	var common daemonflags.Common
	common.Register(fs)
	o := cleanupwait.Options{}
	fs.StringVar(&o.Namespace, "namespace", os.Getenv("POD_NAMESPACE"), "namespace of the cleanup DaemonSet (default $POD_NAMESPACE)")
	fs.StringVar(&o.DaemonSet, "daemonset", "", "name of the cleanup DaemonSet")
	fs.StringVar(&o.AgentSelector, "agent-selector", "", "label selector of the node agent's pods: done only once none is left")
	fs.DurationVar(&o.Timeout, "timeout", 5*time.Minute, "give up after this long, naming the nodes not done")
	fs.DurationVar(&o.Interval, "interval", 2*time.Second, "polling period")
	fs.DurationVar(&o.Settle, "settle", 0, "how long everything must stay done (set it above the cleanup pods' --hold-interval)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.Namespace == "" || o.DaemonSet == "" {
		return fmt.Errorf("cleanup-wait needs --namespace (or $POD_NAMESPACE) and --daemonset")
	}
	log, err := common.Logger()
	if err != nil {
		return err
	}
	cfg, err := common.RESTConfig()
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("build Kubernetes client: %w", err)
	}
	o.Log = log
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return cleanupwait.Wait(ctx, cs, o)
}

// readyCheck is the exec probe of the agent and of the cleanup hook pods.
func readyCheck(args []string) error {
	fs := flag.NewFlagSet("node-agent ready-check", flag.ContinueOnError)
	file := fs.String("ready-file", node.DefaultOptions().ReadyFile, "the file the process writes its readiness to")
	maxAge := fs.Duration("max-age", 0, "fail when the file is older than this (0: any age)")
	live := fs.Bool("live", false, "liveness: only check that the process still updates the file, ready or not")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return readyfile.Check(*file, *maxAge, !*live, time.Now())
}
