package kubectltag

import (
	"context"
	"fmt"

	"github.com/spf13/pflag"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
)

// kubeFlags are kubectl's own connection flags, resolved the way kubectl does:
// --kubeconfig, else $KUBECONFIG (a list of files, merged), else
// ~/.kube/config, else the in-cluster config; then the overrides.
type kubeFlags struct {
	kubeconfig     string
	context        string
	cluster        string
	user           string
	requestTimeout string
}

func (f *kubeFlags) bind(fs *pflag.FlagSet) {
	fs.StringVar(&f.kubeconfig, clientcmd.RecommendedConfigPathFlag, "", "Path to the kubeconfig file to use for CLI requests.")
	fs.StringVar(&f.context, clientcmd.FlagContext, "", "The name of the kubeconfig context to use")
	fs.StringVar(&f.cluster, clientcmd.FlagClusterName, "", "The name of the kubeconfig cluster to use")
	fs.StringVar(&f.user, clientcmd.FlagAuthInfoName, "", "The name of the kubeconfig user to use")
	fs.StringVar(&f.requestTimeout, clientcmd.FlagTimeout, "0",
		"The length of time to wait before giving up on a single server request. Non-zero values should contain a corresponding time unit (e.g. 1s, 2m, 3h). A value of zero means don't timeout requests.")
}

// restConfig loads the kubeconfig with clientcmd's loading rules and overrides.
func (f *kubeFlags) restConfig() (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = f.kubeconfig
	overrides := &clientcmd.ConfigOverrides{CurrentContext: f.context, Timeout: f.requestTimeout}
	overrides.Context.Cluster = f.cluster
	overrides.Context.AuthInfo = f.user
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig: %w", err)
	}
	return cfg, nil
}

// tags returns the client the commands use, building it on first use.
func (a *app) tags() (client.Client, error) {
	if a.opts.Client != nil {
		return a.opts.Client, nil
	}
	if a.client != nil {
		return a.client, nil
	}
	cfg, err := a.flags.restConfig()
	if err != nil {
		return nil, err
	}
	cfg.UserAgent = "kubectl-tag"
	// kubectl's own limits: the default 5 QPS would throttle the wait loops.
	if cfg.QPS == 0 {
		cfg.QPS, cfg.Burst = 50, 300
	}
	// Server warnings go to stderr as kubectl prints them, not to a logger.
	cfg.WarningHandler = rest.NewWarningWriter(a.errOut, rest.WarningWriterOptions{Deduplicate: true})
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", cfg.Host, err)
	}
	a.client = c
	return c, nil
}

// notFoundError says a Tag does not exist; it unwraps to the apiserver's error.
type notFoundError struct {
	name string
	err  error
}

func (e *notFoundError) Error() string { return fmt.Sprintf("Tag %q not found", e.name) }
func (e *notFoundError) Unwrap() error { return e.err }

// apiError turns an apiserver error about Tag name into a message a user can
// act on; doing says what was being done ("get", "patch", ...).
func apiError(doing, name string, err error) error {
	switch {
	case err == nil:
		return nil
	case apierrors.IsNotFound(err) && name != "":
		return &notFoundError{name: name, err: err}
	case meta.IsNoMatchError(err):
		return fmt.Errorf("the Tag API (%s) is not served by this cluster; are the tagger CRDs installed? %w", v1alpha1.GroupVersion, err)
	case name == "":
		return fmt.Errorf("%s Tags: %w", doing, err)
	}
	return fmt.Errorf("%s Tag %q: %w", doing, name, err)
}

func getTag(ctx context.Context, c client.Client, name string) (*v1alpha1.Tag, error) {
	var tag v1alpha1.Tag
	if err := c.Get(ctx, client.ObjectKey{Name: name}, &tag); err != nil {
		return nil, apiError("get", name, err)
	}
	return &tag, nil
}

// mergePatch applies a JSON merge patch to Tag name and returns the result.
func mergePatch(ctx context.Context, c client.Client, name string, body []byte) (*v1alpha1.Tag, error) {
	tag := &v1alpha1.Tag{}
	tag.Name = name
	if err := c.Patch(ctx, tag, client.RawPatch(types.MergePatchType, body)); err != nil {
		return nil, apiError("patch", name, err)
	}
	return tag, nil
}
