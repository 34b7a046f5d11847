// Package daemonflags holds the flags every tagger daemon shares
// (--kubeconfig, --log-format, --log-level, --version) and turns them into a logger and
// a Kubernetes client config, so each cmd/ main only wires its own options.
package daemonflags

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/sirupsen/logrus"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/tagger-project/tagger/pkg/logging"
)

// Common are the shared flag values.
type Common struct {
	Kubeconfig, LogFormat, LogLevel string
	// Version asks the daemon to print its build (pkg/version) and exit.
	Version bool
}

// Register adds the shared flags to fs.
func (c *Common) Register(fs *flag.FlagSet) {
	fs.StringVar(&c.Kubeconfig, "kubeconfig", "", "path to a kubeconfig; in-cluster config when empty")
	fs.StringVar(&c.LogFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.BoolVar(&c.Version, "version", false, "print the version, commit, build date and Go version, then exit")
}

// Logger builds the logger the flags ask for.
//
// It is the process's logger: controller-runtime and client-go (klog) log
// through it too. That is set here, once, before the process starts any
// client, since both are process-wide and swapping them under running
// goroutines is a data race.
func (c *Common) Logger() (*logrus.Logger, error) {
	log, err := logging.New(os.Stderr, c.LogFormat, c.LogLevel)
	if err != nil {
		return nil, err
	}
	logging.SetKubeLoggers(log)
	return log, nil
}

// RESTConfig loads the client config in kubectl's order: the explicit path,
// else $KUBECONFIG or ~/.kube/config, else in-cluster.
func (c *Common) RESTConfig() (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = c.Kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig: %w", err)
	}
	return cfg, nil
}

// List splits a comma-separated flag value; "" is no entries.
func List(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}
