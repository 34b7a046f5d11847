package hoststoml

import (
	"bytes"
	"fmt"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// marker is the first line of every hosts.toml tagger writes; a registry
// directory whose hosts.toml starts with markerPrefix is tagger's.
const (
	marker       = "# managed by tagger node-agent; the previous file is kept in ../_backup"
	markerPrefix = "# managed by tagger node-agent"
)

// entry says how one registry's hosts.toml is rendered.
type entry struct {
	registry    string
	mirror      string // mirror URL, no trailing slash
	dialTimeout time.Duration
	strict      bool // server = the mirror, nothing else
	plainHTTP   bool // default upstream reached over http://
	base        base // what containerd used before
}

// upstream is the registry's API endpoint when the previous configuration did
// not name one: what containerd itself uses for a registry without hosts.toml
// (registry-1.docker.io for docker.io), with the scheme tagger was told.
func upstream(registry string, plainHTTP bool) string {
	scheme := "https"
	if plainHTTP {
		scheme = "http"
	}
	host := registry
	if registry == "docker.io" {
		host = "registry-1.docker.io"
	}
	return scheme + "://" + host
}

// render returns the hosts.toml for e. containerd tries the [host] entries in
// file order and the server last, so the mirror comes first, the previous
// entries after it and the upstream (or the user's server) last.
func render(e entry) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(marker + "\n")

	ours := []string{
		`capabilities = ["pull", "resolve"]`,
	}
	if e.dialTimeout > 0 {
		ours = append(ours, "dial_timeout = "+quote(e.dialTimeout.String()))
	}

	if e.strict {
		// The mirror is the server: no fallback, so containerd fails the pull
		// when the mirror does not answer. containerd still adds ?ns= because
		// the mirror's host differs from the registry's.
		fmt.Fprintf(&b, "server = %s\n", quote(e.mirror))
		for _, l := range ours {
			b.WriteString(l + "\n")
		}
		return b.Bytes(), nil
	}

	server := e.base.server
	if server == "" {
		server = upstream(e.registry, e.plainHTTP)
	}
	fmt.Fprintf(&b, "server = %s\n", quote(server))
	if len(e.base.root) > 0 {
		root, err := encodeInline(e.base.root)
		if err != nil {
			return nil, fmt.Errorf("encode previous top-level keys: %w", err)
		}
		b.Write(root)
	}

	fmt.Fprintf(&b, "\n[host.%s]\n", quote(e.mirror))
	for _, l := range ours {
		b.WriteString("  " + l + "\n")
	}
	for _, h := range e.base.hosts {
		if h.name == e.mirror {
			// Ours already; a second table would not parse.
			continue
		}
		body, err := encodeInline(h.table)
		if err != nil {
			return nil, fmt.Errorf("encode previous host %q: %w", h.name, err)
		}
		fmt.Fprintf(&b, "\n[host.%s]\n", quote(h.name))
		for _, l := range strings.SplitAfter(string(body), "\n") {
			if l != "" {
				b.WriteString("  " + l)
			}
		}
	}
	return b.Bytes(), nil
}

// encodeInline encodes t as "key = value" lines in sorted key order, nested
// tables inline, so that it can sit under any table header. The encoder
// escapes newlines in strings, so each line is one key.
func encodeInline(t map[string]any) ([]byte, error) {
	var b bytes.Buffer
	enc := toml.NewEncoder(&b)
	enc.SetTablesInline(true)
	if err := enc.Encode(t); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// quote returns s as a TOML basic string.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
