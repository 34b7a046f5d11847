package kubectltag

import (
	"fmt"

	"github.com/spf13/cobra"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
)

func (a *app) listCommand() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List Tags with the generation each serves",
		Example: `  kubectl tag list
  kubectl tag list -o yaml`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageErrorf(cmd, "list takes no arguments, got %q", args)
			}
			return checkOutput(cmd, format)
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.tags()
			if err != nil {
				return err
			}
			var list v1alpha1.TagList
			if err := c.List(cmd.Context(), &list); err != nil {
				return apiError("list", "", err)
			}
			if format != outputTable {
				return printObject(a.out, format, typedList(&list))
			}
			if len(list.Items) == 0 {
				fmt.Fprintln(a.errOut, "No Tags found.")
				return nil
			}
			return a.printTags(list.Items)
		},
	}
	bindOutput(cmd, &format)
	return cmd
}

// typedList sets the kinds a typed client leaves empty, so -o output can be
// fed back to kubectl apply, and drops managedFields as kubectl get does.
func typedList(list *v1alpha1.TagList) *v1alpha1.TagList {
	out := list.DeepCopy()
	out.APIVersion, out.Kind = v1alpha1.GroupVersion.String(), "TagList"
	for i := range out.Items {
		out.Items[i].APIVersion, out.Items[i].Kind = v1alpha1.GroupVersion.String(), "Tag"
		out.Items[i].ManagedFields = nil
	}
	return out
}

// printTags prints the CRD's printer columns.
func (a *app) printTags(tags []v1alpha1.Tag) error {
	now := a.now()
	w := newTable(a.out)
	fmt.Fprintln(w, "NAME\tIMAGE\tSERVED\tDIGEST\tLATEST\tCACHED\tAGE")
	for _, t := range tags {
		st := t.Status
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%t\t%s\n", t.Name, t.Spec.Image,
			orNone(st.ServedGeneration), orNone(st.ServedShortDigest), orNone(st.LatestGeneration),
			st.CachedServed, age(now, t.CreationTimestamp))
	}
	return w.Flush()
}
