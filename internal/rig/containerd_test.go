package rig

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// decoy is a loopback TCP listener that counts connections and closes each
// at once: a registry host that can serve nothing. A pull that succeeds for
// an image named on the decoy's host must have been sent elsewhere, which
// only a hosts.toml for that host can do.
type decoy struct {
	l     net.Listener
	conns atomic.Int64
}

func newDecoy(t *testing.T) *decoy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &decoy{l: l}
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			d.conns.Add(1)
			conn.Close()
		}
	}()
	t.Cleanup(func() { l.Close() })
	return d
}

func (d *decoy) Host() string { return d.l.Addr().String() }

func writeHostsTOML(t *testing.T, c *Containerd, host, body string) {
	t.Helper()
	dir := filepath.Join(c.HostsDir(), host)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func removeHostsTOML(t *testing.T, c *Containerd, host string) {
	t.Helper()
	if err := os.RemoveAll(filepath.Join(c.HostsDir(), host)); err != nil {
		t.Fatal(err)
	}
}

func wantDigest(t *testing.T, c *Containerd, ref, want string) {
	t.Helper()
	got, present, err := c.ImageDigest(context.Background(), ref)
	if err != nil {
		t.Fatalf("ImageDigest(%s): %v", ref, err)
	}
	if !present || got != want {
		t.Fatalf("ImageDigest(%s) = %q, present %v; want %s", ref, got, present, want)
	}
}

func TestContainerd(t *testing.T) {
	reg := NewRegistry(t, RegistryOptions{})
	c := NewContainerd(t, ContainerdOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	if !strings.HasPrefix(c.Socket(), "unix:///") || len(c.Address()) >= 108 {
		t.Fatalf("Socket() = %q", c.Socket())
	}
	if p := c.Platform(); strings.Count(p, "/") < 1 || !strings.HasPrefix(p, "linux/") {
		t.Fatalf("Platform() = %q", p)
	}

	// Every ref below names the decoy's host: nothing can be pulled from it.
	dec := newDecoy(t)
	host := dec.Host()
	app := host + "/t/app:v1"
	v1 := reg.PushImage(t, "t/app", "v1", ImageOptions{Layers: 2})

	t.Run("without hosts.toml the pull goes to the image's own host", func(t *testing.T) {
		before := dec.conns.Load()
		_, err := c.Pull(ctx, app)
		if err == nil {
			t.Fatal("pull from the decoy succeeded")
		}
		t.Logf("pull failed as expected: %v", err)
		if dec.conns.Load() == before {
			t.Fatal("the failed pull never connected to the image's host")
		}
		if _, present, err := c.ImageDigest(ctx, app); err != nil || present {
			t.Fatalf("after a failed pull: present %v, err %v", present, err)
		}
	})

	t.Run("a server without scheme means https", func(t *testing.T) {
		// DESIGN.md section 3: plain-HTTP registries must be written with http://.
		writeHostsTOML(t, c, host, "server = \""+reg.Host()+"\"\n")
		defer removeHostsTOML(t, c, host)
		before := dec.conns.Load()
		_, err := c.Pull(ctx, app)
		if err == nil {
			t.Fatal("pull over https from a plain-HTTP registry succeeded")
		}
		t.Logf("pull failed as expected: %v", err)
		if !strings.Contains(err.Error(), "HTTP response to HTTPS client") {
			t.Errorf("error %q does not say the registry answered https with http", err)
		}
		if dec.conns.Load() != before {
			t.Error("the pull connected to the image's own host despite hosts.toml")
		}
	})

	t.Run("hosts.toml with an http server", func(t *testing.T) {
		writeHostsTOML(t, c, host, "server = \"http://"+reg.Host()+"\"\n")
		before := dec.conns.Load()
		id, err := c.Pull(ctx, app)
		if err != nil {
			t.Fatal(err)
		}
		if id != v1.Config.Digest.String() {
			t.Errorf("Pull returned %s, want the config digest %s", id, v1.Config.Digest)
		}
		wantDigest(t, c, app, v1.Digest.String())
		if got, present, err := c.ImageID(ctx, app); err != nil || !present || got != id {
			t.Errorf("ImageID = %q, %v, %v; want %s", got, present, err, id)
		}
		if dec.conns.Load() != before {
			t.Error("the pull connected to the image's own host despite hosts.toml")
		}
		// containerd fetched the manifest, config and both layers.
		content, err := c.ContentDigests(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range append([]string{v1.Digest.String(), v1.Config.Digest.String()}, layerDigests(v1)...) {
			if !slices.Contains(content, d) {
				t.Errorf("content store lacks %s: %v", d, content)
			}
		}
	})

	t.Run("a moved tag is pulled again", func(t *testing.T) {
		v2 := reg.PushImage(t, "t/app", "v1", ImageOptions{Layers: 2})
		if v2.Digest == v1.Digest {
			t.Fatal("the rig pushed the same digest twice")
		}
		wantDigest(t, c, app, v1.Digest.String()) // nothing changes until a pull
		if _, err := c.Pull(ctx, app); err != nil {
			t.Fatal(err)
		}
		wantDigest(t, c, app, v2.Digest.String())
		// The previous image stays under its digest reference, as on a node.
		wantDigest(t, c, host+"/t/app@"+v1.Digest.String(), v1.Digest.String())
	})

	var idx Index
	multi := host + "/t/multi:v1"
	t.Run("a multi-arch index records the index digest and fetches this platform", func(t *testing.T) {
		other := "linux/arm64"
		if c.Platform() == other {
			other = "linux/amd64"
		}
		idx = reg.PushIndex(t, "t/multi", "v1", []string{other, c.Platform()}, IndexOptions{})
		mine, theirs := idx.Images[1], idx.Images[0]
		id, err := c.Pull(ctx, multi)
		if err != nil {
			t.Fatal(err)
		}
		wantDigest(t, c, multi, idx.Digest.String())
		if id != mine.Config.Digest.String() {
			t.Errorf("image ID %s, want %s's config %s", id, c.Platform(), mine.Config.Digest)
		}
		content, err := c.ContentDigests(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range []string{idx.Digest.String(), mine.Digest.String(), mine.Config.Digest.String()} {
			if !slices.Contains(content, d) {
				t.Errorf("content store lacks %s", d)
			}
		}
		for _, d := range append([]string{theirs.Digest.String(), theirs.Config.Digest.String()}, layerDigests(theirs)...) {
			if slices.Contains(content, d) {
				t.Errorf("content store has %s of %s", d, other)
			}
		}

		// Pulling this platform's manifest by digest gives the same image
		// (same config) a second repo digest; the tag still names the index.
		byDigest := host + "/t/multi@" + mine.Digest.String()
		if _, err := c.Pull(ctx, byDigest); err != nil {
			t.Fatal(err)
		}
		im, err := c.ImageService().ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: multi}})
		if err != nil {
			t.Fatal(err)
		}
		if n := len(im.GetImage().GetRepoDigests()); n != 2 {
			t.Fatalf("repo digests %v, want the index and the manifest", im.GetImage().GetRepoDigests())
		}
		wantDigest(t, c, multi, idx.Digest.String())
		wantDigest(t, c, byDigest, mine.Digest.String())
	})

	t.Run("images survive a restart", func(t *testing.T) {
		c.Stop()
		if c.Running() || c.ImageService() != nil {
			t.Fatal("still running after Stop")
		}
		if _, _, err := c.ImageDigest(ctx, app); err == nil {
			t.Fatal("ImageDigest succeeded while stopped")
		}
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		wantDigest(t, c, multi, idx.Digest.String())
		// hosts.toml is still read after the restart.
		v3 := reg.PushImage(t, "t/app", "v1", ImageOptions{})
		if _, err := c.Pull(ctx, app); err != nil {
			t.Fatal(err)
		}
		wantDigest(t, c, app, v3.Digest.String())
	})

	t.Run("RemoveAllImages empties the store", func(t *testing.T) {
		if err := c.RemoveAllImages(ctx); err != nil {
			t.Fatal(err)
		}
		if _, present, err := c.ImageDigest(ctx, app); err != nil || present {
			t.Fatalf("after RemoveAllImages: present %v, err %v", present, err)
		}
		content, err := c.ContentDigests(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(content) != 0 {
			t.Errorf("content left after RemoveAllImages: %v", content)
		}
		if err := c.RemoveImage(ctx, app); err != nil {
			t.Errorf("removing an absent image: %v", err)
		}
	})

	t.Run("loopback hosts are pulled over plain HTTP without hosts.toml", func(t *testing.T) {
		// containerd's default for localhost and loopback IPs (no hosts.toml)
		// is https without verification, falling back to http. So a test that
		// pulls 127.0.0.1:port/... proves nothing about hosts.toml: name a
		// host that cannot serve (the decoy) and redirect it, as above.
		ref := reg.Host() + "/t/app:v1"
		if _, err := os.Stat(filepath.Join(c.HostsDir(), reg.Host())); !os.IsNotExist(err) {
			t.Fatalf("hosts dir for %s exists: %v", reg.Host(), err)
		}
		if _, err := c.Pull(ctx, ref); err != nil {
			t.Fatal(err)
		}
	})
}

func layerDigests(img Image) []string {
	var ds []string
	for _, l := range img.Layers {
		ds = append(ds, l.Digest.String())
	}
	return ds
}

// TestConfigPathList pins the containerd 2.x trap DESIGN.md section 3 relies
// on: a path-list config_path (the CRI default on Linux is
// "/etc/containerd/certs.d:/etc/docker/certs.d") is not split by the default
// transfer-service pull, so no hosts.toml is read; the client-side pull
// (use_local_image_pull = true) splits it.
func TestConfigPathList(t *testing.T) {
	reg := NewRegistry(t, RegistryOptions{})
	dec := newDecoy(t)
	ref := dec.Host() + "/t/app:v1"
	img := reg.PushImage(t, "t/app", "v1", ImageOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	for _, tt := range []struct {
		name      string
		localPull bool
		honoured  bool
	}{
		{"transfer service ignores hosts.toml", false, false},
		{"local pull reads hosts.toml", true, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hosts := t.TempDir()
			c := NewContainerd(t, ContainerdOptions{
				HostsDir:          hosts,
				ConfigPath:        hosts + ":" + filepath.Join(t.TempDir(), "docker-certs.d"),
				UseLocalImagePull: tt.localPull,
			})
			writeHostsTOML(t, c, dec.Host(), "server = \"http://"+reg.Host()+"\"\n")
			before := dec.conns.Load()
			_, err := c.Pull(ctx, ref)
			if tt.honoured {
				if err != nil {
					t.Fatal(err)
				}
				wantDigest(t, c, ref, img.Digest.String())
				if dec.conns.Load() != before {
					t.Error("the pull connected to the image's own host despite hosts.toml")
				}
				return
			}
			if err == nil {
				t.Fatal("pull succeeded: containerd read hosts.toml from a path-list config_path (the trap is gone; revisit DESIGN.md section 3)")
			}
			if dec.conns.Load() == before {
				t.Errorf("pull failed without trying the image's own host: %v", err)
			}
		})
	}
}
