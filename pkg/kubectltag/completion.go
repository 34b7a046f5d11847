package kubectltag

import (
	"context"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// CompletionBinary is the name kubectl (1.26 and later) runs to complete the
// arguments of `kubectl tag`: kubectl_complete-<plugin> on PATH, called with
// the words typed after `kubectl tag`.
const CompletionBinary = "kubectl_complete-tag"

// completionTimeout bounds the apiserver lookups of one completion: a <TAB>
// must not hang on an unreachable cluster.
const completionTimeout = 5 * time.Second

// Args returns the plugin's arguments for a process started as argv0 with
// args: when started as kubectl_complete-tag (a link to or copy of the
// binary) it answers completion requests, so the arguments are prefixed with
// cobra's hidden __complete command.
func Args(argv0 string, args []string) []string {
	name := strings.TrimSuffix(filepath.Base(argv0), ".exe")
	if name == CompletionBinary {
		return append([]string{cobra.ShellCompRequestCmd}, args...)
	}
	return args
}

// completion adds `completion SHELL`: cobra's scripts for the standalone
// kubectl-tag binary, with help on both ways to complete.
func (a *app) completion(root *cobra.Command) {
	root.CompletionOptions.DisableDefaultCmd = true // replaced by this one, with kubectl's help
	shells := []string{"bash", "zsh", "fish", "powershell"}
	cmd := &cobra.Command{
		Use:   "completion SHELL",
		Short: "Print the shell completion script for kubectl-tag (bash, zsh, fish or powershell)",
		Long: longDesc(`
			Print a shell completion script.

			For 'kubectl tag <TAB>' (kubectl 1.26 or later), nothing needs sourcing:
			kubectl asks an executable named ` + CompletionBinary + ` on PATH. The
			kubectl-tag binary answers as that name, so a link next to it is enough:

			    ln -s kubectl-tag "$(dirname "$(command -v kubectl-tag)")/` + CompletionBinary + `"

			Tag names are completed from the cluster of the current context (or the
			--context, --kubeconfig ... typed on the line).

			The scripts this command prints complete the kubectl-tag binary when it
			is run by its own name.`),
		Example: examples(`
			# kubectl-tag <TAB> in the current bash shell
			source <(kubectl tag completion bash)

			# ... and in every new zsh
			kubectl tag completion zsh > "${fpath[1]}/_kubectl-tag"

			# fish
			kubectl tag completion fish > ~/.config/fish/completions/kubectl-tag.fish`),
		ValidArgs:             shells,
		DisableFlagsInUseLine: true,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 || !slices.Contains(shells, args[0]) {
				return usageErrorf(cmd, "want one shell of %s, got %q", strings.Join(shells, ", "), args)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(out, true)
			case "zsh":
				return root.GenZshCompletion(out)
			case "fish":
				return root.GenFishCompletion(out, true)
			default:
				return root.GenPowerShellCompletionWithDesc(out)
			}
		},
	}
	root.AddCommand(cmd)
}

// completeTagNames completes Tag names from the cluster, each described by
// its image; multi allows more than one name (list).
func (a *app) completeTagNames(multi bool) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 && !multi {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), completionTimeout)
		defer cancel()
		tags, err := a.getTags(ctx, nil)
		if err != nil {
			cobra.CompErrorln(err.Error())
			return nil, cobra.ShellCompDirectiveError
		}
		var out []cobra.Completion
		for _, t := range tags {
			if strings.HasPrefix(t.Name, toComplete) && !slices.Contains(args, t.Name) {
				out = append(out, cobra.CompletionWithDesc(t.Name, t.Spec.Image))
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// completeGenerations completes --generation with the generations of the
// Tag named on the line, described by their digests.
func (a *app) completeGenerations(cmd *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) != 1 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), completionTimeout)
	defer cancel()
	c, err := a.tags()
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	tag, err := getTag(ctx, c, args[0])
	if err != nil {
		cobra.CompErrorln(err.Error())
		return nil, cobra.ShellCompDirectiveError
	}
	var out []cobra.Completion
	for _, g := range tag.Status.Generations {
		desc := shortDigest(g.Digest)
		if g.Generation == tag.Status.ServedGeneration {
			desc += " (served)"
		}
		out = append(out, cobra.CompletionWithDesc(strconv.FormatInt(g.Generation, 10), desc))
	}
	return out, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveKeepOrder
}
