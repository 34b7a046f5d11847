// The binaries: BinDir locates the real binaries (registry, etcd, kube-apiserver,
// containerd, ...) that rig tests run against, and decides what a test does
// when they are missing: skip on a developer machine, fail in CI.

package rig

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// EnvBinDir overrides the directory Dir returns.
const EnvBinDir = "TAGGER_TESTBIN"

// BinDir is the directory holding the rig binaries: $TAGGER_TESTBIN when set,
// else ${XDG_CACHE_HOME:-$HOME/.cache}/tagger/testbin/bin, where
// hack/testbin.sh links the current versions.
func BinDir() string {
	if d := os.Getenv(EnvBinDir); d != "" {
		return d
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		// Same default as hack/testbin.sh, not os.UserCacheDir, which differs on macOS.
		cache = filepath.Join(os.Getenv("HOME"), ".cache")
	}
	return filepath.Join(cache, "tagger", "testbin", "bin")
}

// RequireBins returns BinDir when every named binary is an executable file there.
// Otherwise it stops the test: t.Fatalf under CI (see InCI), so a broken rig
// cannot let a suite pass green by skipping, and t.Skipf elsewhere.
func RequireBins(t T, names ...string) string {
	t.Helper()
	dir := BinDir()
	var missing []string
	for _, n := range names {
		if !isExecutable(filepath.Join(dir, n)) {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		stopOrSkip(t, "rig: missing %s in %s; run `make testbin` (hack/testbin.sh) to build them, or set %s",
			strings.Join(missing, ", "), dir, EnvBinDir)
	}
	return dir
}

// RequireRoot stops the test unless it runs as root, with RequireBins's CI rule.
func RequireRoot(t T) {
	t.Helper()
	if euid := geteuid(); euid != 0 {
		stopOrSkip(t, "rig: test needs root (euid is %d); run the rig tests as root", euid)
	}
}

// InCI reports whether the CI environment variable is set to a true value
// ("true", "1", ...), as CI services do.
func InCI() bool {
	ci, err := strconv.ParseBool(os.Getenv("CI"))
	return err == nil && ci
}

// geteuid is a variable so tests can exercise both sides of RequireRoot.
var geteuid = os.Geteuid

func stopOrSkip(t T, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf(format+" (CI=true: rig tests fail instead of skipping)", args...)
	}
	t.Skipf(format, args...)
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path) // follows the symlinks hack/testbin.sh makes
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}
