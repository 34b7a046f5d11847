package hoststoml

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/containerd/containerd/v2/core/remotes/docker/config"
)

func TestValidRegistry(t *testing.T) {
	tests := []struct {
		registry string
		ok       bool
	}{
		{"docker.io", true},
		{"127.0.0.1:41234", true},
		{"localhost:5000", true},
		{"[::1]:5000", true},
		{"", false},
		{"_default", false},
		{"_backup", false},
		{".tagger-new-1", false},
		{"..", false},
		{"a/b", false},
		{"docker.io:", false},
		{"docker.io:http", false},
		{"docker.io:0", false},
		{"docker.io:070", false},
		{"::1", false},
	}
	for _, tt := range tests {
		if err := validRegistry(tt.registry); (err == nil) != tt.ok {
			t.Errorf("validRegistry(%q) = %v, want ok %v", tt.registry, err, tt.ok)
		}
	}
}

func TestLookupDirs(t *testing.T) {
	tests := []struct {
		registry string
		want     []string
	}{
		{"docker.io", []string{"docker.io"}},
		{"127.0.0.1:41234", []string{"127.0.0.1_41234_", "127.0.0.1:41234"}},
		{"[::1]:5000", []string{"[::1]_5000_", "[::1]:5000"}},
	}
	for _, tt := range tests {
		got := lookupDirs(tt.registry)
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("lookupDirs(%q) = %v, want %v", tt.registry, got, tt.want)
		}
		for _, n := range got {
			if r := registryOfDir(n); r != tt.registry {
				t.Errorf("registryOfDir(%q) = %q, want %q", n, r, tt.registry)
			}
		}
	}
}

// TestLookupDirsMatchContainerd checks lookupDirs against containerd's own
// HostDirFromRoot: each name, alone, is the directory containerd picks, and
// the first name wins when several exist.
func TestLookupDirsMatchContainerd(t *testing.T) {
	for _, registry := range []string{"docker.io", "127.0.0.1:41234", "localhost:5000"} {
		names := lookupDirs(registry)
		for i := range names {
			root := t.TempDir()
			for _, n := range names[i:] {
				if err := os.Mkdir(filepath.Join(root, n), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Mkdir(filepath.Join(root, defaultDir), 0o755); err != nil {
				t.Fatal(err)
			}
			got, err := config.HostDirFromRoot(root)(registry)
			if err != nil {
				t.Fatal(err)
			}
			if want := filepath.Join(root, names[i]); got != want {
				t.Errorf("%s with %v: containerd reads %s, want %s", registry, names[i:], got, want)
			}
		}
	}
}

func TestRelocate(t *testing.T) {
	const orig, moved = "/etc/containerd/certs.d/docker.io", "/etc/containerd/certs.d/_backup/docker.io"
	tests := []struct{ p, want string }{
		{"ca.pem", moved + "/ca.pem"},
		{"./keys/c.key", moved + "/keys/c.key"},
		{"../other/ca.pem", "/etc/containerd/certs.d/other/ca.pem"},
		{"/etc/ssl/corp.pem", "/etc/ssl/corp.pem"},
		{orig + "/ca.pem", moved + "/ca.pem"},
	}
	for _, tt := range tests {
		if got := relocate(tt.p, orig, moved); got != tt.want {
			t.Errorf("relocate(%q) = %q, want %q", tt.p, got, tt.want)
		}
	}
}
