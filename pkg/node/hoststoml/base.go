package hoststoml

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/pelletier/go-toml/v2"
	tomlu "github.com/pelletier/go-toml/v2/unstable"
)

// base is the configuration containerd used for a registry before tagger wrote
// its own file: what tagger keeps after its mirror entry.
type base struct {
	// server is the previous file's server, "" when it had none.
	server string
	// root holds the previous file's other top-level keys (they configure the
	// server entry: ca, client, capabilities, header...).
	root map[string]any
	// hosts are the previous [host."..."] tables, in file order.
	hosts []keptHost
}

// keptHost is one [host."name"] table of a previous hosts.toml.
type keptHost struct {
	name  string
	table map[string]any
}

// hostFileConfig is containerd's hostFileConfig
// (core/remotes/docker/config/hosts.go): decoding into the same shape fails
// exactly where containerd's decoding fails.
type hostFileConfig struct {
	Capabilities []string       `toml:"capabilities"`
	CACert       any            `toml:"ca"`
	Client       any            `toml:"client"`
	SkipVerify   *bool          `toml:"skip_verify"`
	Header       map[string]any `toml:"header"`
	OverridePath bool           `toml:"override_path"`
	DialTimeout  string         `toml:"dial_timeout"`
}

// loadBase reads the host configuration containerd reads from the directory
// now at readDir and rewrites its file paths so that they still name the same
// files: containerd knew the directory as origDir (its path under config_path)
// and resolved relative paths against it; the directory's files are (or are
// about to be) at newDir.
//
// Like containerd (loadHostDir), a directory without a usable hosts.toml
// configures the default server with its Docker-style certificate files
// (*.crt CAs, *.cert/*.key client pairs); those become top-level ca/client
// keys so that they keep applying once tagger's hosts.toml exists.
func loadBase(readDir, origDir, newDir string) (base, error) {
	file := filepath.Join(readDir, "hosts.toml")
	b, err := os.ReadFile(file)
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		b = nil
	case err != nil:
		return base{}, fmt.Errorf("read %s: %w", file, err)
	}
	if len(b) > 0 {
		if bs, err := parseBase(b); err == nil {
			bs.rewritePaths(origDir, newDir)
			return bs, nil
		}
		// containerd logs the decode error and falls back to the certificate
		// files; so does the previous configuration tagger keeps.
	}
	return certFiles(readDir, newDir)
}

// parseBase decodes a hosts.toml as containerd does (parseHostsFile) and
// fails where containerd fails. Tables are kept whole, including keys
// containerd does not know, so that nothing the user wrote is dropped.
func parseBase(b []byte) (base, error) {
	var typed struct {
		hostFileConfig
		Server      string                    `toml:"server"`
		HostConfigs map[string]hostFileConfig `toml:"host"`
	}
	if err := toml.Unmarshal(b, &typed); err != nil {
		return base{}, err
	}
	order, err := hostOrder(b)
	if err != nil {
		return base{}, err
	}
	for _, name := range order {
		if err := validateHost(name, typed.HostConfigs[name]); err != nil {
			return base{}, fmt.Errorf("host %q: %w", name, err)
		}
	}
	if err := validateHost(typed.Server, typed.hostFileConfig); err != nil {
		return base{}, fmt.Errorf("server: %w", err)
	}

	var raw map[string]any
	if err := toml.Unmarshal(b, &raw); err != nil {
		return base{}, err
	}
	bs := base{server: typed.Server, root: map[string]any{}}
	for k, v := range raw {
		if k != "server" && k != "host" {
			bs.root[k] = v
		}
	}
	tables, _ := raw["host"].(map[string]any)
	for _, name := range order {
		t, _ := tables[name].(map[string]any)
		if t == nil {
			t = map[string]any{}
		}
		bs.hosts = append(bs.hosts, keptHost{name: name, table: t})
	}
	return bs, nil
}

// hostOrder lists the [host."..."] tables in file order, as containerd's
// getSortedHosts does; containerd only uses hosts it lists, so tagger keeps
// exactly those (each once).
func hostOrder(b []byte) ([]string, error) {
	var (
		order []string
		seen  = map[string]bool{}
		p     tomlu.Parser
	)
	p.Reset(b)
	for p.NextExpression() {
		e := p.Expression()
		if e.Kind != tomlu.Table {
			continue
		}
		var parts []string
		for it := e.Key(); it.Next(); {
			parts = append(parts, string(it.Node().Data))
		}
		if len(parts) < 2 || parts[0] != "host" || seen[parts[1]] {
			continue
		}
		seen[parts[1]] = true
		order = append(order, parts[1])
	}
	return order, p.Error()
}

