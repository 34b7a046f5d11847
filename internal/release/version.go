package release

import (
	"fmt"
	"regexp"
	"strings"
)

// semver is SemVer 2.0.0 (semver.org's regular expression), without the v.
var semver = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)` +
	`(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?` +
	`(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$`)

// ReleaseVersion is the version a release is published as: v plus SemVer.
// A tag such as v0.2.0 (or `git describe`'s v0.2.0-3-gabc1234) is kept; an
// untagged build (`git describe --always` prints a bare hash, perhaps with
// -dirty) becomes the pre-release v0.0.0-<that>, since the chart and krew
// both refuse versions that are not SemVer.
func ReleaseVersion(v string) (string, error) {
	if v == "" {
		return "", fmt.Errorf("release version is empty")
	}
	if semver.MatchString(strings.TrimPrefix(v, "v")) {
		return "v" + strings.TrimPrefix(v, "v"), nil
	}
	dev := "0.0.0-" + v
	if !semver.MatchString(dev) {
		return "", fmt.Errorf("release version %q is neither SemVer (v1.2.3) nor a git describe of an untagged commit", v)
	}
	return "v" + dev, nil
}

// ChartVersion is the chart's version and appVersion for a release
// version: SemVer without the v (the image tags the release pushes, too).
func ChartVersion(v string) string { return strings.TrimPrefix(v, "v") }
