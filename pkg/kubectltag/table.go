package kubectltag

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/printers"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
)

// tableAccept asks the apiserver for a Table (server-side printing, what
// kubectl get uses), falling back to the object for a server without it.
const tableAccept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"

// printServerTable prints the Tags (all, or the named ones) as the apiserver
// renders them from the CRD's printer columns, so the plugin's table is
// always the one `kubectl get tags` shows, new columns included.
func (a *app) printServerTable(ctx context.Context, names []string, wide, noHeaders bool) error {
	rc, err := a.tagsREST()
	if err != nil {
		return err
	}
	var tables []*metav1.Table
	var errs []error
	if len(names) == 0 {
		names = []string{""}
	}
	for _, name := range names {
		t, err := fetchTable(ctx, rc, name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		tables = append(tables, t)
	}
	if len(tables) == 0 {
		return errors.Join(errs...)
	}
	table := tables[0]
	for _, t := range tables[1:] {
		table.Rows = append(table.Rows, t.Rows...)
	}
	if len(table.Rows) == 0 && len(errs) == 0 {
		fmt.Fprintln(a.errOut, "No Tags found.")
		return nil
	}
	return errors.Join(printTable(a.out, table, wide, noHeaders), errors.Join(errs...))
}

// tagsREST is a REST client for tagger.dev/v1alpha1 on the flags' cluster.
func (a *app) tagsREST() (rest.Interface, error) {
	cfg, err := a.restConfig()
	if err != nil {
		return nil, err
	}
	c := rest.CopyConfig(cfg)
	c.GroupVersion = &v1alpha1.GroupVersion
	c.APIPath = "/apis"
	c.NegotiatedSerializer = scheme.Codecs.WithoutConversion()
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", cfg.Host, err)
	}
	return rc, nil
}

// fetchTable gets Tag name (all Tags when name is empty) as a Table.
func fetchTable(ctx context.Context, rc rest.Interface, name string) (*metav1.Table, error) {
	req := rc.Get().Resource("tags").SetHeader("Accept", tableAccept)
	doing := "list"
	if name != "" {
		req, doing = req.Name(name), "get"
	}
	res := req.Do(ctx)
	raw, err := res.Raw()
	if err != nil {
		err = res.Error() // the apiserver's Status (Forbidden, ...) rather than Raw's generic error
		if apierrors.IsNotFound(err) && name == "" {
			return nil, fmt.Errorf("the Tag API (%s) is not served by this cluster; are the tagger CRDs installed? %w", v1alpha1.GroupVersion, err)
		}
		return nil, apiError(doing, name, err)
	}
	var t metav1.Table
	if err := json.Unmarshal(raw, &t); err != nil {
		return nil, fmt.Errorf("decode the Table of Tags: %w", err)
	}
	if t.Kind != "Table" {
		return nil, fmt.Errorf("the apiserver answered %s Tags with a %q, not a Table", doing, t.Kind)
	}
	return &t, nil
}

// printTable prints a Table with kubectl's printer: priority-1 columns only
// with wide, cells without a value as <none>.
func printTable(w io.Writer, t *metav1.Table, wide, noHeaders bool) error {
	tw := printers.GetNewTabWriter(w)
	p := printers.NewTablePrinter(printers.PrintOptions{Wide: wide, NoHeaders: noHeaders})
	if err := p.PrintObj(t, tw); err != nil {
		return fmt.Errorf("print table: %w", err)
	}
	return tw.Flush()
}

// localTable renders the CRD's printer columns from Tags in hand; it serves a
// client that cannot ask for server-side Tables (Options.Client).
func localTable(tags []v1alpha1.Tag, now time.Time) *metav1.Table {
	t := &metav1.Table{ColumnDefinitions: []metav1.TableColumnDefinition{
		{Name: "Name", Type: "string", Format: "name"},
		{Name: "Image", Type: "string"},
		{Name: "Served", Type: "integer"},
		{Name: "Digest", Type: "string"},
		{Name: "Latest", Type: "integer"},
		{Name: "Cached", Type: "boolean"},
		{Name: "Age", Type: "date"},
	}}
	for _, tag := range tags {
		st := tag.Status
		t.Rows = append(t.Rows, metav1.TableRow{Cells: []any{
			tag.Name, tag.Spec.Image, nilIfZero(st.ServedGeneration), nilIfZero(st.ServedShortDigest),
			nilIfZero(st.LatestGeneration), nilIfZero(st.CachedServed), age(now, tag.CreationTimestamp),
		}})
	}
	return t
}

// nilIfZero is how the apiserver fills a printer column whose field is
// omitted: no value, printed <none>.
func nilIfZero[T comparable](v T) any {
	var zero T
	if v == zero {
		return nil
	}
	return v
}
