package pins

import (
	"fmt"
	"path"
	"slices"
)

// HostMatcher validates registry host patterns (path.Match syntax, e.g.
// "127.0.0.1:*", "*.svc.cluster.local:5000") once and returns a predicate.
// Flags such as --plain-http-registries use it.
func HostMatcher(patterns []string) (func(host string) bool, error) {
	ps := slices.Clone(patterns)
	for _, p := range ps {
		if _, err := path.Match(p, ""); err != nil {
			return nil, fmt.Errorf("registry host pattern %q: %w", p, err)
		}
	}
	return func(host string) bool {
		return slices.ContainsFunc(ps, func(p string) bool {
			ok, _ := path.Match(p, host)
			return ok
		})
	}, nil
}
