package hoststoml

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"
)

const mirrorURL = "http://127.0.0.1:5050"

var ourMirror = hostView{"http", "127.0.0.1:5050", "/v2", pullResolve}

func newManager(t *testing.T, dir string, mod ...func(*Options)) *Manager {
	t.Helper()
	o := Options{Dir: dir, MirrorURL: mirrorURL, DialTimeout: 200 * time.Millisecond}
	for _, f := range mod {
		f(&o)
	}
	m, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func only(names ...string) func(string) bool {
	return func(r string) bool {
		for _, n := range names {
			if n == r {
				return true
			}
		}
		return false
	}
}

func TestSyncContainerdReadsHosts(t *testing.T) {
	tests := []struct {
		name     string
		registry string
		opts     func(*Options)
		wantDir  string
		want     []hostView
	}{
		{
			name:     "docker.io goes to registry-1.docker.io after the mirror",
			registry: "docker.io",
			wantDir:  "docker.io",
			want:     []hostView{ourMirror, {"https", "registry-1.docker.io", "/v2", allCaps}},
		},
		{
			name:     "other registry upstream is itself over https",
			registry: "quay.io",
			wantDir:  "quay.io",
			want:     []hostView{ourMirror, {"https", "quay.io", "/v2", allCaps}},
		},
		{
			name:     "plain HTTP upstream keeps its port in the directory name",
			registry: "127.0.0.1:41234",
			opts:     func(o *Options) { o.PlainHTTP = only("127.0.0.1:41234") },
			wantDir:  "127.0.0.1:41234",
			want:     []hostView{ourMirror, {"http", "127.0.0.1:41234", "/v2", allCaps}},
		},
		{
			name:     "localhost registry not declared plain HTTP is https",
			registry: "localhost:5000",
			wantDir:  "localhost:5000",
			want:     []hostView{ourMirror, {"https", "localhost:5000", "/v2", allCaps}},
		},
		{
			name:     "strict registry has only the mirror",
			registry: "docker.io",
			opts:     func(o *Options) { o.Strict = only("docker.io") },
			wantDir:  "docker.io",
			want:     []hostView{ourMirror},
		},
		{
			name:     "mirror URL with a trailing slash",
			registry: "ghcr.io",
			opts:     func(o *Options) { o.MirrorURL = mirrorURL + "/" },
			wantDir:  "ghcr.io",
			want:     []hostView{ourMirror, {"https", "ghcr.io", "/v2", allCaps}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			var mods []func(*Options)
			if tt.opts != nil {
				mods = append(mods, tt.opts)
			}
			m := newManager(t, dir, mods...)
			if err := m.Sync([]string{tt.registry}); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(dir, tt.wantDir, "hosts.toml")); err != nil {
				t.Fatal(err)
			}
			assertHosts(t, dir, tt.registry, tt.want)
			if got := m.Written(); !reflect.DeepEqual(got, []string{tt.registry}) {
				t.Errorf("Written() = %v", got)
			}
		})
	}
}

func TestRenderDockerIO(t *testing.T) {
	dir := t.TempDir()
	if err := newManager(t, dir).Sync([]string{"docker.io"}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "docker.io", "hosts.toml"))
	if err != nil {
		t.Fatal(err)
	}
	want := `# managed by tagger node-agent; the previous file is kept in ../_backup
server = "https://registry-1.docker.io"

[host."http://127.0.0.1:5050"]
  capabilities = ["pull", "resolve"]
  dial_timeout = "200ms"
`
	if string(got) != want {
		t.Errorf("hosts.toml:\n%s\nwant:\n%s", got, want)
	}
}

// containerd does not expose a host's dial timeout, so this shows it took
// effect: with 1ns containerd's client for the mirror cannot connect, with
// 5s it can.
func TestDialTimeoutReachesContainerd(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	for _, tt := range []struct {
		timeout     time.Duration
		wantTimeout bool
	}{{time.Nanosecond, true}, {5 * time.Second, false}} {
		t.Run(tt.timeout.String(), func(t *testing.T) {
			dir := t.TempDir()
			m := newManager(t, dir, func(o *Options) { o.MirrorURL = srv.URL; o.DialTimeout = tt.timeout })
			if err := m.Sync([]string{"docker.io"}); err != nil {
				t.Fatal(err)
			}
			hosts := containerdHosts(t, dir, "docker.io")
			resp, err := hosts[0].Client.Get(srv.URL + "/v2/")
			if err == nil {
				resp.Body.Close()
			}
			var ne net.Error
			if got := errors.As(err, &ne) && ne.Timeout(); got != tt.wantTimeout {
				t.Fatalf("GET via containerd's mirror client: err = %v, want timeout %v", err, tt.wantTimeout)
			}
		})
	}
}

