package kubectltag

import (
	"strings"
)

// longDesc normalizes a Long help text written as an indented raw string, as
// kubectl's templates.LongDesc does: the common indentation and the blank
// lines around it are removed.
func longDesc(s string) string {
	return dedent(s)
}

// examples normalizes an Example text as kubectl's templates.Examples does:
// dedented, then every line indented by two spaces, so "# comment" lines and
// commands line up under "Examples:".
func examples(s string) string {
	lines := strings.Split(dedent(s), "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = "  " + l
		}
	}
	return strings.Join(lines, "\n")
}

// dedent trims the blank lines around s and the indentation common to its
// non-blank lines.
func dedent(s string) string {
	lines := strings.Split(strings.Trim(s, "\n"), "\n")
	common := -1
	for _, l := range lines {
		if strings.TrimSpace(l) == "" {
			continue
		}
		n := len(l) - len(strings.TrimLeft(l, " \t"))
		if common < 0 || n < common {
			common = n
		}
	}
	for i, l := range lines {
		if len(l) >= common && common > 0 {
			lines[i] = l[common:]
		} else {
			lines[i] = strings.TrimSpace(l)
		}
		lines[i] = strings.TrimRight(lines[i], " \t")
	}
	return strings.TrimSpace(strings.Join(lines, "\n"))
}
