package hoststoml

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io/fs"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
)

// Helpers shared by the tests: what containerd makes of a hosts dir, and
// byte-for-byte snapshots of directory trees.

const (
	pullResolve = docker.HostCapabilityPull | docker.HostCapabilityResolve
	allCaps     = pullResolve | docker.HostCapabilityPush | docker.HostCapabilityReferrers
	pullOnly    = docker.HostCapabilityPull
)

// hostView is the part of containerd's RegistryHost the tests compare.
type hostView struct {
	Scheme, Host, Path string
	Caps               docker.HostCapabilities
}

// containerdHosts is what containerd resolves registry to with config_path
// dir, through its own config package (the code CRI and the transfer
// service use).
func containerdHosts(t *testing.T, dir, registry string) []docker.RegistryHost {
	t.Helper()
	hosts, err := config.ConfigureHosts(context.Background(), config.HostOptions{
		HostDir: config.HostDirFromRoot(dir),
	})(registry)
	if err != nil {
		t.Fatalf("containerd ConfigureHosts(%s) with config_path %s: %v", registry, dir, err)
	}
	return hosts
}

func views(hosts []docker.RegistryHost) []hostView {
	var out []hostView
	for _, h := range hosts {
		out = append(out, hostView{h.Scheme, h.Host, h.Path, h.Capabilities})
	}
	return out
}

func assertHosts(t *testing.T, dir, registry string, want []hostView) []docker.RegistryHost {
	t.Helper()
	hosts := containerdHosts(t, dir, registry)
	if got := views(hosts); !reflect.DeepEqual(got, want) {
		t.Fatalf("containerd hosts for %s:\n got %+v\nwant %+v", registry, got, want)
	}
	return hosts
}

// rootCAs returns the CA pool containerd configured for a host.
func rootCAs(t *testing.T, h docker.RegistryHost) *x509.CertPool {
	t.Helper()
	tr, ok := h.Client.Transport.(*http.Transport)
	if !ok || tr.TLSClientConfig == nil || tr.TLSClientConfig.RootCAs == nil {
		t.Fatalf("host %s: no CA pool configured", h.Host)
	}
	return tr.TLSClientConfig.RootCAs
}

// poolWith is the system pool plus pemBytes: what containerd builds for a
// host with one ca file.
func poolWith(t *testing.T, pemBytes []byte) *x509.CertPool {
	t.Helper()
	p, err := x509.SystemCertPool()
	if err != nil {
		t.Fatal(err)
	}
	if !p.AppendCertsFromPEM(pemBytes) {
		t.Fatal("bad test CA")
	}
	return p
}

// testCA returns a self-signed CA certificate in PEM.
func testCA(t *testing.T, cn string) []byte {
	t.Helper()
	cert, _ := testKeyPair(t, cn)
	return cert
}

// testKeyPair returns a self-signed certificate and its key, in PEM.
func testKeyPair(t *testing.T, cn string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

// node is one entry of a tree snapshot.
type node struct {
	Mode fs.FileMode
	Data string // file bytes or symlink target
}

// snapshot maps every path under root (relative) to its mode and bytes.
func snapshot(t *testing.T, root string) map[string]node {
	t.Helper()
	out := map[string]node{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		st, err := os.Lstat(p)
		if err != nil {
			return err
		}
		n := node{Mode: st.Mode()}
		switch {
		case st.Mode()&fs.ModeSymlink != 0:
			n.Data, err = os.Readlink(p)
		case st.Mode().IsRegular():
			var b []byte
			b, err = os.ReadFile(p)
			n.Data = string(b)
		}
		out[rel] = n
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func assertSameTree(t *testing.T, what string, got, want map[string]node) {
	t.Helper()
	for p, w := range want {
		g, ok := got[p]
		switch {
		case !ok:
			t.Errorf("%s: %s missing", what, p)
		case g != w:
			t.Errorf("%s: %s is %v %q, want %v %q", what, p, g.Mode, g.Data, w.Mode, w.Data)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%s: unexpected %s", what, p)
		}
	}
}

// writeTree creates files under root: path -> content, with mode; a content
// starting with "->" makes a symlink, a path ending in "/" a directory.
type treeFile struct {
	Path string
	Data string
	Mode fs.FileMode
}

func writeTree(t *testing.T, root string, files ...treeFile) {
	t.Helper()
	for _, f := range files {
		p := filepath.Join(root, f.Path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		switch {
		case f.Path[len(f.Path)-1] == '/':
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		case len(f.Data) > 2 && f.Data[:2] == "->":
			if err := os.Symlink(f.Data[2:], p); err != nil {
				t.Fatal(err)
			}
			continue
		default:
			if err := os.WriteFile(p, []byte(f.Data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if f.Mode != 0 {
			if err := os.Chmod(p, f.Mode); err != nil {
				t.Fatal(err)
			}
		}
	}
}