func TestSyncKeepsPreviousConfig(t *testing.T) {
	ca := testCA(t, "corp")
	tests := []struct {
		name     string
		hostsTOM string
		want     []hostView
	}{
		{
			name: "previous host entries follow ours",
			hostsTOM: `server = "https://registry-1.docker.io"
[host."https://mirror.corp"]
  capabilities = ["pull", "resolve"]
  ca = "corp-ca.pem"
  skip_verify = false
  [host."https://mirror.corp".header]
    x-corp = ["a", "b"]
`,
			want: []hostView{ourMirror, {"https", "mirror.corp", "/v2", pullResolve}, {"https", "registry-1.docker.io", "/v2", allCaps}},
		},
		{
			name: "previous server wins over the default upstream",
			hostsTOM: `server = "https://proxy.corp/dockerhub"
[host."https://mirror.corp"]
  ca = ["corp-ca.pem"]
  override_path = true
`,
			want: []hostView{ourMirror, {"https", "mirror.corp", "", allCaps}, {"https", "proxy.corp", "/dockerhub/v2", allCaps}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeTree(t, dir,
				treeFile{Path: "docker.io/hosts.toml", Data: tt.hostsTOM},
				treeFile{Path: "docker.io/corp-ca.pem", Data: string(ca), Mode: 0o600},
			)
			before := snapshot(t, filepath.Join(dir, "docker.io"))
			m := newManager(t, dir)
			if err := m.Sync([]string{"docker.io"}); err != nil {
				t.Fatal(err)
			}
			// The original directory is in _backup, unchanged.
			assertSameTree(t, "backup", snapshot(t, filepath.Join(dir, "_backup", "docker.io")), before)

			hosts := assertHosts(t, dir, "docker.io", tt.want)
			// containerd loaded the CA (ConfigureHosts fails when it cannot)
			// and trusts exactly that certificate for mirror.corp.
			if !rootCAs(t, hosts[1]).Equal(poolWith(t, ca)) {
				t.Error("mirror.corp: containerd's CA pool is not the system pool plus corp-ca.pem")
			}
			// The path we wrote is absolute, into the backup, same bytes.
			var parsed struct {
				Host map[string]struct {
					CA any `toml:"ca"`
				} `toml:"host"`
			}
			b, err := os.ReadFile(filepath.Join(dir, "docker.io", "hosts.toml"))
			if err != nil {
				t.Fatal(err)
			}
			if err := toml.Unmarshal(b, &parsed); err != nil {
				t.Fatal(err)
			}
			caPath, _ := parsed.Host["https://mirror.corp"].CA.(string)
			if arr, ok := parsed.Host["https://mirror.corp"].CA.([]any); ok && len(arr) == 1 {
				caPath, _ = arr[0].(string)
			}
			if want := filepath.Join(dir, "_backup", "docker.io", "corp-ca.pem"); caPath != want {
				t.Errorf("ca = %q, want %q", caPath, want)
			}
			if got, err := os.ReadFile(caPath); err != nil || string(got) != string(ca) {
				t.Errorf("ca file %s: %v, same bytes %v", caPath, err, string(got) == string(ca))
			}
			if h := hosts[1].Header; strings.Contains(tt.hostsTOM, "x-corp") && !reflect.DeepEqual(h["x-corp"], []string{"a", "b"}) {
				t.Errorf("mirror.corp header = %v", h)
			}
		})
	}
}

func TestSyncKeepsCertificateFiles(t *testing.T) {
	ca := testCA(t, "quay-ca")
	tests := []struct {
		name  string
		files []treeFile
	}{
		{"directory without hosts.toml", []treeFile{{Path: "quay.io/ca.crt", Data: string(ca)}}},
		{"hosts.toml containerd cannot use", []treeFile{
			{Path: "quay.io/hosts.toml", Data: "[host.\"https://x\"]\n  capabilities = [\"fly\"]\n"},
			{Path: "quay.io/ca.crt", Data: string(ca)},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeTree(t, dir, tt.files...)
			// Before: containerd uses the .crt for quay.io itself.
			hosts := assertHosts(t, dir, "quay.io", []hostView{{"https", "quay.io", "/v2", allCaps}})
			if !rootCAs(t, hosts[0]).Equal(poolWith(t, ca)) {
				t.Fatal("precondition: containerd does not use ca.crt")
			}
			if err := newManager(t, dir).Sync([]string{"quay.io"}); err != nil {
				t.Fatal(err)
			}
			hosts = assertHosts(t, dir, "quay.io", []hostView{ourMirror, {"https", "quay.io", "/v2", allCaps}})
			if !rootCAs(t, hosts[1]).Equal(poolWith(t, ca)) {
				t.Error("after Sync containerd no longer trusts ca.crt for quay.io")
			}
		})
	}
}

