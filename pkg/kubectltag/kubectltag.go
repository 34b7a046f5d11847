// Package kubectltag is the `kubectl tag` plugin: it creates and lists Tags, shows
// a Tag's generation history, asks the controller for an immediate check, and
// moves the served generation (pin, rollback, upgrade, unpin). It talks only
// to the apiserver; every decision about what is served stays with the
// controller, so the commands change spec.generation and then report what the
// controller did.
package kubectltag

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tagger-project/tagger/pkg/version"
)

// Options configure the plugin beyond its arguments. The zero value is what
// the kubectl-tag binary uses.
type Options struct {
	// Client, when set, is used instead of a client built from the kubeconfig
	// flags (--kubeconfig, --context, ...), which are then ignored; the
	// default table is then rendered locally rather than by the apiserver.
	Client client.Client
	// Now is the clock used for ages and check values; time.Now when nil.
	Now func() time.Time
}

// Run runs the plugin with args as typed after `kubectl tag` (or
// `kubectl-tag`), writing results to out and errors to errOut. It returns the
// process exit code: 0 on success, 1 on any error.
func Run(ctx context.Context, args []string, out, errOut io.Writer, o Options) int {
	a := &app{out: out, errOut: errOut, opts: o, config: newConfigFlags()}
	root := a.rootCommand()
	if args == nil {
		args = []string{} // nil makes cobra read os.Args
	}
	root.SetArgs(args)
	root.SetOut(out)
	root.SetErr(errOut)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(errOut, "error:", err)
		var ue *usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(errOut, "See '%s --help' for usage.\n", ue.cmd)
		}
		return 1
	}
	return 0
}

// app holds one invocation's streams, flags and (lazily built) client.
type app struct {
	out, errOut io.Writer
	opts        Options
	config      *genericclioptions.ConfigFlags
	rest        *rest.Config
	client      client.Client
}

func (a *app) now() time.Time {
	if a.opts.Now != nil {
		return a.opts.Now()
	}
	return time.Now()
}

// usageError is a mistake in the command line rather than a failure of the
// operation; Run adds a pointer to the help.
type usageError struct {
	cmd string
	err error
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usageErrorf(cmd *cobra.Command, format string, args ...any) error {
	return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf(format, args...)}
}

// Command groups of the root help, as kubectl groups its commands.
const (
	groupTags       = "tags"
	groupGeneration = "generation"
)

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "kubectl-tag",
		Short: "Manage tagger Tags: pinned image tags and their generations",
		Long: longDesc(`
			kubectl tag manages tagger Tags (tagger.dev/v1alpha1). A Tag pins a mutable
			image tag to a digest; each time the upstream tag moves, the controller
			records a new generation, and every node serves the generation the Tag
			chooses.

			It takes kubectl's connection flags (--kubeconfig, --context, --as,
			--token, --server, ...). Tags are cluster-scoped: --namespace is ignored.`),
		Example: examples(`
			# Pin nginx:1.27 and cache every generation in the bundled registry
			kubectl tag create nginx --image nginx:1.27 --cache

			# List Tags, check one upstream now, and show its generations
			kubectl tag list
			kubectl tag check nginx
			kubectl tag history nginx

			# Serve the previous generation, a given one, then the newest again
			kubectl tag rollback nginx
			kubectl tag pin nginx --generation 3
			kubectl tag unpin nginx`),
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl tag"},
		SilenceUsage:  true,
		SilenceErrors: true,
		// A bare `kubectl tag` prints help; an unknown word is an error.
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageErrorf(cmd, "unknown command %q for %q", args[0], cmd.CommandPath())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	// --version (cobra adds the flag once Version is set) and `version`
	// print the same line; the template has no actions to expand.
	root.Version = version.Get().String()
	root.SetVersionTemplate(version.Line("kubectl-tag") + "\n")
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return &usageError{cmd: cmd.CommandPath(), err: err}
	})
	bindConfigFlags(a.config, root.PersistentFlags())
	root.AddGroup(
		&cobra.Group{ID: groupTags, Title: "Tag Commands:"},
		&cobra.Group{ID: groupGeneration, Title: "Served Generation Commands:"},
	)
	root.AddCommand(inGroup(groupTags, a.createCommand(), a.listCommand(), a.historyCommand(), a.checkCommand())...)
	root.AddCommand(inGroup(groupGeneration, a.pinCommand(), a.rollbackCommand(), a.upgradeCommand(), a.unpinCommand())...)
	root.AddCommand(versionCommand(), optionsCommand(root))
	root.SetUsageTemplate(usageTemplate)
	a.completion(root)
	return root
}

// inGroup puts cmds under a heading of the root help.
func inGroup(id string, cmds ...*cobra.Command) []*cobra.Command {
	for _, c := range cmds {
		c.GroupID = id
	}
	return cmds
}

// nameArg accepts exactly one Tag name.
func nameArg(cmd *cobra.Command, args []string) error {
	switch {
	case len(args) == 0:
		return usageErrorf(cmd, "a Tag name is required: %s", cmd.UseLine())
	case len(args) > 1:
		return usageErrorf(cmd, "exactly one Tag name is allowed, got %d: %q", len(args), args)
	}
	return nil
}
