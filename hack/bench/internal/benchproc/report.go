package benchproc

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
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

// Emit prints a benchmark's report on stdout and, when path is set (its
// -json flag), writes res, every raw measurement, there and logs so with
// logf.
func Emit(path string, res any, report func(io.Writer), logf func(string, ...any)) error {
	report(os.Stdout)
	if path == "" {
		return nil
	}
	if err := WriteJSON(path, res); err != nil {
		return err
	}
	logf("raw results written to %s", path)
	return nil
}

// CheckRig finds the module root and checks that the rig binaries the
// controller benchmarks need are in testbin.
func CheckRig(ctx context.Context, testbin string) (string, error) {
	root, err := ModuleRoot(ctx)
	if err != nil {
		return "", err
	}
	for _, b := range []string{"kube-apiserver", "etcd", "registry"} {
		if fi, err := os.Stat(filepath.Join(testbin, b)); err != nil || fi.Mode().Perm()&0o111 == 0 {
			return "", fmt.Errorf("rig binary %s missing in %s: run `make testbin` (or pass -testbin)", b, testbin)
		}
	}
	return root, nil
}