func TestSyncInheritsDefault(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, treeFile{Path: "_default/hosts.toml", Data: `[host."https://proxy.corp"]
  capabilities = ["pull", "resolve"]
`})
	initial := snapshot(t, dir)
	m := newManager(t, dir)
	if err := m.Sync([]string{"docker.io"}); err != nil {
		t.Fatal(err)
	}
	assertHosts(t, dir, "docker.io", []hostView{ourMirror, {"https", "proxy.corp", "/v2", pullResolve}, {"https", "registry-1.docker.io", "/v2", allCaps}})
	if _, err := os.Stat(filepath.Join(dir, "_backup")); !os.IsNotExist(err) {
		t.Errorf("_default must not be backed up: %v", err)
	}
	if err := m.Cleanup(); err != nil {
		t.Fatal(err)
	}
	assertSameTree(t, "after Cleanup", snapshot(t, dir), initial)
}

// For host:port containerd tries host_port_ first: a user directory under
// that name would shadow ours, so it is backed up and its entries kept.
func TestSyncPortDirectory(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, treeFile{Path: "127.0.0.1_41234_/hosts.toml", Data: `[host."https://m.corp"]
  capabilities = ["pull"]
`})
	initial := snapshot(t, dir)
	m := newManager(t, dir, func(o *Options) { o.PlainHTTP = only("127.0.0.1:41234") })
	if err := m.Sync([]string{"127.0.0.1:41234"}); err != nil {
		t.Fatal(err)
	}
	assertHosts(t, dir, "127.0.0.1:41234", []hostView{ourMirror, {"https", "m.corp", "/v2", pullOnly}, {"http", "127.0.0.1:41234", "/v2", allCaps}})
	if _, err := os.Stat(filepath.Join(dir, "_backup", "127.0.0.1_41234_", "hosts.toml")); err != nil {
		t.Error(err)
	}
	if err := m.Cleanup(); err != nil {
		t.Fatal(err)
	}
	assertSameTree(t, "after Cleanup", snapshot(t, dir), initial)
}

// userTree is a hosts dir as a user may have left it: a docker.io directory
// with a relative CA, a private key, a subdirectory and a symlink; a quay.io
// directory with Docker-style certificates; an unrelated ghcr.io directory.
func userTree(t *testing.T, dir string) {
	t.Helper()
	ca := string(testCA(t, "corp"))
	cert, key := testKeyPair(t, "client")
	writeTree(t, dir,
		treeFile{Path: "docker.io/", Mode: 0o750},
		treeFile{Path: "docker.io/hosts.toml", Data: "# mine\n[host.\"https://mirror.corp\"]\n  ca = \"corp-ca.pem\"\n  client = [[\"keys/c.cert\", \"keys/c.key\"]]\n", Mode: 0o640},
		treeFile{Path: "docker.io/corp-ca.pem", Data: ca, Mode: 0o600},
		treeFile{Path: "docker.io/keys/", Mode: 0o700},
		treeFile{Path: "docker.io/keys/c.cert", Data: string(cert), Mode: 0o644},
		treeFile{Path: "docker.io/keys/c.key", Data: string(key), Mode: 0o400},
		treeFile{Path: "docker.io/link.pem", Data: "->corp-ca.pem"},
		treeFile{Path: "quay.io/ca.crt", Data: ca, Mode: 0o444},
		treeFile{Path: "ghcr.io/hosts.toml", Data: "server = \"https://ghcr.corp\"\n"},
	)
}

