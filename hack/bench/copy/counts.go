package main

import (
	"fmt"
	"sort"
	"strings"
)

// sum is the total of the byte counts.
func sum(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// diffCounts is after - before, keys with no change left out, as
// "PUT upload=3 (100.0 MiB) HEAD blob=11".
func diffCounts(b0, b1 map[string]int64, r0, r1 map[string]int) string {
	var keys []string
	for k := range r1 {
		if r1[k] != r0[k] {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var sb strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&sb, "%s=%d", k, r1[k]-r0[k])
		if d := b1[k] - b0[k]; d > 0 {
			fmt.Fprintf(&sb, " (%s)", fmtBytes(d))
		}
		sb.WriteString(", ")
	}
	return strings.TrimSuffix(sb.String(), ", ")
}
