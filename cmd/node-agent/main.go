// Command node-agent runs on every node: it serves the pin-aware mirror
// containerd asks first, writes containerd's hosts.toml files, and keeps the
// node's local image records at the served digests.
//
//	node-agent [flags]           run
//	node-agent cleanup [flags]   remove our hosts.toml files, restore the backups
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/tagger-project/tagger/internal/daemonflags"
	"github.com/tagger-project/tagger/pkg/node"
	"github.com/tagger-project/tagger/pkg/version"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "node-agent:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	cleanup := len(args) > 0 && args[0] == "cleanup"
	if cleanup {
		args = args[1:]
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
	fs.DurationVar(&o.DialTimeout, "dial-timeout", o.DialTimeout, "dial_timeout on our hosts.toml entry: how fast containerd falls back when the agent is down")
	fs.IntVar(&o.ConvergeWorkers, "converge-workers", o.ConvergeWorkers, "concurrent CRI pulls when converging local images")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if common.Version {
		fmt.Println(version.Line("node-agent"))
		return nil
	}
	o.StrictRegistries, o.PlainHTTPRegistries = daemonflags.List(*strict), daemonflags.List(*plain)
	if cleanup {
		return node.Cleanup(o)
	}
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
	return node.Run(ctx, cfg, o, log)
}
