package node_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/pkg/node"
	"github.com/tagger-project/tagger/pkg/node/readyfile"
)

// netnsChild marks the re-executed test binary that runs inside its own
// network namespace.
const netnsChild = "TAGGER_TEST_NETNS_CHILD"

// TestHandoverServesPinsThroughout is the DaemonSet's maxSurge rolling update
// at the lowest level that has it all: two node agents on the same mirror
// port (SO_REUSEPORT), the new one started next to the old one, the old one
// then stopped, while clients resolve a pinned tag whose upstream has moved
// on, each request on a new connection (as containerd dials a fresh mirror).
// Every answer must be the pinned digest: no wrong digest, no refused or
// reset connection.
//
// It runs in a network namespace of its own (the test binary re-executes
// itself in one, as root) with net.ipv4.tcp_migrate_req=1, the setting
// docs/install.md asks of nodes; the apiserver, registry and agents all live
// on that namespace's loopback.
func TestHandoverServesPinsThroughout(t *testing.T) {
	if os.Getenv(netnsChild) == "" {
		rig.RequireRoot(t)
		rig.RequireBins(t, "kube-apiserver", "etcd", "registry")
		runInNetns(t, "TestHandoverServesPinsThroughout")
		return
	}
	handover(t)
}

// runInNetns re-runs test name of this binary in a new network namespace.
func runInNetns(t *testing.T, name string) {
	t.Helper()
	args := []string{"-test.run=^" + name + "$", "-test.count=1", "-test.timeout=5m"}
	if testing.Verbose() {
		args = append(args, "-test.v")
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), netnsChild+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	t.Logf("in its own network namespace:\n%s", out)
	if err != nil {
		t.Fatalf("test in a network namespace: %v", err)
	}
}

// netnsSetup brings the namespace's loopback up and sets tcp_migrate_req.
func netnsSetup(t *testing.T) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		t.Fatalf("get lo flags: %v", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		t.Fatalf("bring lo up: %v", err)
	}
	// kube-apiserver wants a default route to pick its advertise address:
	// one through the namespace's own loopback (a TEST-NET address on lo), so
	// nothing can leave the namespace.
	for _, args := range [][]string{
		{"addr", "add", "192.0.2.1/32", "dev", "lo"},
		{"route", "add", "default", "dev", "lo"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/tcp_migrate_req", []byte("1"), 0o644); err != nil {
		t.Fatalf("set net.ipv4.tcp_migrate_req in the test's network namespace: %v", err)
	}
}

