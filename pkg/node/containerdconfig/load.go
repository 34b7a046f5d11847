package containerdconfig

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// Plugin IDs and defaults, as in containerd v2.4.2.
const (
	// criPlugin is the 1.x CRI plugin ("cri" in version 1 files). containerd
	// 2.x migrates its image settings to imagesPlugin
	// (plugins/cri/images/plugin.go configMigration).
	criPlugin = "io.containerd.grpc.v1.cri"
	// imagesPlugin is containerd 2.x's CRI image service (config version 3+).
	imagesPlugin = "io.containerd.cri.v1.images"
	// latestVersion is containerd v2.4.2's version.ConfigVersion.
	latestVersion = 4
	// defaultConfigPath2x is the config_path containerd 2.x's CRI image
	// service uses on Linux when neither config_path nor mirrors is set
	// (plugins/cri/images/plugin.go).
	defaultConfigPath2x = "/etc/containerd/certs.d:/etc/docker/certs.d"
)

// file is one decoded containerd config file.
type file struct {
	path    string
	version int64
	doc     map[string]any
}

// load decodes path and, like containerd's LoadConfigWithPlugins, the files
// it imports (breadth first, each once), in the order containerd merges them.
func load(path string) ([]file, error) {
	var (
		files   []file
		loaded  = map[string]bool{}
		pending = []string{path}
	)
	for len(pending) > 0 {
		p := pending[0]
		pending = pending[1:]
		if loaded[p] {
			continue
		}
		f, err := decode(p)
		if err != nil {
			return nil, err
		}
		files = append(files, f)
		imports, err := resolveImports(p, f.doc["imports"])
		if err != nil {
			return nil, err
		}
		loaded[p] = true
		pending = append(pending, imports...)
	}
	return files, nil
}

func decode(path string) (file, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return file{}, fmt.Errorf("read %s: %w", path, err)
	}
	var doc map[string]any
	if err := toml.Unmarshal(b, &doc); err != nil {
		if de, ok := errors.AsType[*toml.DecodeError](err); ok {
			row, col := de.Position()
			return file{}, fmt.Errorf("parse %s: row %d column %d: %w", path, row, col, err)
		}
		return file{}, fmt.Errorf("parse %s: %w", path, err)
	}
	f := file{path: path, version: 1, doc: doc}
	if v, ok := doc["version"]; ok {
		n, ok := v.(int64)
		if !ok {
			return file{}, fmt.Errorf("parse %s: version is %T, not an integer", path, v)
		}
		if n > 1 {
			f.version = n
		}
	}
	return f, nil
}

// resolveImports is containerd's resolveImports: relative paths are relative
// to the importing file's directory, paths with "*" are globs.
func resolveImports(parent string, v any) ([]string, error) {
	if v == nil {
		return nil, nil
	}
	list, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("parse %s: imports is %T, not a list", parent, v)
	}
	var out []string
	for _, e := range list {
		p, ok := e.(string)
		if !ok {
			return nil, fmt.Errorf("parse %s: import %v is not a string", parent, e)
		}
		p = filepath.Clean(p)
		if !filepath.IsAbs(p) {
			p = filepath.Join(filepath.Dir(parent), p)
		}
		if strings.Contains(p, "*") {
			matches, err := filepath.Glob(p)
			if err != nil {
				return nil, fmt.Errorf("expand import %s of %s: %w", p, parent, err)
			}
			out = append(out, matches...)
			continue
		}
		out = append(out, p)
	}
	return out, nil
}

// plugins returns f's plugin tables under their full IDs: version 1 files
// name core plugins by short name ("cri"), which containerd's v1 migration
// renames.
func (f file) plugins() map[string]any {
	ps, _ := f.doc["plugins"].(map[string]any)
	if f.version > 1 {
		return ps
	}
	out := make(map[string]any, len(ps))
	for k, v := range ps {
		if k == "cri" {
			k = criPlugin
		}
		out[k] = v
	}
	return out
}

// disabled returns f's disabled_plugins under full IDs.
func (f file) disabled() []string {
	list, _ := f.doc["disabled_plugins"].([]any)
	var out []string
	for _, e := range list {
		s, _ := e.(string)
		if f.version <= 1 && s == "cri" {
			s = criPlugin
		}
		out = append(out, s)
	}
	return out
}

// imagesConfig is the CRI image service's configuration a file contributes
// on containerd 2.x: its imagesPlugin table, overlaid, for files older than
// the latest version, with the keys containerd's migration copies from the
// 1.x CRI plugin (plugins/cri/images/plugin.go migrateConfig).
func (f file) imagesConfig() map[string]any {
	ps := f.plugins()
	img := deepCopy(asMap(ps[imagesPlugin]))
	if f.version >= latestVersion {
		return img
	}
	cri := asMap(ps[criPlugin])
	for _, k := range []string{"registry", "max_concurrent_downloads", "image_pull_with_sync_fs"} {
		if v, ok := cri[k]; ok {
			img[k] = deepCopyValue(v)
		}
	}
	ctrd := asMap(cri["containerd"])
	for _, k := range []string{"disable_snapshot_annotations", "discard_unpacked_layers"} {
		if v, ok := ctrd[k]; ok {
			img[k] = v
		}
	}
	return img
}

// criConfig is the 1.x CRI plugin's table in a file.
func (f file) criConfig() map[string]any {
	return deepCopy(asMap(f.plugins()[criPlugin]))
}

// merge deep-merges src into dst as containerd merges imported files
// (mergo with override: tables merge key by key, other values replace).
func merge(dst, src map[string]any) {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				merge(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
}

func asMap(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

func deepCopy(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = deepCopyValue(v)
	}
	return out
}

func deepCopyValue(v any) any {
	switch v := v.(type) {
	case map[string]any:
		return deepCopy(v)
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = deepCopyValue(e)
		}
		return out
	default:
		return v
	}
}
