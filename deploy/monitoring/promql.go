package monitoring

import (
	"regexp"
	"strings"
)

var (
	// Double- or single-quoted strings and backquoted raw strings.
	stringLit = regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'|`[^`]*`")
	// Label matchers {...} and range or subquery selectors [...].
	braces   = regexp.MustCompile(`\{[^{}]*\}|\[[^\[\]]*\]`)
	grouping = regexp.MustCompile(`(?i)\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	// PromQL's metric-name grammar, not preceded by a character that would
	// make it part of a number (1e3) or a longer name.
	ident = regexp.MustCompile(`(^|[^a-zA-Z0-9_:.])([a-zA-Z_:][a-zA-Z0-9_:]*)`)
)

// keywords are the PromQL words that are not metric names: operators,
// modifiers and aggregation words (function names are recognized by the
// parenthesis that follows them).
var keywords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true,
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"inf": true, "nan": true, "start": true, "end": true,
}

// MetricNames returns the metric names a PromQL expression selects, found by
// the metric-name grammar after strings, label matchers, ranges and
// grouping label lists are removed; words followed by "(" are functions or
// aggregations. It does not check the syntax (promtool does).
func MetricNames(expr string) []string {
	s := stringLit.ReplaceAllString(expr, `""`)
	for prev := ""; prev != s; {
		prev = s
		s = braces.ReplaceAllString(s, " ")
	}
	s = grouping.ReplaceAllString(s, " ")
	var names []string
	seen := map[string]bool{}
	for _, m := range ident.FindAllStringSubmatchIndex(s, -1) {
		name := s[m[4]:m[5]]
		rest := strings.TrimLeft(s[m[5]:], " \t\n")
		if strings.HasPrefix(rest, "(") || keywords[strings.ToLower(name)] || seen[name] {
			continue
		}
		seen[name] = true
		names = append(names, name)
	}
	return names
}