func handover(t *testing.T) {
	netnsSetup(t)
	k := rig.NewKube(t)
	ctx := context.Background()
	up := rig.NewRegistry(t, rig.RegistryOptions{})
	gen1 := up.PushImage(t, "team/app", "v1", rig.ImageOptions{Layers: 1})
	moved := up.PushImage(t, "team/app", "v1", rig.ImageOptions{Layers: 1}) // the upstream moved on
	image := up.Host() + "/team/app:v1"

	// The Tag pins generation 1, as the controller would have recorded it.
	tag := &v1alpha1.Tag{ObjectMeta: metav1.ObjectMeta{Name: "app"}, Spec: v1alpha1.TagSpec{Image: image}}
	rig.CreateTag(t, k.Client, tag)
	tag.Status = v1alpha1.TagStatus{ServedGeneration: 1, ServedDigest: gen1.Digest.String(),
		Generations: []v1alpha1.Generation{{Generation: 1, Image: image, Digest: gen1.Digest.String(),
			MediaType: gen1.MediaType, Size: gen1.Size, FirstSeen: metav1.Now()}}}
	if err := k.Client.Status().Update(ctx, tag); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	o := node.DefaultOptions()
	o.Listen = rig.FreeAddr(t) // a fixed port both agents bind
	o.MetricsAddr, o.HealthAddr = rig.FreeAddr(t), rig.FreeAddr(t)
	o.HostsDir = filepath.Join(dir, "certs.d")
	o.ContainerdConfig = filepath.Join(dir, "config.toml")
	o.CRIEndpoint = ""
	o.PlainHTTPRegistries = []string{"127.0.0.1:*"}
	o.ShutdownDelay = 300 * time.Millisecond
	if err := os.WriteFile(o.ContainerdConfig, fmt.Appendf(nil,
		"version = 3\n[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = %q\n", o.HostsDir), 0o644); err != nil {
		t.Fatal(err)
	}

	// The node's own file for the registry: the first agent backs it up, the
	// next must leave that backup as it is.
	own := filepath.Join(o.HostsDir, up.Host(), "hosts.toml")
	if err := os.MkdirAll(filepath.Dir(own), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(own, fmt.Appendf(nil, "# the node's own\nserver = \"http://%s\"\n", up.Host()), 0o644); err != nil {
		t.Fatal(err)
	}
	old := startAgent(t, k, o, filepath.Join(dir, "old", "ready"))
	l := startLoop(t, o.Listen, up.Host(), gen1.Digest.String(), moved.Digest.String())
	l.waitFor(t, 200)
	written := fileStates(t, o.HostsDir)
	if len(written) == 0 {
		t.Fatalf("the first agent wrote nothing into %s", o.HostsDir)
	}
	next := startAgent(t, k, o, filepath.Join(dir, "new", "ready"))
	l.waitFor(t, l.count()+200) // both serve
	// The next agent took the files over as they were: no rewrite.
	if got := fileStates(t, o.HostsDir); !maps.Equal(got, written) {
		t.Errorf("the next agent rewrote %s:\n got %v\nwant %v", o.HostsDir, got, written)
	}
	if err := old.stop(); err != nil {
		t.Fatalf("old agent: %v", err)
	}
	l.waitFor(t, l.count()+500) // the new one alone
	ok, wrong, failed, firstErr := l.stop()
	t.Logf("%d requests checked through the handover: %d pinned, %d wrong digest, %d failed", ok+wrong+failed, ok, wrong, failed)
	if wrong > 0 || failed > 0 {
		t.Errorf("%d wrong digests, %d failed requests during the handover (first: %v)", wrong, failed, firstErr)
	}
	if err := readyfile.Check(next.ready, 0, true, time.Now()); err != nil {
		t.Errorf("new agent not ready after the handover: %v", err)
	}
	if err := readyfile.Check(old.ready, 0, false, time.Now()); err == nil {
		t.Error("the stopped agent's ready file is still there")
	}
}

// fileStates maps every file under dir to its inode, mtime and bytes.
func fileStates(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		st, err := os.Lstat(p)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		out[p] = fmt.Sprintf("inode %d mtime %s %q", st.Sys().(*syscall.Stat_t).Ino, st.ModTime().Format(time.RFC3339Nano), b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

type runningAgent struct {
	ready  string
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

func (a *runningAgent) stop() error {
	a.once.Do(func() { a.cancel(); a.err = <-a.done })
	return a.err
}

// startAgent runs an agent until the test ends and waits until its ready
// file says ready (what the kubelet's exec probe reads).
func startAgent(t *testing.T, k *rig.Kube, o node.Options, ready string) *runningAgent {
	t.Helper()
	o.ReadyFile = ready
	a, err := node.New(k.Config, o, k.Log)
	if err != nil {
		t.Fatalf("node agent: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningAgent{ready: ready, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- a.Run(ctx) }()
	t.Cleanup(func() {
		if err := r.stop(); err != nil {
			t.Errorf("node agent: %v", err)
		}
	})
	rig.WaitFor(t, time.Minute, "node agent ready ("+ready+")", func() (bool, string) {
		err := readyfile.Check(ready, 0, true, time.Now())
		return err == nil, fmt.Sprint(err)
	})
	return r
}

// loop resolves the pinned tag through the mirror address until stopped:
// two clients open a new connection for each request (as containerd dials a
// mirror for a pull), a third keeps its connection alive (as containerd
// does within a pull; Go's client, containerd's too, retries an idempotent
// request on a kept-alive connection the server closed).
type loop struct {
	ok, wrong, failed atomic.Int64
	firstErr          atomic.Pointer[string]
	stopc             chan struct{}
	wg                sync.WaitGroup
}

func startLoop(t *testing.T, mirror, registry, want, moved string) *loop {
	l := &loop{stopc: make(chan struct{})}
	url := fmt.Sprintf("http://%s/v2/team/app/manifests/v1?ns=%s", mirror, registry)
	for i := range 3 {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: i < 2,
				DialContext: (&net.Dialer{}).DialContext}}
			for {
				select {
				case <-l.stopc:
					return
				default:
				}
				l.check(c, url, want, moved)
			}
		}()
	}
	t.Cleanup(func() { l.stop() })
	return l
}

func (l *loop) check(c *http.Client, url, want, moved string) {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json")
	resp, err := c.Do(req)
	if err != nil {
		l.fail(err)
		return
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	switch got := resp.Header.Get("Docker-Content-Digest"); {
	case resp.StatusCode == http.StatusOK && got == want:
		l.ok.Add(1)
	case got == moved:
		l.wrong.Add(1)
		l.note(fmt.Sprintf("unpinned digest %s", got))
	default:
		l.fail(fmt.Errorf("status %d, digest %q", resp.StatusCode, got))
	}
}

func (l *loop) fail(err error) {
	l.failed.Add(1)
	l.note(err.Error())
}

func (l *loop) note(s string) { l.firstErr.CompareAndSwap(nil, &s) }

func (l *loop) count() int64 { return l.ok.Load() + l.wrong.Load() + l.failed.Load() }

func (l *loop) waitFor(t *testing.T, n int64) {
	t.Helper()
	rig.WaitFor(t, time.Minute, fmt.Sprintf("%d requests through the mirror", n), func() (bool, string) {
		return l.count() >= n, fmt.Sprintf("%d so far", l.count())
	})
}

func (l *loop) stop() (ok, wrong, failed int64, first error) {
	select {
	case <-l.stopc:
	default:
		close(l.stopc)
	}
	l.wg.Wait()
	if p := l.firstErr.Load(); p != nil {
		first = errors.New(*p)
	}
	return l.ok.Load(), l.wrong.Load(), l.failed.Load(), first
}
