package kubectltag

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
)

func (a *app) checkCommand() *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "check NAME",
		Short: "Check the upstream tag now and print the result",
		Long: longDesc(`
			Ask the controller to resolve the Tag's upstream image tag now (by setting
			the ` + v1alpha1.CheckAnnotation + ` annotation to a new value), wait until it
			has acted on that value, and print the result: Unchanged, NewGeneration or
			Failed. A failed check exits non-zero; it never changes what is served.`),
		Example: examples(`
			# Check nginx's upstream tag now
			kubectl tag check nginx

			# Give a slow registry two minutes
			kubectl tag check nginx --timeout 2m`),
		ValidArgsFunction: a.completeTagNames(false),
		Args: func(cmd *cobra.Command, args []string) error {
			if err := nameArg(cmd, args); err != nil {
				return err
			}
			return checkTimeout(cmd, timeout)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.check(cmd, args[0], timeout)
		},
	}
	bindTimeout(cmd, &timeout, "act on the check")
	return cmd
}

func (a *app) check(cmd *cobra.Command, name string, timeout time.Duration) error {
	ctx := cmd.Context()
	c, err := a.tags()
	if err != nil {
		return err
	}
	// The value only has to differ from the last one acted on; a timestamp
	// also tells a reader of the object when the check was asked for.
	value := a.now().UTC().Format(time.RFC3339Nano)
	body, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"annotations": map[string]string{v1alpha1.CheckAnnotation: value}},
	})
	if err != nil {
		return err
	}
	if _, err := mergePatch(ctx, c, name, body); err != nil {
		return err
	}
	tag, err := waitFor(ctx, c, name, timeout, fmt.Sprintf("the controller to check Tag %q", name),
		func(t *v1alpha1.Tag) (bool, string) {
			return t.Status.CheckAnnotation == value,
				fmt.Sprintf("status.checkAnnotation is %q, want %q", t.Status.CheckAnnotation, value)
		})
	if err != nil {
		return err
	}
	if err := conflictError(tag); err != nil {
		return err
	}
	if r := condition(tag, v1alpha1.ConditionResolved); r != nil && r.Reason == "InvalidImage" {
		return fmt.Errorf("Tag %q was not checked: %s", name, r.Message)
	}
	lc := tag.Status.LastCheck
	if lc == nil {
		return fmt.Errorf("the controller acted on the check of Tag %q but recorded no result", name)
	}
	switch lc.Result {
	case v1alpha1.CheckFailed:
		fmt.Fprintf(a.out, "Failed: %s\n%s\n", lc.Message, serving(tag))
		return fmt.Errorf("check of Tag %q failed (%d consecutive failures); what is served is unchanged", name, lc.ConsecutiveFailures)
	case v1alpha1.CheckNewGeneration:
		if len(tag.Status.Generations) > 0 {
			g := tag.Status.Generations[0]
			fmt.Fprintf(a.out, "NewGeneration: generation %d (%s)\n", g.Generation, g.Digest)
		} else {
			fmt.Fprintf(a.out, "NewGeneration: %s\n", lc.Message)
		}
	default:
		if len(tag.Status.Generations) > 0 {
			g := tag.Status.Generations[0]
			fmt.Fprintf(a.out, "%s: generation %d (%s) is still the newest\n", lc.Result, g.Generation, g.Digest)
		} else {
			fmt.Fprintf(a.out, "%s: %s\n", lc.Result, lc.Message)
		}
	}
	line := serving(tag)
	if tag.Spec.Generation != nil && tag.Status.LatestGeneration > tag.Status.ServedGeneration {
		line += fmt.Sprintf(", pinned by spec.generation; `kubectl tag upgrade %s --latest` serves generation %d", name, tag.Status.LatestGeneration)
	}
	fmt.Fprintln(a.out, line)
	return nil
}
