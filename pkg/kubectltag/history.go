package kubectltag

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/printers"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
)

// History is what `history -o json|yaml` prints: the Tag's generations, newest
// first, each marked when it is the served one.
type History struct {
	Name string `json:"name"`
	// Image is spec.image as written.
	Image string `json:"image"`
	// PinnedGeneration is spec.generation (absent: the newest is followed).
	PinnedGeneration *int64        `json:"pinnedGeneration,omitempty"`
	ServedGeneration int64         `json:"servedGeneration"`
	Generations      []HistoryItem `json:"generations"`
}

// HistoryItem is one generation of a History: the Tag's record of it
// (v1alpha1.Generation) and whether it is the served one.
type HistoryItem struct {
	Generation int64       `json:"generation"`
	Served     bool        `json:"served"`
	Image      string      `json:"image"`
	Digest     string      `json:"digest"`
	MediaType  string      `json:"mediaType,omitempty"`
	Size       int64       `json:"size,omitempty"`
	Platforms  []string    `json:"platforms,omitempty"`
	FirstSeen  metav1.Time `json:"firstSeen"`
	Cached     bool        `json:"cached"`
}

func historyOf(tag *v1alpha1.Tag) History {
	h := History{
		Name:             tag.Name,
		Image:            tag.Spec.Image,
		PinnedGeneration: tag.Spec.Generation,
		ServedGeneration: tag.Status.ServedGeneration,
		Generations:      []HistoryItem{},
	}
	for _, g := range tag.Status.Generations {
		h.Generations = append(h.Generations, HistoryItem{
			Generation: g.Generation,
			Served:     g.Generation == tag.Status.ServedGeneration,
			Image:      g.Image,
			Digest:     g.Digest,
			MediaType:  g.MediaType,
			Size:       g.Size,
			Platforms:  g.Platforms,
			FirstSeen:  g.FirstSeen,
			Cached:     g.Cached,
		})
	}
	return h
}

func (a *app) historyCommand() *cobra.Command {
	// json and yaml print a History, not an API object: the plugin encodes
	// them; name and the templates are cli-runtime's.
	out := newOutput("", outputTable, outputWide, outputJSON, outputYAML)
	out.flags.JSONYamlPrintFlags = nil
	var noTrunc bool
	cmd := &cobra.Command{
		Use:   "history NAME",
		Short: "Show a Tag's generations, newest first; * marks the served one",
		Long: longDesc(`
			Show the generations a Tag has recorded, newest first; * marks the served
			one. -o wide adds full digests and the image of each generation; -o json,
			yaml, jsonpath and go-template work on the history document (name, image,
			pinnedGeneration, servedGeneration, generations[]).`),
		Example: examples(`
			# Show nginx's generations
			kubectl tag history nginx

			# With full digests and images
			kubectl tag history nginx -o wide

			# The digest of generation 2
			kubectl tag history nginx -o jsonpath='{.generations[?(@.generation==2)].digest}'`),
		ValidArgsFunction: a.completeTagNames(false),
		Args: func(cmd *cobra.Command, args []string) error {
			if err := nameArg(cmd, args); err != nil {
				return err
			}
			return out.check(cmd)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.tags()
			if err != nil {
				return err
			}
			tag, err := getTag(cmd.Context(), c, args[0])
			if err != nil {
				return err
			}
			return a.showHistory(out, tag, noTrunc)
		},
	}
	out.bind(cmd)
	cmd.Flags().BoolVar(&noTrunc, "no-trunc", false, "Show full digests")
	return cmd
}

func (a *app) showHistory(out *output, tag *v1alpha1.Tag, noTrunc bool) error {
	switch {
	case out.is(outputJSON, outputYAML):
		return printObject(a.out, out.format(), historyOf(tag))
	case out.is(outputName):
		return a.printResult(out, tag)
	case !out.ownFormat():
		p, err := out.printer()
		if err != nil {
			return err
		}
		h, err := runtime.DefaultUnstructuredConverter.ToUnstructured(ptrTo(historyOf(tag)))
		if err != nil {
			return fmt.Errorf("convert the history of Tag %q: %w", tag.Name, err)
		}
		return p.PrintObj(&unstructured.Unstructured{Object: h}, a.out)
	}
	if len(tag.Status.Generations) == 0 {
		fmt.Fprintf(a.errOut, "Tag %q has no generations yet: the controller has not resolved %s.\n", tag.Name, tag.Spec.Image)
		return nil
	}
	wide := out.is(outputWide)
	return a.printHistory(tag, noTrunc || wide, wide)
}

func ptrTo[T any](v T) *T { return &v }

// printHistory prints the generations table; the IMAGE column is there with
// wide, else only when spec.image changed during the history.
func (a *app) printHistory(tag *v1alpha1.Tag, noTrunc, withImage bool) error {
	now := a.now()
	for _, g := range tag.Status.Generations {
		withImage = withImage || g.Image != tag.Status.Generations[0].Image
	}
	w := printers.GetNewTabWriter(a.out)
	header := "GEN\tDIGEST\tSERVED\tCACHED\tPLATFORMS\tFIRST SEEN"
	if withImage {
		header += "\tIMAGE"
	}
	fmt.Fprintln(w, header)
	for _, g := range tag.Status.Generations {
		d := g.Digest
		if !noTrunc {
			d = shortDigest(d)
		}
		served := ""
		if g.Generation == tag.Status.ServedGeneration {
			served = "*"
		}
		row := fmt.Sprintf("%d\t%s\t%s\t%t\t%s\t%s", g.Generation, d, served, g.Cached,
			orNone(strings.Join(g.Platforms, ",")), age(now, g.FirstSeen))
		if withImage {
			row += "\t" + g.Image
		}
		fmt.Fprintln(w, row)
	}
	return w.Flush()
}