func TestCleanupRestoresByteForByte(t *testing.T) {
	dir := t.TempDir()
	userTree(t, dir)
	initial := snapshot(t, dir)
	ghcr := snapshot(t, filepath.Join(dir, "ghcr.io"))

	m := newManager(t, dir)
	if err := m.Sync([]string{"docker.io", "quay.io", "registry.k8s.io"}); err != nil {
		t.Fatal(err)
	}
	assertSameTree(t, "unmanaged ghcr.io", snapshot(t, filepath.Join(dir, "ghcr.io")), ghcr)
	for _, r := range []string{"docker.io", "quay.io", "registry.k8s.io"} {
		if ok, err := managed(filepath.Join(dir, r)); !ok || err != nil {
			t.Errorf("%s not managed after Sync: %v", r, err)
		}
	}

	for i := range 2 { // idempotent
		if err := m.Cleanup(); err != nil {
			t.Fatalf("Cleanup #%d: %v", i+1, err)
		}
		assertSameTree(t, "after Cleanup", snapshot(t, dir), initial)
	}
	if got := m.Written(); len(got) != 0 {
		t.Errorf("Written() after Cleanup = %v", got)
	}
}

func TestSyncRemovesRegistriesThatLeave(t *testing.T) {
	dir := t.TempDir()
	userTree(t, dir)
	initial := snapshot(t, dir)
	quay := snapshot(t, filepath.Join(dir, "quay.io"))

	m := newManager(t, dir)
	if err := m.Sync([]string{"docker.io", "quay.io", "registry.k8s.io"}); err != nil {
		t.Fatal(err)
	}
	if err := m.Sync([]string{"docker.io"}); err != nil {
		t.Fatal(err)
	}
	assertSameTree(t, "quay.io restored", snapshot(t, filepath.Join(dir, "quay.io")), quay)
	if _, err := os.Stat(filepath.Join(dir, "registry.k8s.io")); !os.IsNotExist(err) {
		t.Errorf("registry.k8s.io (no previous directory) not removed: %v", err)
	}
	if got := m.Written(); !reflect.DeepEqual(got, []string{"docker.io"}) {
		t.Errorf("Written() = %v", got)
	}
	if err := m.Sync(nil); err != nil {
		t.Fatal(err)
	}
	assertSameTree(t, "after the last registry left", snapshot(t, dir), initial)
}

func TestSyncIdempotent(t *testing.T) {
	dir := t.TempDir()
	userTree(t, dir)
	regs := []string{"docker.io", "quay.io", "127.0.0.1:41234"}
	m := newManager(t, dir)
	if err := m.Sync(regs); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "docker.io", "hosts.toml")
	st1, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	tree := snapshot(t, dir)
	writes := m.writes

	if err := m.Sync(regs); err != nil {
		t.Fatal(err)
	}
	if m.writes != writes {
		t.Errorf("second Sync wrote %d files", m.writes-writes)
	}
	st2, _ := os.Stat(file)
	if !st2.ModTime().Equal(st1.ModTime()) {
		t.Error("second Sync touched docker.io/hosts.toml")
	}
	assertSameTree(t, "after second Sync", snapshot(t, dir), tree)

	// A new setting rewrites in place; the backup is unchanged.
	m2 := newManager(t, dir, func(o *Options) { o.DialTimeout = time.Second })
	if err := m2.Sync(regs); err != nil {
		t.Fatal(err)
	}
	if m2.writes != len(regs) {
		t.Errorf("Sync with a new dial timeout wrote %d files, want %d", m2.writes, len(regs))
	}
	b, _ := os.ReadFile(file)
	if !strings.Contains(string(b), `dial_timeout = "1s"`) {
		t.Errorf("hosts.toml not updated:\n%s", b)
	}
}

