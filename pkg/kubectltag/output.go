package kubectltag

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/yaml"
)

// Output formats of -o; the empty one is the table.
const (
	outputTable = ""
	outputJSON  = "json"
	outputYAML  = "yaml"
)

func bindOutput(cmd *cobra.Command, format *string) {
	cmd.Flags().StringVarP(format, "output", "o", outputTable, "Output format: json or yaml (default: a table)")
}

func checkOutput(cmd *cobra.Command, format string) error {
	switch format {
	case outputTable, outputJSON, outputYAML:
		return nil
	}
	return usageErrorf(cmd, "unknown output format %q: want json or yaml", format)
}

// printObject writes v as JSON (indented like kubectl) or YAML.
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

// newTable is kubectl's table layout: columns padded by three spaces.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 6, 4, 3, ' ', 0)
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
