package plugin

import (
	"strings"
	"testing"
)

// table is a kubectl-style table parsed by the header's column positions, so
// empty cells (the SERVED marker) and headers with spaces ("FIRST SEEN") work.
type table struct {
	columns []string
	starts  []int
	rows    []string
}

func parseTable(t *testing.T, out string, columns ...string) table {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) == 0 {
		t.Fatalf("no table in %q", out)
	}
	header := lines[0]
	tb := table{columns: columns, rows: lines[1:]}
	pos := 0
	for _, c := range columns {
		i := strings.Index(header[pos:], c)
		if i < 0 {
			t.Fatalf("header %q lacks column %q after position %d", header, c, pos)
		}
		tb.starts = append(tb.starts, pos+i)
		pos += i + len(c)
	}
	if strings.Join(strings.Fields(header), " ") != strings.Join(columns, " ") {
		t.Fatalf("header = %q, want columns %q", header, columns)
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
