package kubectltag

import (
	"context"
	"fmt"

	"github.com/spf13/pflag"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
)

// newConfigFlags are kubectl's own connection flags (--kubeconfig, --context,
// --cluster, --user, --as, --as-group, --as-uid, --token, --server,
// --certificate-authority, --insecure-skip-tls-verify, --request-timeout, ...),
// resolved by cli-runtime exactly as kubectl resolves them.
func newConfigFlags() *genericclioptions.ConfigFlags {
	// usePersistentConfig: one loaded kubeconfig for the whole invocation.
	return genericclioptions.NewConfigFlags(true)
}

// bindConfigFlags adds the connection flags to fs. --namespace is accepted
// (scripts pass it to every kubectl command) but hidden: Tags are
// cluster-scoped and no command reads or writes a namespaced object, so it is
// ignored, as `kubectl get nodes -n x` ignores it.
func bindConfigFlags(cf *genericclioptions.ConfigFlags, fs *pflag.FlagSet) {
	cf.AddFlags(fs)
	if f := fs.Lookup("namespace"); f != nil {
		f.Usage = "Ignored: Tags are cluster-scoped"
		f.Hidden = true
	}
	// The discovery cache is never used: the plugin knows its one resource.
	if f := fs.Lookup("cache-dir"); f != nil {
		f.Hidden = true
	}
}

// restConfig is the client configuration the flags select, with the plugin's
// user agent, kubectl's client-side rate limits and server warnings on stderr.
func (a *app) restConfig() (*rest.Config, error) {
	if a.rest != nil {
		return a.rest, nil
	}
	cfg, err := a.config.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig: %w", err)
	}
	if err := a.checkConfigured(cfg); err != nil {
		return nil, err
	}
	cfg.UserAgent = "kubectl-tag"
	// kubectl's own limits: the default 5 QPS would throttle the wait loops.
	if cfg.QPS == 0 {
		cfg.QPS, cfg.Burst = 50, 300
	}
	// Server warnings go to stderr as kubectl prints them, not to a logger.
	cfg.WarningHandler = rest.NewWarningWriter(a.errOut, rest.WarningWriterOptions{Deduplicate: true})
	a.rest = cfg
	return cfg, nil
}

// checkConfigured fails when nothing named a cluster: clientcmd then falls
// back to http://localhost:8080, and the user would see only a refused
// connection there.
func (a *app) checkConfigured(cfg *rest.Config) error {
	if cfg.Host != "http://localhost:8080" || *a.config.APIServer != "" {
		return nil
	}
	raw, err := a.config.ToRawKubeConfigLoader().RawConfig()
	if err == nil && len(raw.Clusters) > 0 {
		return nil
	}
	return fmt.Errorf("load kubeconfig: no cluster is configured: no kubeconfig (--kubeconfig, $KUBECONFIG or ~/.kube/config), no in-cluster config and no --server")
}

// tags returns the client the commands use, building it on first use.
func (a *app) tags() (client.Client, error) {
	if a.opts.Client != nil {
		return a.opts.Client, nil
	}
	if a.client != nil {
		return a.client, nil
	}
	cfg, err := a.restConfig()
	if err != nil {
		return nil, err
	}
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