func TestCrashRecovery(t *testing.T) {
	regs := []string{"docker.io", "quay.io"}
	tests := []struct {
		name string
		// crash leaves dir as an interrupted step would.
		crash func(t *testing.T, dir string)
		// sync says whether the recovering call is Sync(regs) (else Cleanup).
		sync bool
	}{
		{
			name: "backup made, our directory not yet written: Sync finishes",
			crash: func(t *testing.T, dir string) {
				mustRename(t, filepath.Join(dir, "docker.io"), filepath.Join(dir, "_backup", "docker.io"))
				writeTree(t, dir, treeFile{Path: ".tagger-new-123/hosts.toml", Data: "half"})
			},
			sync: true,
		},
		{
			name: "backup made, our directory not yet written: Cleanup restores",
			crash: func(t *testing.T, dir string) {
				mustRename(t, filepath.Join(dir, "docker.io"), filepath.Join(dir, "_backup", "docker.io"))
				writeTree(t, dir, treeFile{Path: ".tagger-new-123/hosts.toml", Data: "half"})
			},
		},
		{
			name: "staging directory left before anything moved",
			crash: func(t *testing.T, dir string) {
				writeTree(t, dir, treeFile{Path: ".tagger-new-9/hosts.toml", Data: marker + "\n"})
			},
			sync: true,
		},
		{
			name: "temporary file left in our directory",
			crash: func(t *testing.T, dir string) {
				if err := newManager(t, dir).Sync(regs); err != nil {
					t.Fatal(err)
				}
				writeTree(t, dir, treeFile{Path: "docker.io/.tagger-hosts.toml-77", Data: "half"})
			},
			sync: true,
		},
		{
			name: "our directory moved away, backup not yet restored",
			crash: func(t *testing.T, dir string) {
				if err := newManager(t, dir).Sync(regs); err != nil {
					t.Fatal(err)
				}
				mustRename(t, filepath.Join(dir, "docker.io"), filepath.Join(dir, ".tagger-old-5"))
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// What an uninterrupted Sync writes, for comparison.
			clean := t.TempDir()
			userTree(t, clean)
			if err := newManager(t, clean).Sync(regs); err != nil {
				t.Fatal(err)
			}
			want, _ := os.ReadFile(filepath.Join(clean, "docker.io", "hosts.toml"))

			dir := t.TempDir()
			userTree(t, dir)
			initial := snapshot(t, dir)
			if err := os.MkdirAll(filepath.Join(dir, "_backup"), 0o700); err != nil {
				t.Fatal(err)
			}
			tt.crash(t, dir)

			m := newManager(t, dir)
			if tt.sync {
				if err := m.Sync(regs); err != nil {
					t.Fatal(err)
				}
				got, _ := os.ReadFile(filepath.Join(dir, "docker.io", "hosts.toml"))
				if g, w := string(got), strings.ReplaceAll(string(want), clean, dir); g != w {
					t.Errorf("recovered hosts.toml:\n%s\nwant:\n%s", g, w)
				}
				containerdHosts(t, dir, "docker.io") // its CA path resolves
			}
			if err := m.Cleanup(); err != nil {
				t.Fatal(err)
			}
			assertSameTree(t, "after Cleanup", snapshot(t, dir), initial)
		})
	}
}

func TestSyncRefusesConflicts(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir,
		treeFile{Path: "docker.io/hosts.toml", Data: "# user's new file\n"},
		treeFile{Path: "_backup/docker.io/hosts.toml", Data: "# user's old file\n"},
		treeFile{Path: "quay.io/", Data: ""},
	)
	initial := snapshot(t, dir)
	m := newManager(t, dir)
	err := m.Sync([]string{"docker.io", "quay.io", "bad/name"})
	if err == nil || !strings.Contains(err.Error(), "earlier backup") || !strings.Contains(err.Error(), "bad/name") {
		t.Fatalf("Sync error = %v", err)
	}
	if got := m.Written(); !reflect.DeepEqual(got, []string{"quay.io"}) {
		t.Errorf("Written() = %v", got)
	}
	// Cleanup cannot restore over the user's directory either; it keeps both.
	if err := m.Cleanup(); err == nil {
		t.Error("Cleanup restored a backup over a user directory")
	}
	assertSameTree(t, "after Cleanup", snapshot(t, dir), initial)
}

func TestNew(t *testing.T) {
	tests := []struct {
		name    string
		o       Options
		wantErr bool
	}{
		{"valid", Options{Dir: "/etc/containerd/certs.d", MirrorURL: mirrorURL}, false},
		{"https mirror with path", Options{Dir: "/d", MirrorURL: "https://mirror.local/base"}, false},
		{"no dir", Options{MirrorURL: mirrorURL}, true},
		{"dir list", Options{Dir: "/a:/b", MirrorURL: mirrorURL}, true},
		{"mirror without scheme", Options{Dir: "/d", MirrorURL: "127.0.0.1:5050"}, true},
		{"mirror with query", Options{Dir: "/d", MirrorURL: "http://m/?x=1"}, true},
		{"negative dial timeout", Options{Dir: "/d", MirrorURL: mirrorURL, DialTimeout: -1}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.o)
			if (err != nil) != tt.wantErr {
				t.Fatalf("New() error = %v, wantErr %v", err, tt.wantErr)
			}
		})
	}
}

func mustRename(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(from, to); err != nil {
		t.Fatal(err)
	}
}
