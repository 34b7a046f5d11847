package hoststoml

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// defaultDir is the directory containerd falls back to, under config_path, when
// a registry has no directory of its own (core/remotes/docker/config.hostPaths).
const defaultDir = "_default"

// validRegistry reports whether registry is a host name, optionally with a
// port, that is safe to use as a directory name under the hosts dir.
func validRegistry(registry string) error {
	if registry == "" {
		return fmt.Errorf("empty registry name")
	}
	if strings.ContainsAny(registry, "/\\ \t\r\n\x00") {
		return fmt.Errorf("registry %q: not a host name", registry)
	}
	// "." and "_" prefixes are reserved: ".", "..", _default, _backup and our
	// own .tagger- temporaries.
	if registry[0] == '.' || registry[0] == '_' {
		return fmt.Errorf("registry %q: names starting with %q are reserved", registry, registry[:1])
	}
	host, port, err := net.SplitHostPort(registry)
	if err != nil {
		if strings.Contains(registry, ":") {
			return fmt.Errorf("registry %q: not host or host:port", registry)
		}
		return nil
	}
	if host == "" {
		return fmt.Errorf("registry %q: empty host", registry)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port {
		return fmt.Errorf("registry %q: invalid port %q", registry, port)
	}
	return nil
}

// lookupDirs returns the directory names containerd considers for registry,
// in its lookup order, without the final _default. It mirrors
// core/remotes/docker/config (config_unix.go hostPaths and hosts.go
// hostDirectory): for "host:port" containerd first tries "host_port_", then
// "host:port"; for a host without a port only the host name.
//
// tagger writes its file under the last name, the registry name itself.
func lookupDirs(registry string) []string {
	if alt := portDir(registry); alt != registry {
		return []string{alt, registry}
	}
	return []string{registry}
}

// portDir is containerd's hostDirectory: ":port" becomes "_port_".
func portDir(host string) string {
	if i := strings.LastIndex(host, ":"); i > 0 {
		return host[:i] + "_" + host[i+1:] + "_"
	}
	return host
}

// registryOfDir maps a directory name back to the registry it configures:
// "host_port_" is "host:port" (host names cannot contain "_"), anything else
// is the registry name itself.
func registryOfDir(name string) string {
	if !strings.HasSuffix(name, "_") {
		return name
	}
	trimmed := name[:len(name)-1]
	i := strings.LastIndex(trimmed, "_")
	if i <= 0 {
		return name
	}
	port := trimmed[i+1:]
	if port == "" || strings.Trim(port, "0123456789") != "" {
		return name
	}
	return trimmed[:i] + ":" + port
}
