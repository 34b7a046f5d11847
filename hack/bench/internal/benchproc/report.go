package benchproc

import (
	"fmt"
	"math"
	"os"
	"slices"
)

// Logf prints a progress line on stderr, where the benchmarks log; their
// reports go to stdout.
func Logf(f string, a ...any) { fmt.Fprintf(os.Stderr, "bench: "+f+"\n", a...) }

// Met is a report's verdict on a target.
func Met(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

// MiB is b in mebibytes.
func MiB(b int64) float64 { return float64(b) / (1 << 20) }

// Median is the median of xs, NaN when xs is empty; xs is not changed.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
