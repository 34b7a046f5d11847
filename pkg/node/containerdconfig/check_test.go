package containerdconfig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const hostsDir = "/etc/containerd/certs.d"

func TestCheck(t *testing.T) {
	tests := []struct {
		name string
		// files maps names (relative to a temporary dir) to contents;
		// "config.toml" is checked. No config.toml means a missing file.
		files          map[string]string
		wantOK         bool
		wantVersion    string
		wantConfigPath string
		// wantProblems and wantWarnings are substrings, one per finding,
		// in order; wantFix are substrings of Fix.
		wantProblems []string
		wantWarnings []string
		wantFix      []string
	}{
		{
			name:        "no config file: defaults ignore hosts.toml on 1.x and 2.x",
			files:       map[string]string{},
			wantVersion: "unknown",
			wantProblems: []string{
				"containerd 1.x: registry config_path is not set",
				`containerd 2.x: config_path is not set, so containerd uses its default "/etc/containerd/certs.d:/etc/docker/certs.d", a colon-separated list`,
			},
			wantWarnings: []string{"no containerd config at"},
			wantFix:      []string{"create", "version = 2", `config_path = "/etc/containerd/certs.d"`, `plugins."io.containerd.grpc.v1.cri".registry`, "restart containerd"},
		},
		{
			name: "version 3, config_path is the hosts dir",
			files: map[string]string{"config.toml": `version = 3
[plugins."io.containerd.cri.v1.images".registry]
  config_path = "/etc/containerd/certs.d/"
`},
			wantOK: true, wantVersion: "2.x", wantConfigPath: "/etc/containerd/certs.d/",
		},
		{
			name: "version 4 behaves as version 3",
			files: map[string]string{"config.toml": `version = 4
[plugins.'io.containerd.cri.v1.images'.registry]
  config_path = '/etc/containerd/certs.d'
`},
			wantOK: true, wantVersion: "2.x", wantConfigPath: hostsDir,
		},
		{
			name: "version 3, config_path unset: the default list is not split by the transfer service",
			files: map[string]string{"config.toml": `version = 3
[plugins."io.containerd.cri.v1.images".registry]
  config_path = ""
`},
			wantVersion: "2.x", wantConfigPath: defaultConfigPath2x,
			wantProblems: []string{"config_path is not set, so containerd uses its default"},
			wantFix:      []string{`config_path = "/etc/containerd/certs.d" (one directory)`, "use_local_image_pull = true"},
		},
		{
			name: "version 3, colon list with the transfer service: the colon-list trap",
			files: map[string]string{"config.toml": `version = 3
[plugins."io.containerd.cri.v1.images"]
  use_local_image_pull = false
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "/etc/containerd/certs.d:/etc/docker/certs.d"
`},
			wantVersion: "2.x", wantConfigPath: "/etc/containerd/certs.d:/etc/docker/certs.d",
			wantProblems: []string{`config_path "/etc/containerd/certs.d:/etc/docker/certs.d" is a colon-separated list: the default pull path (the transfer service, use_local_image_pull = false) does not split it`},
			wantFix:      []string{`plugins."io.containerd.cri.v1.images".registry`, "use_local_image_pull = true"},
		},
		{
			name: "version 3, colon list with local image pull and the hosts dir first",
			files: map[string]string{"config.toml": `version = 3
[plugins."io.containerd.cri.v1.images"]
  use_local_image_pull = true
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "/etc/containerd/certs.d:/etc/docker/certs.d"
`},
			wantOK: true, wantVersion: "2.x", wantConfigPath: "/etc/containerd/certs.d:/etc/docker/certs.d",
		},
		{
			name: "version 3, colon list with local image pull and the hosts dir second",
			files: map[string]string{"config.toml": `version = 3
[plugins."io.containerd.cri.v1.images"]
  use_local_image_pull = true
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "/etc/docker/certs.d:/etc/containerd/certs.d"
`},
			wantVersion: "2.x", wantConfigPath: "/etc/docker/certs.d:/etc/containerd/certs.d",
			wantProblems: []string{`lists /etc/docker/certs.d before "/etc/containerd/certs.d"`},
			wantFix:      []string{`put "/etc/containerd/certs.d" first`},
		},
		{
			name: "version 3, colon list split only because a setting forces local image pull",
			files: map[string]string{"config.toml": `version = 3
[plugins."io.containerd.cri.v1.images"]
  max_concurrent_downloads = 10
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "/etc/containerd/certs.d:/etc/docker/certs.d"
`},
			wantOK: true, wantVersion: "2.x", wantConfigPath: "/etc/containerd/certs.d:/etc/docker/certs.d",
			wantWarnings: []string{"only because max_concurrent_downloads = 10 makes it fall back to local image pull"},
		},
		{
			name: "version 3, config_path elsewhere",
			files: map[string]string{"config.toml": `version = 3
[plugins."io.containerd.cri.v1.images".registry]
  config_path = "/var/lib/registry-hosts"
`},
			wantVersion: "2.x", wantConfigPath: "/var/lib/registry-hosts",
			wantProblems: []string{`config_path "/var/lib/registry-hosts" does not include "/etc/containerd/certs.d"`},
			wantFix:      []string{`set config_path = "/etc/containerd/certs.d"`},
		},
		{
			name: "version 3, mirrors and config_path: containerd refuses the config",
			files: map[string]string{"config.toml": `version = 3
[plugins."io.containerd.cri.v1.images".registry]
  config_path = "/etc/containerd/certs.d"
  [plugins."io.containerd.cri.v1.images".registry.mirrors."docker.io"]
    endpoint = ["https://mirror.corp"]
`},
			wantVersion: "2.x", wantConfigPath: hostsDir,
			wantProblems: []string{"registry.mirrors and registry config_path are both set"},
			wantFix:      []string{`remove the [plugins."io.containerd.cri.v1.images".registry.mirrors] tables`},
		},
		{
			name: "version 3, mirrors without config_path: hosts.toml ignored",
			files: map[string]string{"config.toml": `version = 3
[plugins."io.containerd.cri.v1.images".registry.mirrors."docker.io"]
  endpoint = ["https://mirror.corp"]
`},
			wantVersion:  "2.x",
			wantProblems: []string{"registry.mirrors is set and config_path is not"},
			wantFix:      []string{"mirrors] tables", `set config_path = "/etc/containerd/certs.d"`},
		},
		{
			name: "version 3, deprecated configs next to config_path: warning only",
			files: map[string]string{"config.toml": `version = 3
[plugins."io.containerd.cri.v1.images".registry]
  config_path = "/etc/containerd/certs.d"
  [plugins."io.containerd.cri.v1.images".registry.configs."quay.io".auth]
    username = "u"
`},
			wantOK: true, wantVersion: "2.x", wantConfigPath: hostsDir,
			wantWarnings: []string{"registry.configs is deprecated"},
		},
		{
			name: "version 2, config_path is the hosts dir: fine on 1.x and 2.x",
			files: map[string]string{"config.toml": `version = 2
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d"
`},
			wantOK: true, wantVersion: "1.x", wantConfigPath: hostsDir,
		},
		{
			name: "version 2, config_path unset",
			files: map[string]string{"config.toml": `version = 2
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = ""
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors]
`},
			wantVersion: "1.x",
			wantProblems: []string{
				"containerd 1.x: registry config_path is not set, and containerd 1.x has no default",
				"containerd 2.x (which migrates this version 2 file): config_path is not set, so containerd uses its default",
			},
			wantFix: []string{`plugins."io.containerd.grpc.v1.cri".registry`},
		},
		{
			name: "version 2, colon list: 1.x splits it, 2.x does not",
			files: map[string]string{"config.toml": `version = 2
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d:/etc/docker/certs.d"
`},
			wantVersion: "1.x", wantConfigPath: "/etc/containerd/certs.d:/etc/docker/certs.d",
			wantProblems: []string{"containerd 2.x (which migrates this version 2 file): config_path \"/etc/containerd/certs.d:/etc/docker/certs.d\" is a colon-separated list"},
		},
		{
			// containerd v2.4.2 migrates the containerd table's image settings
			// only when it has runtimes (plugins/cri/images migrateConfig).
			name: "version 2, colon list, a setting that would force local pull is not migrated without runtimes",
			files: map[string]string{"config.toml": `version = 2
[plugins."io.containerd.grpc.v1.cri".containerd]
  disable_snapshot_annotations = false
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d:/etc/docker/certs.d"
`},
			wantVersion: "1.x", wantConfigPath: "/etc/containerd/certs.d:/etc/docker/certs.d",
			wantProblems: []string{"containerd 2.x (which migrates this version 2 file): config_path \"/etc/containerd/certs.d:/etc/docker/certs.d\" is a colon-separated list: the default pull path"},
		},
		{
			name: "version 2, colon list with a migrated setting that forces local pull on 2.x",
			files: map[string]string{"config.toml": `version = 2
[plugins."io.containerd.grpc.v1.cri".containerd]
  disable_snapshot_annotations = false
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d:/etc/docker/certs.d"
`},
			wantOK: true, wantVersion: "1.x", wantConfigPath: "/etc/containerd/certs.d:/etc/docker/certs.d",
			wantWarnings: []string{"containerd 2.x (which migrates this version 2 file): config_path \"/etc/containerd/certs.d:/etc/docker/certs.d\" is a colon-separated list that containerd splits only because disable_snapshot_annotations = false"},
		},
		{
			name: "version 2, elsewhere: one problem for both lines",
			files: map[string]string{"config.toml": `version = 2
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/docker/certs.d"
`},
			wantVersion: "1.x", wantConfigPath: "/etc/docker/certs.d",
			wantProblems: []string{`config_path "/etc/docker/certs.d" does not include`},
		},
		{
			name: "version 2, CRI disabled",
			files: map[string]string{"config.toml": `version = 2
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d"
`},
			wantVersion: "1.x", wantConfigPath: hostsDir,
			wantProblems: []string{"plugin io.containerd.grpc.v1.cri is in disabled_plugins"},
			wantFix:      []string{`remove "io.containerd.grpc.v1.cri" from disabled_plugins`},
		},
		{
			name: "version 1 (no version key) uses short plugin names",
			files: map[string]string{"config.toml": `disabled_plugins = ["cri"]
[plugins.cri.registry]
  config_path = "/etc/containerd/certs.d"
`},
			wantVersion: "1.x", wantConfigPath: hostsDir,
			wantProblems: []string{"plugin io.containerd.grpc.v1.cri is in disabled_plugins"},
			wantFix:      []string{`remove "cri" from disabled_plugins`},
		},
		{
			name: "imports: a drop-in sets config_path",
			files: map[string]string{
				"config.toml": `version = 3
imports = ["conf.d/*.toml"]
[plugins."io.containerd.cri.v1.images".registry]
  config_path = "/etc/docker/certs.d"
`,
				"conf.d/10-tagger.toml": `version = 3
[plugins."io.containerd.cri.v1.images".registry]
  config_path = "/etc/containerd/certs.d"
`,
				"conf.d/20-other.toml": `version = 3
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
`,
			},
			wantOK: true, wantVersion: "2.x", wantConfigPath: hostsDir,
		},
		{
			name: "imports: a missing import stops containerd",
			files: map[string]string{
				"config.toml": `version = 3
imports = ["/dev/null/never"]
`,
			},
			wantVersion:  "unknown",
			wantProblems: []string{"/dev/null/never"},
		},
		{
			name: "imports: a version 2 drop-in is migrated before merging",
			files: map[string]string{
				"config.toml": `version = 3
imports = ["drop.toml"]
[plugins."io.containerd.cri.v1.images".registry]
  config_path = "/etc/docker/certs.d"
`,
				"drop.toml": `version = 2
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d"
`,
			},
			wantOK: true, wantVersion: "2.x", wantConfigPath: hostsDir,
		},
		{
			name:         "a version newer than containerd knows: containerd refuses it",
			files:        map[string]string{"config.toml": "version = 99\n"},
			wantVersion:  "unknown",
			wantProblems: []string{"expected containerd config version equal to or less than"},
		},
		{
			name: "a CRI table that is not a table: containerd's migration fails",
			files: map[string]string{"config.toml": `version = 2
[plugins]
  "io.containerd.grpc.v1.cri" = "x"
`},
			wantVersion:  "unknown",
			wantProblems: []string{"containerd's config migration fails"},
		},
		{
			name:         "unparseable TOML",
			files:        map[string]string{"config.toml": "version = 3\n[plugins\nx = 1\n"},
			wantVersion:  "unknown",
			wantProblems: []string{"failed to unmarshal TOML", "row 2"},
		},
		{
			name: "wrong type for config_path",
			files: map[string]string{"config.toml": `version = 3
[plugins."io.containerd.cri.v1.images".registry]
  config_path = ["/etc/containerd/certs.d"]
`},
			wantVersion:  "2.x",
			wantProblems: []string{"cannot decode TOML array into struct field config.Registry.ConfigPath of type string: containerd cannot load its CRI image service"},
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
			r := Check(filepath.Join(dir, "config.toml"), hostsDir)
			t.Logf("report: %+v", r)

			if r.OK != tt.wantOK || r.Version != tt.wantVersion || r.ConfigPath != tt.wantConfigPath {
				t.Errorf("OK, Version, ConfigPath = %v, %q, %q; want %v, %q, %q", r.OK, r.Version, r.ConfigPath, tt.wantOK, tt.wantVersion, tt.wantConfigPath)
			}
			if tt.name == "unparseable TOML" {
				// One problem carrying the parse error.
				if len(r.Problems) != 1 {
					t.Fatalf("problems = %q", r.Problems)
				}
				for _, w := range tt.wantProblems {
					if !strings.Contains(r.Problems[0], w) {
						t.Errorf("problem %q does not mention %q", r.Problems[0], w)
					}
				}
			} else {
				matchAll(t, "problems", r.Problems, tt.wantProblems)
			}
			matchAll(t, "warnings", r.Warnings, tt.wantWarnings)
			if r.OK != (len(r.Problems) == 0) {
				t.Errorf("OK = %v with %d problems", r.OK, len(r.Problems))
			}
			if (r.Fix == "") != r.OK {
				t.Errorf("Fix = %q with OK = %v", r.Fix, r.OK)
			}
			for _, w := range tt.wantFix {
				if !strings.Contains(r.Fix, w) {
					t.Errorf("Fix %q does not mention %q", r.Fix, w)
				}
			}
		})
	}
}

// matchAll checks that got has one entry per want, each containing it.
func matchAll(t *testing.T, what string, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s = %q, want %d matching %q", what, got, len(want), want)
		return
	}
	for i := range want {
		if !strings.Contains(got[i], want[i]) {
			t.Errorf("%s[%d] = %q, want it to contain %q", what, i, got[i], want[i])
		}
	}
}
