package kubectltag

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
)

func (a *app) listCommand() *cobra.Command {
	out := newOutput("", outputTable, outputWide, outputCustomColumns)
	var noHeaders bool
	cmd := &cobra.Command{
		Use:     "list [NAME...]",
		Aliases: []string{"ls", "get"},
		Short:   "List Tags with the generation each serves",
		Long: longDesc(`
			List Tags, or the named ones. The table is the apiserver's, the same as
			'kubectl get tags' prints: the CRD's printer columns, and with -o wide also
			the ones it marks as extra detail.`),
		Example: examples(`
			# List all Tags
			kubectl tag list

			# Show one Tag with the extra columns
			kubectl tag get nginx -o wide

			# Print the digest served by a Tag
			kubectl tag get nginx -o jsonpath='{.status.servedDigest}'

			# Choose the columns
			kubectl tag list -o custom-columns=NAME:.metadata.name,GEN:.status.servedGeneration`),
		ValidArgsFunction: a.completeTagNames(true),
		Args: func(cmd *cobra.Command, _ []string) error {
			return out.check(cmd)
		},
		RunE: func(cmd *cobra.Command, names []string) error {
			return a.list(cmd.Context(), out, names, noHeaders)
		},
	}
	out.bind(cmd)
	cmd.Flags().BoolVar(&noHeaders, "no-headers", false, "When using the default, wide or custom-column output format, don't print headers.")
	return cmd
}

func (a *app) list(ctx context.Context, out *output, names []string, noHeaders bool) error {
	if out.is(outputTable, outputWide) && a.opts.Client == nil {
		return a.printServerTable(ctx, names, out.is(outputWide), noHeaders)
	}
	tags, err := a.getTags(ctx, names)
	if len(tags) == 0 && err != nil {
		return err
	}
	perr := a.printTags(out, tags, len(names) == 1, noHeaders)
	return errors.Join(perr, err)
}

// getTags returns the named Tags, or all of them. A missing name is an error
// joined to the others, which are still returned, as kubectl get does.
func (a *app) getTags(ctx context.Context, names []string) ([]v1alpha1.Tag, error) {
	c, err := a.tags()
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		var list v1alpha1.TagList
		if err := c.List(ctx, &list); err != nil {
			return nil, apiError("list", "", err)
		}
		return list.Items, nil
	}
	var tags []v1alpha1.Tag
	var errs []error
	for _, name := range names {
		tag, err := getTag(ctx, c, name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		tags = append(tags, *tag)
	}
	return tags, errors.Join(errs...)
}

// printTags prints Tags in any format but the server's table. single is
// `get NAME`: the object itself rather than a list, as kubectl prints it.
func (a *app) printTags(out *output, tags []v1alpha1.Tag, single, noHeaders bool) error {
	switch {
	case out.is(outputTable, outputWide):
		if len(tags) == 0 {
			fmt.Fprintln(a.errOut, "No Tags found.")
			return nil
		}
		return printTable(a.out, localTable(tags, a.now()), out.is(outputWide), noHeaders)
	case out.is(outputCustomColumns):
		objs := make([]map[string]any, len(tags))
		for i := range tags {
			u, err := toUnstructured(&tags[i])
			if err != nil {
				return err
			}
			objs[i] = u.Object
		}
		return printCustomColumns(a.out, out.format()[len(outputCustomColumns):], objs, noHeaders)
	}
	p, err := out.printer()
	if err != nil {
		return err
	}
	if single && len(tags) == 1 {
		u, err := toUnstructured(&tags[0])
		if err != nil {
			return err
		}
		return p.PrintObj(u, a.out)
	}
	list := &unstructured.UnstructuredList{}
	list.SetAPIVersion(v1alpha1.GroupVersion.String())
	list.SetKind("TagList")
	for i := range tags {
		u, err := toUnstructured(&tags[i])
		if err != nil {
			return err
		}
		list.Items = append(list.Items, *u)
	}
	return p.PrintObj(list, a.out)
}

// toUnstructured is the Tag as -o prints it: with its kind, which a typed
// client leaves empty (cli-runtime's json/yaml printers then drop
// managedFields unless --show-managed-fields).
func toUnstructured(tag *v1alpha1.Tag) (*unstructured.Unstructured, error) {
	t := tag.DeepCopy()
	t.APIVersion, t.Kind = v1alpha1.GroupVersion.String(), "Tag"
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(t)
	if err != nil {
		return nil, fmt.Errorf("convert Tag %q: %w", tag.Name, err)
	}
	return &unstructured.Unstructured{Object: m}, nil
}
