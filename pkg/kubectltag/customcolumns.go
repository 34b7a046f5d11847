package kubectltag

import (
	"fmt"
	"io"
	"strings"

	"k8s.io/cli-runtime/pkg/printers"
	"k8s.io/client-go/util/jsonpath"
)

// column is one column of -o custom-columns=HEADER:JSONPATH,...
type column struct {
	header string
	path   *jsonpath.JSONPath
}

// parseCustomColumns parses kubectl's custom-columns spec; a path may omit
// its braces (".spec.image" is "{.spec.image}").
func parseCustomColumns(spec string) ([]column, error) {
	if spec == "" {
		return nil, fmt.Errorf("custom-columns needs HEADER:JSONPATH[,HEADER:JSONPATH...]")
	}
	var cols []column
	for _, part := range strings.Split(spec, ",") {
		header, expr, ok := strings.Cut(part, ":")
		if !ok || header == "" || expr == "" {
			return nil, fmt.Errorf("column %q is not HEADER:JSONPATH", part)
		}
		if !strings.HasPrefix(expr, "{") {
			expr = "{" + expr + "}"
		}
		p := jsonpath.New(header).AllowMissingKeys(true)
		if err := p.Parse(expr); err != nil {
			return nil, fmt.Errorf("column %s: %w", header, err)
		}
		cols = append(cols, column{header: header, path: p})
	}
	return cols, nil
}

// printCustomColumns writes one row per object (as decoded JSON), kubectl's
// table layout; a path that finds nothing prints <none>.
func printCustomColumns(w io.Writer, spec string, objs []map[string]any, noHeaders bool) error {
	cols, err := parseCustomColumns(spec)
	if err != nil {
		return err
	}
	tw := printers.GetNewTabWriter(w)
	if !noHeaders {
		headers := make([]string, len(cols))
		for i, c := range cols {
			headers[i] = c.header
		}
		fmt.Fprintln(tw, strings.Join(headers, "\t"))
	}
	for _, obj := range objs {
		cells := make([]string, len(cols))
		for i, c := range cols {
			if cells[i], err = cell(c, obj); err != nil {
				return err
			}
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

func cell(c column, obj map[string]any) (string, error) {
	results, err := c.path.FindResults(obj)
	if err != nil {
		return "", fmt.Errorf("column %s: %w", c.header, err)
	}
	var vals []string
	for _, r := range results {
		for _, v := range r {
			if v.IsValid() && v.CanInterface() && v.Interface() != nil {
				vals = append(vals, fmt.Sprint(v.Interface()))
			}
		}
	}
	if len(vals) == 0 {
		return "<none>", nil
	}
	return strings.Join(vals, ","), nil
}