// validateHost repeats the checks of containerd's parseHostConfig.
func validateHost(server string, c hostFileConfig) error {
	if server != "" {
		if !strings.HasPrefix(server, "http") {
			server = "https://" + server
		}
		if _, err := url.Parse(server); err != nil {
			return fmt.Errorf("parse server %q: %w", server, err)
		}
	}
	for _, c := range c.Capabilities {
		switch strings.ToLower(c) {
		case "pull", "resolve", "push", "referrers":
		default:
			return fmt.Errorf("unknown capability %q", c)
		}
	}
	switch ca := c.CACert.(type) {
	case nil, string:
	case []any:
		if !allStrings(ca) {
			return fmt.Errorf("invalid ca %v", ca)
		}
	default:
		return fmt.Errorf("invalid type %T for ca", ca)
	}
	switch client := c.Client.(type) {
	case nil, string:
	case []any:
		for _, p := range client {
			switch p := p.(type) {
			case string:
			case []any:
				if len(p) != 2 || !allStrings(p) {
					return fmt.Errorf("invalid client pair %v", p)
				}
			default:
				return fmt.Errorf("invalid type %T in client", p)
			}
		}
	default:
		return fmt.Errorf("invalid type %T for client", client)
	}
	for k, v := range c.Header {
		switch v := v.(type) {
		case string:
		case []any:
			if !allStrings(v) {
				return fmt.Errorf("invalid header %q", k)
			}
		default:
			return fmt.Errorf("invalid type %T for header %q", v, k)
		}
	}
	if c.DialTimeout != "" {
		if _, err := time.ParseDuration(c.DialTimeout); err != nil {
			return fmt.Errorf("dial_timeout: %w", err)
		}
	}
	return nil
}

func allStrings(vs []any) bool {
	for _, v := range vs {
		if _, ok := v.(string); !ok {
			return false
		}
	}
	return true
}

// certFiles is containerd's loadCertFiles on readDir, expressed as top-level
// keys naming the files at newDir.
func certFiles(readDir, newDir string) (base, error) {
	entries, err := os.ReadDir(readDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
		return base{}, fmt.Errorf("list %s: %w", readDir, err)
	}
	var cas, clients []any
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		name := e.Name()
		if strings.HasSuffix(name, ".crt") {
			cas = append(cas, filepath.Join(newDir, name))
		}
		if strings.HasSuffix(name, ".cert") {
			key := strings.TrimSuffix(name, ".cert") + ".key"
			switch _, err := os.Stat(filepath.Join(readDir, key)); {
			case err == nil:
				clients = append(clients, []any{filepath.Join(newDir, name), filepath.Join(newDir, key)})
			case errors.Is(err, fs.ErrNotExist):
				clients = append(clients, filepath.Join(newDir, name))
			default:
				return base{}, fmt.Errorf("inspect %s: %w", filepath.Join(readDir, key), err)
			}
		}
	}
	bs := base{root: map[string]any{}}
	if len(cas) > 0 {
		bs.root["ca"] = cas
	}
	if len(clients) > 0 {
		bs.root["client"] = clients
	}
	return bs, nil
}

// rewritePaths makes the ca and client paths of every kept table absolute,
// naming where the files are now.
func (b *base) rewritePaths(origDir, newDir string) {
	fix := func(p string) string { return relocate(p, origDir, newDir) }
	rewriteTable(b.root, fix)
	for _, h := range b.hosts {
		rewriteTable(h.table, fix)
	}
}

func rewriteTable(t map[string]any, fix func(string) string) {
	if ca, ok := t["ca"]; ok {
		t["ca"] = mapStrings(ca, fix)
	}
	if client, ok := t["client"]; ok {
		t["client"] = mapStrings(client, fix)
	}
}

// mapStrings applies fix to a string or to the strings of (nested) arrays.
func mapStrings(v any, fix func(string) string) any {
	switch v := v.(type) {
	case string:
		return fix(v)
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = mapStrings(e, fix)
		}
		return out
	default:
		return v
	}
}

// relocate returns where the file that containerd knew as p is now. containerd
// resolves a relative p against origDir (makeAbsPath: filepath.Join). Files
// inside origDir moved with it to newDir (whether p named them relatively or
// absolutely); files outside did not move.
func relocate(p, origDir, newDir string) string {
	abs := p
	if !filepath.IsAbs(p) {
		abs = filepath.Join(origDir, p)
	}
	rel, err := filepath.Rel(origDir, abs)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return abs
	}
	return filepath.Join(newDir, rel)
}
