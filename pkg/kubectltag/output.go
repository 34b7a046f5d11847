package kubectltag

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/printers"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
)

// Output formats the commands render themselves; everything else -o accepts
// (json, yaml, kyaml, name, go-template=, jsonpath=, jsonpath-as-json=, ...)
// is cli-runtime's printers, as in kubectl.
const (
	outputTable         = ""
	outputWide          = "wide"
	outputJSON          = "json"
	outputYAML          = "yaml"
	outputName          = "name"
	outputCustomColumns = "custom-columns="
)

// output is the -o flag of one command. own lists the formats the command
// renders itself (the table, wide, custom columns); the rest go to
// cli-runtime's printers.
type output struct {
	flags *genericclioptions.PrintFlags
	own   []string
}

// newOutput makes -o for a command; operation is the verb the default name
// output appends ("created"), own the formats the command renders itself.
func newOutput(operation string, own ...string) *output {
	return &output{flags: genericclioptions.NewPrintFlags(operation), own: own}
}

// bind adds -o (and cli-runtime's --template, --show-managed-fields,
// --allow-missing-template-keys) to cmd, with kubectl's help text and shell
// completion of the format names.
func (o *output) bind(cmd *cobra.Command) {
	o.flags.AddFlags(cmd)
	f := cmd.Flags().Lookup("output")
	f.Usage = fmt.Sprintf("Output format. One of: (%s).", strings.Join(o.formats(), ", "))
	_ = cmd.RegisterFlagCompletionFunc("output", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return o.formats(), cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveNoSpace
	})
}

// formats lists what -o accepts, for the help and completion.
func (o *output) formats() []string {
	var own []string
	for _, f := range o.own {
		if f != outputTable {
			own = append(own, f)
		}
	}
	return append(own, o.flags.AllowedFormats()...)
}

// format is -o; --template without -o means go-template, as in kubectl.
func (o *output) format() string {
	f := *o.flags.OutputFormat
	if tf := o.flags.TemplatePrinterFlags; f == "" && tf != nil && tf.TemplateArgument != nil && *tf.TemplateArgument != "" {
		return "go-template"
	}
	return f
}

// is reports whether -o selects one of formats (custom-columns=... counts
// as outputCustomColumns).
func (o *output) is(formats ...string) bool {
	f := o.format()
	if strings.HasPrefix(f, outputCustomColumns) {
		f = outputCustomColumns
	}
	return slices.Contains(formats, f)
}

// ownFormat reports whether the command renders the output itself.
func (o *output) ownFormat() bool { return o.is(o.own...) }

// check validates -o before anything is sent to the apiserver.
func (o *output) check(cmd *cobra.Command) error {
	if o.ownFormat() {
		if o.is(outputCustomColumns) {
			_, err := parseCustomColumns(strings.TrimPrefix(o.format(), outputCustomColumns))
			if err != nil {
				return usageErrorf(cmd, "invalid -o %s: %v", o.format(), err)
			}
		}
		return nil
	}
	if _, err := o.flags.ToPrinter(); err != nil {
		if genericclioptions.IsNoCompatiblePrinterError(err) {
			return usageErrorf(cmd, "unknown output format %q: allowed formats are %s", o.format(), strings.Join(o.formats(), ", "))
		}
		return usageErrorf(cmd, "invalid -o %s: %v", o.format(), err)
	}
	return nil
}

// printer is cli-runtime's printer for -o; check has validated it.
func (o *output) printer() (printers.ResourcePrinter, error) {
	p, err := o.flags.ToPrinter()
	if err != nil {
		return nil, fmt.Errorf("output format %q: %w", o.format(), err)
	}
	return p, nil
}

// printObject writes v as JSON (indented like kubectl) or YAML; it is for
// values that are not API objects (history, version).
func printObject(w io.Writer, format string, v any) error {
	var b []byte
	var err error
	switch format {
	case outputJSON:
		b, err = json.MarshalIndent(v, "", "    ")
		b = append(b, '\n')
	case outputYAML:
		b, err = yaml.Marshal(v)
	default:
		return fmt.Errorf("unknown output format %q", format)
	}
	if err != nil {
		return fmt.Errorf("encode %s: %w", format, err)
	}
	_, err = w.Write(b)
	return err
}

// age is a kubectl AGE: "45s", "12m", "3d4h".
func age(now time.Time, t metav1.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(now.Sub(t.Time))
}

// orNone prints 0 and "" as kubectl prints absent fields.
func orNone[T comparable](v T) string {
	var zero T
	if v == zero {
		return "<none>"
	}
	return fmt.Sprint(v)
}

// shortDigest is the digest as the DIGEST printer column shows it.
func shortDigest(d string) string {
	const n = len("sha256:") + 12
	if len(d) > n {
		return d[:n]
	}
	return d
}

// printResult prints the Tag a command wrote: by default (and with -o name)
// as tag.tagger.dev/NAME with the command's verb, as kubectl does, else in
// the -o format.
func (a *app) printResult(out *output, tag *v1alpha1.Tag) error {
	p, err := out.printer()
	if err != nil {
		return err
	}
	u, err := toUnstructured(tag)
	if err != nil {
		return err
	}
	return p.PrintObj(u, a.out)
}
