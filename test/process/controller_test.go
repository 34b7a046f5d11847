// Package process runs the real controller binary (built from cmd/controller)
// as a separate process against a real kube-apiserver and registry, and checks
// what operators see from outside: flags, leader election, /healthz, /readyz,
// /metrics, JSON logs and a clean shutdown on SIGTERM.
package process

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/internal/rig"
)

func repoRoot() string { return rig.RepoRoot() }

// syncBuffer collects the process's stderr lines.
type syncBuffer struct {
	mu    sync.Mutex
	lines []string
}

func (b *syncBuffer) add(l string) { b.mu.Lock(); b.lines = append(b.lines, l); b.mu.Unlock() }
func (b *syncBuffer) all() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.lines...)
}

func TestControllerProcess(t *testing.T) {
	rig.RequireBins(t, "registry")
	kc := rig.NewKube(t)
	c := kc.Client
	tmp := t.TempDir()
	kubeconfig := filepath.Join(tmp, "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	bin := rig.Command(t, rig.Race, "controller")

	up := rig.NewRegistry(t, rig.RegistryOptions{})
	img := up.PushImage(t, "proc/app", "v1", rig.ImageOptions{})

	// Flag errors are reported, not ignored.
	if out, err := exec.Command(bin, "--max-concurrent-checks=0", "--kubeconfig", kubeconfig, "--metrics-addr=0", "--health-addr=0").CombinedOutput(); err == nil || !strings.Contains(string(out), "max-concurrent-checks") {
		t.Fatalf("--max-concurrent-checks=0 accepted: %v\n%s", err, out)
	}
	if out, err := exec.Command(bin, "--log-format=xml").CombinedOutput(); err == nil || !strings.Contains(string(out), "xml") {
		t.Fatalf("--log-format=xml accepted: %v\n%s", err, out)
	}

	metricsAddr, healthAddr, webhookAddr := rig.FreeAddr(t), rig.FreeAddr(t), rig.FreeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(ctx, bin,
		"--kubeconfig", kubeconfig,
		"--leader-elect", "--leader-election-namespace", "default",
		"--metrics-addr", metricsAddr, "--health-addr", healthAddr, "--webhook-addr", webhookAddr,
		"--log-format", "json", "--max-concurrent-checks", "2",
		"--plain-http-registries", "127.0.0.1:*")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start controller: %v", err)
	}
	exited := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logs.add(sc.Text())
		}
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			t.Logf("controller logs:\n%s", strings.Join(logs.all(), "\n"))
		}
	})

	httpc := &http.Client{Timeout: 2 * time.Second}
	get := func(u string) (int, string) {
		resp, err := httpc.Get(u)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	rig.WaitFor(t, time.Minute, "/healthz and /readyz 200", func() (bool, string) {
		h, hb := get("http://" + healthAddr + "/healthz")
		r, rb := get("http://" + healthAddr + "/readyz")
		return h == 200 && r == 200, fmt.Sprintf("healthz %d %s readyz %d %s", h, hb, r, rb)
	})
	rig.WaitFor(t, time.Minute, "leader Lease", func() (bool, string) {
		var l coordinationv1.Lease
		err := c.Get(ctx, client.ObjectKey{Namespace: "default", Name: "tagger-controller.tagger.dev"}, &l)
		return err == nil && l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != "", fmt.Sprint(err)
	})

	// Webhook receivers run; without --webhook-secret every provider is disabled.
	if resp, err := httpc.Post("http://"+webhookAddr+"/hooks/generic/anything", "application/json", strings.NewReader(`{"image":"x"}`)); err != nil {
		t.Fatalf("webhook endpoint: %v", err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("disabled generic webhook answered %d, want 404", resp.StatusCode)
	}

	tag := &v1alpha1.Tag{ObjectMeta: metav1.ObjectMeta{Name: "proc"}, Spec: v1alpha1.TagSpec{Image: up.Host() + "/proc/app:v1"}}
	if err := c.Create(ctx, tag); err != nil {
		t.Fatal(err)
	}
	rig.WaitFor(t, time.Minute, "generation 1 served", func() (bool, string) {
		var got v1alpha1.Tag
		if err := c.Get(ctx, client.ObjectKey{Name: "proc"}, &got); err != nil {
			return false, err.Error()
		}
		return got.Status.ServedDigest == img.Digest.String(), fmt.Sprintf("%+v", got.Status)
	})
	rig.WaitFor(t, time.Minute, "tagger metrics", func() (bool, string) {
		code, body := get("http://" + metricsAddr + "/metrics")
		ok := code == 200 && strings.Contains(body, `tagger_checks_total{registry="`+up.Host()+`",result="NewGeneration"} 1`) &&
			strings.Contains(body, "tagger_generations_total 1") &&
			strings.Contains(body, `tagger_check_duration_seconds_count{registry="`+up.Host()+`"} 1`) &&
			strings.Contains(body, `tagger_tag_condition{condition="Ready",tag="proc"} 1`) &&
			strings.Contains(body, `tagger_tag_last_successful_check_timestamp_seconds{tag="proc"}`) &&
			strings.Contains(body, `tagger_build_info{commit="unknown",goversion="go`) // rig.Commands stamps nothing
		return ok, fmt.Sprintf("status %d", code)
	})

	// Every log line is JSON with a level and a message.
	var sawGeneration bool
	for _, l := range logs.all() {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", l)
		}
		if m["level"] == nil || m["msg"] == nil {
			t.Fatalf("log line without level/msg: %q", l)
		}
		if m["msg"] == "recorded new generation" && m["tag"] == "proc" {
			sawGeneration = true
		}
	}
	if !sawGeneration {
		t.Fatalf("no 'recorded new generation' log line for Tag proc")
	}

	// SIGTERM: clean exit, lease released.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("controller exited with %v after SIGTERM", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("controller did not exit within 30s of SIGTERM")
	}
	var l coordinationv1.Lease
	if err := c.Get(ctx, client.ObjectKey{Namespace: "default", Name: "tagger-controller.tagger.dev"}, &l); err != nil {
		t.Fatal(err)
	}
	if l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != "" {
		t.Fatalf("lease still held by %q after shutdown", *l.Spec.HolderIdentity)
	}
}
