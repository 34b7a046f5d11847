package containerdconfig

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	srvconfig "github.com/containerd/containerd/v2/cmd/containerd/server/config"
	"github.com/containerd/containerd/v2/version"
)

func TestLatestVersion(t *testing.T) {
	if version.ConfigVersion != latestVersion {
		t.Errorf("containerd's ConfigVersion is %d, this package models %d", version.ConfigVersion, latestVersion)
	}
}

// TestLoadMatchesContainerd checks load and merge (imports, their order,
// deep merging, version 1 plugin names) against containerd's own config
// loader. containerd's per-plugin migrations are not run here (they need the
// CRI plugins); check2x models plugins/cri/images configMigration.
func TestLoadMatchesContainerd(t *testing.T) {
	tests := []struct {
		name   string
		files  map[string]string
		plugin string
	}{
		{
			name:   "drop-ins override and merge deeply, in glob order",
			plugin: imagesPlugin,
			files: map[string]string{
				"config.toml": `version = 3
imports = ["conf.d/*.toml", "extra.toml"]
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "/a"
`,
				"conf.d/10.toml": `version = 3
[plugins."io.containerd.cri.v1.images".registry]
  config_path = "/b"
`,
				"conf.d/20.toml": `version = 3
imports = ["../config.toml"]
[plugins."io.containerd.cri.v1.images"]
  use_local_image_pull = true
`,
				"extra.toml": `version = 3
[plugins."io.containerd.cri.v1.images".registry]
  config_path = "/c"
  [plugins."io.containerd.cri.v1.images".registry.headers]
    X = ["y"]
`,
			},
		},
		{
			name:   "version 1 short names",
			plugin: criPlugin,
			files: map[string]string{
				"config.toml": `[plugins.cri.registry]
  config_path = "/etc/containerd/certs.d"
`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range tt.files {
				p := filepath.Join(dir, name)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			path := filepath.Join(dir, "config.toml")

			// containerd starts from a config at the latest version and
			// migrates older files up to it.
			want := srvconfig.Config{Version: latestVersion}
			if err := srvconfig.LoadConfig(context.Background(), path, &want); err != nil {
				t.Fatal(err)
			}
			files, err := load(path)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]any{}
			for _, f := range files {
				merge(got, deepCopy(asMap(f.plugins()[tt.plugin])))
			}
			if w := asMap(want.Plugins[tt.plugin]); !reflect.DeepEqual(got, w) {
				t.Errorf("merged %s:\n got %v\nwant %v", tt.plugin, got, w)
			}
		})
	}
}
