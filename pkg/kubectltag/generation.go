package kubectltag

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
)

// waitFlags control how pin, rollback, upgrade and unpin wait for the
// controller to serve what they asked for.
type waitFlags struct {
	wait    bool
	timeout time.Duration
	// out is -o: without it the commands print what they did and what is
	// served; with it, the Tag as the controller left it.
	out *output
}

func (w *waitFlags) bind(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&w.wait, "wait", true, "Wait until the controller has acted on the change and report what is served")
	bindTimeout(cmd, &w.timeout, "act on the change (with --wait)")
	w.out = newOutput("")
	w.out.bind(cmd)
}

// generationCommand builds one of the commands that move spec.generation.
func (a *app) generationCommand(cmd *cobra.Command, w *waitFlags, run func(cmd *cobra.Command, tag *v1alpha1.Tag) (*int64, string, error)) *cobra.Command {
	w.bind(cmd)
	cmd.Args = func(cmd *cobra.Command, args []string) error {
		if err := nameArg(cmd, args); err != nil {
			return err
		}
		if err := w.out.check(cmd); err != nil {
			return err
		}
		return checkTimeout(cmd, w.timeout)
	}
	cmd.ValidArgsFunction = a.completeTagNames(false)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := a.tags()
		if err != nil {
			return err
		}
		tag, err := getTag(cmd.Context(), c, args[0])
		if err != nil {
			return err
		}
		gen, summary, err := run(cmd, tag)
		if err != nil {
			return err
		}
		return a.setGeneration(cmd, tag.Name, gen, summary, *w)
	}
	return cmd
}

func (a *app) pinCommand() *cobra.Command {
	var w waitFlags
	var n int64
	cmd := &cobra.Command{
		Use:   "pin NAME --generation N",
		Short: "Serve generation N of a Tag's history",
		Long: longDesc(`
			Pin the Tag to generation N of its history (spec.generation) and wait until
			the controller serves it. The Tag stays pinned: new generations are
			recorded but not served until upgrade or unpin.`),
		Example: examples(`
			# Serve generation 3 of nginx and wait until it is served
			kubectl tag pin nginx --generation 3

			# Only write spec.generation; do not wait
			kubectl tag pin nginx --generation 3 --wait=false`),
	}
	cmd.Flags().Int64Var(&n, "generation", 0, "Generation to serve, one listed by kubectl tag history NAME (required)")
	_ = cmd.RegisterFlagCompletionFunc("generation", a.completeGenerations)
	return a.generationCommand(cmd, &w, func(cmd *cobra.Command, tag *v1alpha1.Tag) (*int64, string, error) {
		if !cmd.Flags().Changed("generation") {
			return nil, "", usageErrorf(cmd, "--generation is required; available in Tag %q: %s", tag.Name, available(tag))
		}
		g, err := findGeneration(tag, n)
		if err != nil {
			return nil, "", err
		}
		return &g.Generation, fmt.Sprintf("tag.tagger.dev/%s pinned to generation %d", tag.Name, g.Generation), nil
	})
}

func (a *app) rollbackCommand() *cobra.Command {
	var w waitFlags
	cmd := &cobra.Command{
		Use:   "rollback NAME",
		Short: "Serve the generation before the served one",
		Long: longDesc(`
			Pin the Tag to the generation recorded before the one it serves now (the
			next older one in its history) and wait until the controller serves it.`),
		Example: examples(`
			# Serve the generation before the served one
			kubectl tag rollback nginx

			# ... and print the Tag's served digest afterwards
			kubectl tag rollback nginx -o jsonpath='{.status.servedDigest}'`),
	}
	return a.generationCommand(cmd, &w, func(_ *cobra.Command, tag *v1alpha1.Tag) (*int64, string, error) {
		g, err := rollbackTarget(tag)
		if err != nil {
			return nil, "", err
		}
		return &g.Generation, fmt.Sprintf("tag.tagger.dev/%s rolled back to generation %d (from %d)", tag.Name, g.Generation, tag.Status.ServedGeneration), nil
	})
}

func (a *app) upgradeCommand() *cobra.Command {
	var w waitFlags
	var latest bool
	cmd := &cobra.Command{
		Use:   "upgrade NAME",
		Short: "Serve the generation after the served one (--latest: the newest)",
		Long: longDesc(`
			Pin the Tag to the generation recorded after the one it serves now, or with
			--latest to the newest. The Tag stays pinned; use unpin to follow new
			generations.`),
		Example: examples(`
			# Serve the next newer generation
			kubectl tag upgrade nginx

			# Serve the newest generation, staying pinned to it
			kubectl tag upgrade nginx --latest`),
	}
	cmd.Flags().BoolVar(&latest, "latest", false, "Upgrade to the newest generation rather than the next one")
	return a.generationCommand(cmd, &w, func(_ *cobra.Command, tag *v1alpha1.Tag) (*int64, string, error) {
		g, err := upgradeTarget(tag, latest)
		if err != nil {
			return nil, "", err
		}
		return &g.Generation, fmt.Sprintf("tag.tagger.dev/%s upgraded to generation %d (from %d)", tag.Name, g.Generation, tag.Status.ServedGeneration), nil
	})
}

