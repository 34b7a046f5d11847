package plugin

import (
	"regexp"
	"strings"
	"testing"
)

// table is a kubectl-style table parsed by the header's column positions, so
// empty cells (the SERVED marker, omitted status fields) and headers with
// spaces ("FIRST SEEN") work.
type table struct {
	columns []string
	starts  []int
	rows    []string
}

// columnGap separates kubectl's columns (three spaces of padding at least);
// a header name has single spaces at most.
var columnGap = regexp.MustCompile(`\S+( \S+)*`)

// parseTable parses out's header into its columns and checks that the
// columns given appear in it in that order. Columns not listed may appear in
// between: the default table is the apiserver's, and a new printer column
// of the CRD must not break a test that does not look at it.
func parseTable(t *testing.T, out string, columns ...string) table {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) == 0 || lines[0] == "" {
		t.Fatalf("no table in %q", out)
	}
	tb := table{rows: lines[1:]}
	for _, loc := range columnGap.FindAllStringIndex(lines[0], -1) {
		tb.columns = append(tb.columns, lines[0][loc[0]:loc[1]])
		tb.starts = append(tb.starts, loc[0])
	}
	next := 0
	for _, c := range columns {
		for next < len(tb.columns) && tb.columns[next] != c {
			next++
		}
		if next == len(tb.columns) {
			t.Fatalf("header %q lacks column %q (in order %q)", lines[0], c, columns)
		}
	}
	return tb
}

// cell is row i's value in column col.
func (tb table) cell(t *testing.T, i int, col string) string {
	t.Helper()
	row := tb.rows[i]
	for j, c := range tb.columns {
		if c != col {
			continue
		}
		start, end := tb.starts[j], len(row)
		if j+1 < len(tb.starts) {
			end = min(tb.starts[j+1], len(row))
		}
		if start >= len(row) {
			return ""
		}
		return strings.TrimSpace(row[start:end])
	}
	t.Fatalf("no column %q", col)
	return ""
}

// row finds the row whose first cell is key.
func (tb table) row(t *testing.T, key string) int {
	t.Helper()
	for i := range tb.rows {
		if tb.cell(t, i, tb.columns[0]) == key {
			return i
		}
	}
	t.Fatalf("no row %q in %q", key, tb.rows)
	return -1
}
