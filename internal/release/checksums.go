package release

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// ChecksumsFile lists the sha256 of every other release file, in the
// format `sha256sum -c SHA256SUMS` checks.
const ChecksumsFile = "SHA256SUMS"

func writeChecksums(dir string, files []string) error {
	sorted := append([]string(nil), files...)
	sort.Strings(sorted)
	var b strings.Builder
	for _, f := range sorted {
		sum, err := fileSHA256(filepath.Join(dir, f))
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s  %s\n", sum, f)
	}
	if err := os.WriteFile(filepath.Join(dir, ChecksumsFile), []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", ChecksumsFile, err)
	}
	return nil
}

// VerifyChecksums checks every line of dir's SHA256SUMS against the file it
// names, and returns the names checked.
func VerifyChecksums(dir string) ([]string, error) {
	b, err := os.ReadFile(filepath.Join(dir, ChecksumsFile))
	if err != nil {
		return nil, err
	}
	var names []string
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		want, name, ok := strings.Cut(line, "  ")
		if !ok {
			return nil, fmt.Errorf("%s: malformed line %q", ChecksumsFile, line)
		}
		got, err := fileSHA256(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		if got != want {
			return nil, fmt.Errorf("%s: sha256 %s, SHA256SUMS says %s", name, got, want)
		}
		names = append(names, name)
	}
	return names, nil
}
