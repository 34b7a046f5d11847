package containerdconfig

import (
	"os"
	"path/filepath"
	"testing"
)

// writeFiles writes files (names relative to dir) and returns dir's
// config.toml.
func writeFiles(t *testing.T, dir string, files map[string]string) string {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "config.toml")
}

// TestLoad checks the wiring to containerd's loader: imports merge in
// containerd's order, version 1 names and version 2 tables are migrated the
// way containerd migrates them at start (which needs the CRI image service's
// registration linked), and containerd's defaults fill what files leave out.
func TestLoad(t *testing.T) {
	tests := []struct {
		name        string
		files       map[string]string
		wantVersion int
		want        imageSettings
	}{
		{
			name: "drop-ins override and merge deeply, in glob order",
			files: map[string]string{
				"config.toml": `version = 3
imports = ["conf.d/*.toml", "extra.toml"]
[plugins."io.containerd.cri.v1.images"]
  max_concurrent_downloads = 5
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
`,
			},
			wantVersion: 3,
			want: imageSettings{
				Registry:          registrySettings{ConfigPath: "/c"},
				UseLocalImagePull: true, DisableSnapshotAnnotations: true, MaxConcurrentDownloads: 5,
			},
		},
		{
			name: "version 2: the 1.x CRI plugin's image settings are migrated",
			files: map[string]string{"config.toml": `version = 2
[plugins."io.containerd.grpc.v1.cri"]
  max_concurrent_downloads = 7
  [plugins."io.containerd.grpc.v1.cri".containerd]
    discard_unpacked_layers = true
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "/etc/containerd/certs.d"
`},
			wantVersion: 2,
			want: imageSettings{
				Registry:                   registrySettings{ConfigPath: "/etc/containerd/certs.d"},
				DisableSnapshotAnnotations: true, DiscardUnpackedLayers: true, MaxConcurrentDownloads: 7,
			},
		},
		{
			name: "version 1: short plugin names, then the version 2 migration",
			files: map[string]string{"config.toml": `[plugins.cri.registry]
  config_path = "/etc/containerd/certs.d"
`},
			wantVersion: 1,
			want: imageSettings{
				Registry:                   registrySettings{ConfigPath: "/etc/containerd/certs.d"},
				DisableSnapshotAnnotations: true, MaxConcurrentDownloads: 3,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := load(writeFiles(t, t.TempDir(), tt.files))
			if err != nil {
				t.Fatal(err)
			}
			if l.version != tt.wantVersion {
				t.Errorf("version = %d, want %d", l.version, tt.wantVersion)
			}
			got, err := images(&l.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if got.Registry.ConfigPath != tt.want.Registry.ConfigPath || got.UseLocalImagePull != tt.want.UseLocalImagePull ||
				got.DisableSnapshotAnnotations != tt.want.DisableSnapshotAnnotations || got.DiscardUnpackedLayers != tt.want.DiscardUnpackedLayers ||
				got.MaxConcurrentDownloads != tt.want.MaxConcurrentDownloads || got.ImagePullWithSyncFs != tt.want.ImagePullWithSyncFs {
				t.Errorf("image settings:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// TestLoadVersion1CRIRegistry checks the 1.x view of a version 1 file: its
// "cri" table is read under the full plugin ID.
func TestLoadVersion1CRIRegistry(t *testing.T) {
	l, err := load(writeFiles(t, t.TempDir(), map[string]string{"config.toml": `disabled_plugins = ["cri"]
[plugins.cri.registry]
  config_path = "/x"
`}))
	if err != nil {
		t.Fatal(err)
	}
	reg, err := criRegistry(&l.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if reg.ConfigPath != "/x" {
		t.Errorf("config_path = %q, want /x", reg.ConfigPath)
	}
	if len(l.cfg.DisabledPlugins) != 1 || l.cfg.DisabledPlugins[0] != criPlugin {
		t.Errorf("disabled_plugins = %q, want [%s]", l.cfg.DisabledPlugins, criPlugin)
	}
}
