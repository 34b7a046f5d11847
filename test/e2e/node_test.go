package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/pkg/node"
	"github.com/tagger-project/tagger/pkg/pins"
)

func mustRef(t *testing.T, s string) pins.Reference {
	t.Helper()
	ref, err := pins.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// TestPinnedPulls covers scenarios 1-4: a pin holds on the node while the
// upstream moves, follows a check, rolls back (converging the node's existing
// record without any pod asking), and unpinned images fall through.
func TestPinnedPulls(t *testing.T) {
	r := newRig(t, rigOptions{})
	ref := r.up.Host() + "/team/app:v1"
	gen1 := r.up.PushImage(t, "team/app", "v1", rig.ImageOptions{Layers: 2})

	// 1. Tag pins app:v1 -> a CRI pull gets generation 1's digest.
	rig.CreateTag(t, r.c, rig.NewTag("app", ref))
	r.waitServed("app", ref, gen1.Digest.String())
	if got := r.freshPull(ref); got != gen1.Digest.String() {
		t.Fatalf("scenario 1: pulled %s, want generation 1 %s", got, gen1.Digest)
	}

	// 2. The upstream moves the tag: a fresh node still gets generation 1 ...
	gen2 := r.up.PushImage(t, "team/app", "v1", rig.ImageOptions{Layers: 2})
	if got := r.freshPull(ref); got != gen1.Digest.String() {
		t.Fatalf("scenario 2: before a check, a fresh pull got %s, want pinned %s (upstream has %s)", got, gen1.Digest, gen2.Digest)
	}
	// ... until a check records generation 2, which is then served.
	rig.AnnotateCheck(t, r.c, "app", "moved")
	r.waitServed("app", ref, gen2.Digest.String())
	if got := r.freshPull(ref); got != gen2.Digest.String() {
		t.Fatalf("scenario 2: after the check pulled %s, want generation 2 %s", got, gen2.Digest)
	}

	// 3. Roll back: the node's existing app:v1 record (generation 2, just
	// pulled) converges to generation 1 with no pull from us.
	rig.PatchTag(t, r.c, "app", `{"spec":{"generation":1}}`)
	r.waitServed("app", ref, gen1.Digest.String())
	rig.WaitFor(t, time.Minute, "node record converged to generation 1", func() (bool, string) {
		d, ok, err := r.ctd.ImageDigest(context.Background(), ref)
		return ok && err == nil && d == gen1.Digest.String(), fmt.Sprintf("recorded %s (%v, %v)", d, ok, err)
	})
	if got := r.freshPull(ref); got != gen1.Digest.String() {
		t.Fatalf("scenario 3: pulled %s, want generation 1 %s", got, gen1.Digest)
	}

	// 4. An unpinned image of the same registry pulls normally through the 404.
	other := r.up.PushImage(t, "team/other", "v1", rig.ImageOptions{})
	if got := r.freshPull(r.up.Host() + "/team/other:v1"); got != other.Digest.String() {
		t.Fatalf("scenario 4: unpinned pull got %s, want upstream %s", got, other.Digest)
	}
	// And an unpinned tag of the pinned repository too.
	v2 := r.up.PushImage(t, "team/app", "v2", rig.ImageOptions{})
	if got := r.freshPull(r.up.Host() + "/team/app:v2"); got != v2.Digest.String() {
		t.Fatalf("scenario 4: unpinned tag of a pinned repository got %s, want %s", got, v2.Digest)
	}
}

// TestAgentDown covers scenario 5: with the node agent stopped, pulls fall
// back to the upstream (unpinned); in strict mode they fail instead.
func TestAgentDown(t *testing.T) {
	for _, strict := range []bool{false, true} {
		t.Run(fmt.Sprintf("strict=%v", strict), func(t *testing.T) {
			r := newRig(t, rigOptions{strict: strict})
			ref := r.up.Host() + "/down/app:v1"
			gen1 := r.up.PushImage(t, "down/app", "v1", rig.ImageOptions{})
			name := fmt.Sprintf("down-strict-%v", strict)
			rig.CreateTag(t, r.c, rig.NewTag(name, ref))
			r.waitServed(name, ref, gen1.Digest.String())
			if got := r.freshPull(ref); got != gen1.Digest.String() {
				t.Fatalf("pulled %s with the agent up, want %s", got, gen1.Digest)
			}
			moved := r.up.PushImage(t, "down/app", "v1", rig.ImageOptions{})

			r.stopAgent()
			ctx := context.Background()
			if err := r.ctd.RemoveAllImages(ctx); err != nil {
				t.Fatal(err)
			}
			_, err := r.ctd.Pull(ctx, ref)
			if strict {
				if err == nil {
					t.Fatalf("strict mode: pull succeeded with the node agent down (recorded %s)", r.recorded(ref))
				}
				return
			}
			if err != nil {
				t.Fatalf("agent down: pull failed instead of falling back upstream: %v", err)
			}
			if got := r.recorded(ref); got != moved.Digest.String() {
				t.Fatalf("agent down: pulled %s, want the upstream's current %s (the documented unpinned fallback)", got, moved.Digest)
			}
		})
	}
}

// TestExistingHostsConfig covers scenario 6: a pre-existing hosts.toml with a
// custom [host] and a CA file is kept behind ours; cleanup restores it byte
// for byte.
func TestExistingHostsConfig(t *testing.T) {
	var before map[string]string
	var regDir string
	r := newRig(t, rigOptions{prepare: func(r *env) {
		regDir = filepath.Join(r.agentOpt.HostsDir, r.up.Host())
		if err := os.MkdirAll(regDir, 0o755); err != nil {
			t.Fatal(err)
		}
		// A corporate mirror that is down: containerd must skip it and still pull.
		custom := fmt.Sprintf("server = %q\n\n[host.\"http://127.0.0.1:1\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = \"corp-ca.pem\"\n", "http://"+r.up.Host())
		if err := os.WriteFile(filepath.Join(regDir, "hosts.toml"), []byte(custom), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(regDir, "corp-ca.pem"), selfSignedCA(t), 0o600); err != nil {
			t.Fatal(err)
		}
		before = rig.SnapshotDir(t, regDir)
	}})
	ref := r.up.Host() + "/keep/app:v1"
	gen1 := r.up.PushImage(t, "keep/app", "v1", rig.ImageOptions{})
	rig.CreateTag(t, r.c, rig.NewTag("keep", ref))
	r.waitServed("keep", ref, gen1.Digest.String())

	written, err := os.ReadFile(filepath.Join(regDir, "hosts.toml"))
	if err != nil {
		t.Fatal(err)
	}
	mirrorAt := strings.Index(string(written), `[host."http://`+r.agentOpt.Listen+`"]`)
	customAt := strings.Index(string(written), `[host."http://127.0.0.1:1"]`)
	if !strings.HasPrefix(string(written), "# managed by tagger") || mirrorAt < 0 || customAt < mirrorAt {
		t.Fatalf("hosts.toml does not put our mirror before the kept entry:\n%s", written)
	}
	moved := r.up.PushImage(t, "keep/app", "v1", rig.ImageOptions{})
	if got := r.freshPull(ref); got != gen1.Digest.String() {
		t.Fatalf("pulled %s with a kept custom host, want pinned %s (upstream has %s)", got, gen1.Digest, moved.Digest)
	}

	r.stopAgent()
	if err := node.Cleanup(r.agentOpt); err != nil {
		t.Fatalf("cleanup: %v", err)
	}
	after := rig.SnapshotDir(t, regDir)
	if len(after) != len(before) {
		t.Fatalf("cleanup restored %d entries, want %d: %v", len(after), len(before), keys(after))
	}
	for k, v := range before {
		if !bytes.Equal([]byte(after[k]), []byte(v)) {
			t.Fatalf("cleanup: %s differs:\n got %q\nwant %q", k, after[k], v)
		}
	}
	if _, err := os.Stat(filepath.Join(r.agentOpt.HostsDir, "_backup", r.up.Host())); !os.IsNotExist(err) {
		t.Fatalf("backup still present after cleanup: %v", err)
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestMultiArchPin covers scenario 7: a pinned index gives the node its
// platform's manifest under the pinned index digest.
func TestMultiArchPin(t *testing.T) {
	r := newRig(t, rigOptions{})
	ref := r.up.Host() + "/multi/app:1"
	idx := r.up.PushIndex(t, "multi/app", "1", []string{"linux/amd64", "linux/arm64"}, rig.IndexOptions{})
	rig.CreateTag(t, r.c, rig.NewTag("multi", ref))
	r.waitServed("multi", ref, idx.Digest.String())
	r.up.PushIndex(t, "multi/app", "1", []string{"linux/amd64", "linux/arm64"}, rig.IndexOptions{})
	if got := r.freshPull(ref); got != idx.Digest.String() {
		t.Fatalf("pulled %s, want the pinned index %s", got, idx.Digest)
	}
	var want, other string
	for _, img := range idx.Images {
		if img.Platform == r.ctd.Platform() {
			want = img.Digest.String()
		} else {
			other = img.Digest.String()
		}
	}
	if want == "" {
		t.Fatalf("index has no image for this node's platform %s", r.ctd.Platform())
	}
	content, err := r.ctd.ContentDigests(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(content, want) {
		t.Fatalf("node content store lacks its platform manifest %s: %v", want, content)
	}
	if slices.Contains(content, other) {
		t.Fatalf("node fetched the other platform's manifest %s too", other)
	}
}

// selfSignedCA returns a PEM CA certificate; containerd parses the CA of
// every host entry when it resolves, so it must be a real one.
func selfSignedCA(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "corp test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