func (a *app) unpinCommand() *cobra.Command {
	var w waitFlags
	cmd := &cobra.Command{
		Use:   "unpin NAME",
		Short: "Follow the newest generation again (remove spec.generation)",
		Example: examples(`
			# Serve the newest generation, now and after every new one
			kubectl tag unpin nginx`),
	}
	return a.generationCommand(cmd, &w, func(_ *cobra.Command, tag *v1alpha1.Tag) (*int64, string, error) {
		return nil, fmt.Sprintf("tag.tagger.dev/%s unpinned: follows the newest generation", tag.Name), nil
	})
}

// setGeneration merge-patches spec.generation (nil removes it) and, with
// --wait, waits for the controller to observe the new spec and reports what it
// serves; serving anything else than asked for is an error.
func (a *app) setGeneration(cmd *cobra.Command, name string, gen *int64, summary string, w waitFlags) error {
	ctx := cmd.Context()
	c, err := a.tags()
	if err != nil {
		return err
	}
	body, err := json.Marshal(map[string]any{"spec": map[string]any{"generation": gen}})
	if err != nil {
		return err
	}
	patched, err := mergePatch(ctx, c, name, body)
	if err != nil {
		return err
	}
	quiet := w.out.format() != outputTable // -o: only the Tag is printed
	if !quiet {
		fmt.Fprintln(a.out, summary)
	}
	if !w.wait {
		if quiet {
			return a.printResult(w.out, patched)
		}
		return nil
	}
	want := patched.Generation
	tag, err := waitFor(ctx, c, name, w.timeout, fmt.Sprintf("the controller to observe the spec of Tag %q", name),
		func(t *v1alpha1.Tag) (bool, string) {
			return t.Status.ObservedGeneration >= want,
				fmt.Sprintf("status.observedGeneration is %d, want %d", t.Status.ObservedGeneration, want)
		})
	if err != nil {
		return err
	}
	if err := conflictError(tag); err != nil {
		return err
	}
	ready := condition(tag, v1alpha1.ConditionReady)
	if (gen != nil && tag.Status.ServedGeneration != *gen) || ready == nil || ready.Status != metav1.ConditionTrue {
		msg := "no Ready condition"
		if ready != nil {
			msg = ready.Message
		}
		return fmt.Errorf("Tag %q is %s: %s", name, serving(tag), msg)
	}
	if quiet {
		return a.printResult(w.out, tag)
	}
	fmt.Fprintln(a.out, serving(tag))
	return nil
}

// findGeneration returns generation n of the Tag's history.
func findGeneration(tag *v1alpha1.Tag, n int64) (v1alpha1.Generation, error) {
	for _, g := range tag.Status.Generations {
		if g.Generation == n {
			return g, nil
		}
	}
	return v1alpha1.Generation{}, fmt.Errorf("Tag %q has no generation %d; available: %s", tag.Name, n, available(tag))
}

// servedIndex is the position of the served generation in the history
// (newest first).
func servedIndex(tag *v1alpha1.Tag) (int, error) {
	served := tag.Status.ServedGeneration
	if served == 0 {
		return 0, fmt.Errorf("Tag %q serves no generation yet; available: %s", tag.Name, available(tag))
	}
	for i, g := range tag.Status.Generations {
		if g.Generation == served {
			return i, nil
		}
	}
	// The controller never prunes the served generation; a stale status at most.
	return 0, fmt.Errorf("Tag %q serves generation %d, which is not in its history (available: %s); retry once the controller has caught up", tag.Name, served, available(tag))
}

// rollbackTarget is the generation recorded before the served one.
func rollbackTarget(tag *v1alpha1.Tag) (v1alpha1.Generation, error) {
	i, err := servedIndex(tag)
	if err != nil {
		return v1alpha1.Generation{}, err
	}
	h := tag.Status.Generations
	if i+1 >= len(h) {
		return v1alpha1.Generation{}, fmt.Errorf("Tag %q serves generation %d, the oldest in its history: nothing to roll back to", tag.Name, h[i].Generation)
	}
	return h[i+1], nil
}

// upgradeTarget is the generation recorded after the served one, or the newest.
func upgradeTarget(tag *v1alpha1.Tag, latest bool) (v1alpha1.Generation, error) {
	i, err := servedIndex(tag)
	if err != nil {
		return v1alpha1.Generation{}, err
	}
	h := tag.Status.Generations
	if i == 0 {
		return v1alpha1.Generation{}, fmt.Errorf("Tag %q already serves generation %d, the newest; `kubectl tag check %s` looks for a newer one upstream", tag.Name, h[0].Generation, tag.Name)
	}
	if latest {
		return h[0], nil
	}
	return h[i-1], nil
}

// available lists the generations of the history, newest first: "3, 2, 1".
func available(tag *v1alpha1.Tag) string {
	if len(tag.Status.Generations) == 0 {
		return "none (the controller has not resolved the image yet)"
	}
	s := make([]string, len(tag.Status.Generations))
	for i, g := range tag.Status.Generations {
		s[i] = fmt.Sprint(g.Generation)
	}
	return strings.Join(s, ", ")
}
