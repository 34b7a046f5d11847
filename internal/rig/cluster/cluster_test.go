package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/tagger-project/tagger/internal/rig"
)

// TestPodFromLocalRegistry starts a whole node, runs a pod whose image the
// test built and pushed to a local registry, and proves what only a kubelet
// shows: the pod runs that image (its marker in the container log) and the
// kubelet reports the pushed digest as the imageID. Then it stops the
// cluster and checks the machine is as it was. Kubelet policy: the default
// imagePullCredentialsVerificationPolicy.
func TestPodFromLocalRegistry(t *testing.T) {
	rig.RequireRoot(t)
	rig.RequireBins(t, append([]string{"registry"}, requiredBins...)...)

	reg := rig.NewRegistry(t, rig.RegistryOptions{})
	c := New(t, Options{})
	c.UsePlainHTTP(reg.Host())

	marker := "clustertest-marker-" + randomHex(6)
	dgst := PushRunnableImage(t, reg, "clustertest/hello", "v1", marker)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	image := reg.Host() + "/clustertest/hello:v1"
	runPod(ctx, t, c, "hello", image, corev1.PullIfNotPresent, dgst, marker)

	// After a kubelet restart, IfNotPresent takes the image the kubelet
	// pulled before from the node (the registry is down), under the default
	// verification policy.
	reg.Stop()
	c.RestartKubelet()
	runPod(ctx, t, c, "hello-again", image, corev1.PullIfNotPresent, dgst, marker)

	if chains := kubeletChainsPresent(); len(chains) == 0 {
		t.Errorf("the kubelet made no iptables chains: the test cannot prove Stop removes them")
	}
	dir, runDir, bridge := c.Dir(), c.runDir, c.net.Bridge
	c.Stop()
	if t.Failed() {
		return
	}
	// Stop reports leftovers itself; check the promises here explicitly too.
	if left := c.leftovers(); len(left) > 0 {
		t.Errorf("left behind: %s", strings.Join(left, "; "))
	}
	if m := mountsUnder(dir, runDir); len(m) > 0 {
		t.Errorf("mounts left: %v", m)
	}
	if _, err := os.Stat(filepath.Join("/sys/class/net", bridge)); err == nil {
		t.Errorf("bridge %s left", bridge)
	}
	if _, err := os.Stat(filepath.Join(runDir, "state", "netns")); err == nil {
		t.Errorf("network namespaces dir %s left", filepath.Join(runDir, "state", "netns"))
	}
	if c.hostRestored != nil {
		if chains := kubeletChainsPresent(); len(chains) > 0 {
			t.Errorf("kubelet iptables chains left: %v", chains)
		}
	} else {
		t.Logf("another kubelet runs on this machine: its iptables chains were left in place")
	}
}

// runPod runs a pod of image, checks the kubelet reports digest as its
// imageID and its log shows marker, then deletes it.
func runPod(ctx context.Context, t *testing.T, c *Cluster, name, image string, policy corev1.PullPolicy, digest, marker string) {
	t.Helper()
	pods := c.Client().CoreV1().Pods(metav1.NamespaceDefault)
	grace := int64(5)
	pod, err := pods.Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name:            "main",
				Image:           image,
				ImagePullPolicy: policy,
			}},
			TerminationGracePeriodSeconds: &grace,
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s: %v", name, err)
	}

	pod = waitPod(ctx, t, c, pod.Name, func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
	if got := pod.Status.ContainerStatuses[0].ImageID; !strings.Contains(got, digest) {
		t.Errorf("pod %s: imageID = %q, want it to contain the pushed digest %s", name, got, digest)
	}
	t.Logf("pod %s Running, imageID %s", pod.Name, pod.Status.ContainerStatuses[0].ImageID)

	var log string
	if err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(context.Context) (bool, error) {
		log, _ = c.ContainerLog(pod, "main")
		return strings.Contains(log, marker), nil
	}); err != nil {
		t.Fatalf("pod %s: container log %q does not contain %q", name, log, marker)
	}

	if err := pods.Delete(ctx, pod.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete pod %s: %v", name, err)
	}
	if err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		_, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	}); err != nil {
		t.Fatalf("pod %s not gone after delete: %v", pod.Name, err)
	}
}

func waitPod(ctx context.Context, t *testing.T, c *Cluster, name string, cond func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	var last *corev1.Pod
	err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		p, err := c.Client().CoreV1().Pods(metav1.NamespaceDefault).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		last = p
		return cond(p), nil
	})
	if err != nil {
		t.Fatalf("pod %s: condition not met: %v; last status: %s", name, err, podStatus(last))
	}
	return last
}

func podStatus(p *corev1.Pod) string {
	if p == nil {
		return "(none)"
	}
	s := string(p.Status.Phase)
	for _, cs := range p.Status.ContainerStatuses {
		switch {
		case cs.State.Waiting != nil:
			s += fmt.Sprintf(" %s waiting: %s %s", cs.Name, cs.State.Waiting.Reason, cs.State.Waiting.Message)
		case cs.State.Terminated != nil:
			s += fmt.Sprintf(" %s terminated: %s", cs.Name, cs.State.Terminated.Reason)
		}
	}
	for _, cond := range p.Status.Conditions {
		if cond.Status != corev1.ConditionTrue {
			s += fmt.Sprintf(" %s=%s(%s)", cond.Type, cond.Status, cond.Message)
		}
	}
	return s
}

func TestParseCRILog(t *testing.T) {
	raw := "2026-11-27T03:00:00.000000001Z stdout F hello\n" +
		"2026-11-27T03:00:00.000000002Z stderr P part one \n" +
		"2026-11-27T03:00:00.000000003Z stderr F and two\n" +
		"garbage\n"
	if got, want := parseCRILog(raw), "hello\npart one and two\n"; got != want {
		t.Errorf("parseCRILog = %q, want %q", got, want)
	}
}

const childEnv = "CLUSTERTEST_KILLED_CHILD"

// TestCleanupAfterKilledTestProcess: a test process that dies without
// stopping its cluster (a go test timeout, SIGKILL) takes its components
// with it (Pdeathsig), but not the shims, pod processes, mounts, cgroups
// and bridge. The next cluster to start on the machine cleans them up.
func TestCleanupAfterKilledTestProcess(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		runKilledChild(t)
		return
	}
	rig.RequireRoot(t)
	rig.RequireBins(t, requiredBins...)

	cmd := exec.Command(os.Args[0], "-test.run=^TestCleanupAfterKilledTestProcess$", "-test.v", "-test.timeout=5m")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	ready := make(chan registration, 1)
	var childLog strings.Builder
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			line := s.Text()
			childLog.WriteString(line + "\n")
			if rest, ok := strings.CutPrefix(line, "CHILD-READY "); ok {
				var r registration
				if json.Unmarshal([]byte(rest), &r) == nil {
					ready <- r
				}
			}
		}
		close(ready)
	}()
	var r registration
	select {
	case got, ok := <-ready:
		if !ok {
			t.Fatalf("child test ended without a running cluster:\n%s", childLog.String())
		}
		r = got
	case <-time.After(4 * time.Minute):
		t.Fatalf("child test did not start its cluster in time")
	}
	stale := &Cluster{t: t, dir: r.Dir, runDir: r.RunDir, net: r.Net, cgroups: cgroupRoot{Name: r.Cgroup}}
	if len(stale.shimPIDs()) == 0 {
		t.Fatalf("child's cluster has no shim running: nothing to prove")
	}

	killed = true
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	t.Cleanup(func() { os.RemoveAll(filepath.Dir(r.Dir)) }) // the child's TempDir parent, left by its death
	before := stale.leftovers()
	t.Logf("killed the child test process; it left %d things behind, e.g. %v", len(before), before[:min(3, len(before))])

	c := New(t, Options{})
	if left := stale.leftovers(); len(left) > 0 {
		t.Errorf("after a new cluster started, the dead one's leftovers remain: %s", strings.Join(left, "; "))
	}
	c.Stop()
}

// runKilledChild is the child side: a cluster with a running pod, then wait
// to be killed.
func runKilledChild(t *testing.T) {
	c := New(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err := c.Client().CoreV1().Pods(metav1.NamespaceDefault).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "orphan"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "main", Image: c.PauseImage(), ImagePullPolicy: corev1.PullNever,
		}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod: %v", err)
	}
	waitPod(ctx, t, c, "orphan", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
	b, _ := json.Marshal(registration{Dir: c.dir, RunDir: c.runDir, Net: c.net, Cgroup: c.cgroups.Name})
	fmt.Printf("CHILD-READY %s\n", b)
	select {} // until killed
}

// fatalTB turns Fatalf into an exit of the calling goroutine that the test
// can inspect, and collects cleanups so the test can run them itself.
type fatalTB struct {
	testing.TB
	mu       sync.Mutex
	fatal    string
	cleanups []func()
}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.fatal = fmt.Sprintf(format, args...)
	f.mu.Unlock()
	runtime.Goexit()
}

func (f *fatalTB) Cleanup(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cleanups = append(f.cleanups, fn)
}

func (f *fatalTB) Failed() bool { return f.fatal != "" || f.TB.Failed() }

// TestFailedStartCleansUp: when a component fails to start, New fails the
// test with the reason, and its cleanup leaves nothing behind.
func TestFailedStartCleansUp(t *testing.T) {
	rig.RequireRoot(t)
	rig.RequireBins(t, requiredBins...)
	runDirsBefore, _ := filepath.Glob("/run/tagger-ct-*")

	f := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		New(f, Options{ImagePullCredentialsVerificationPolicy: "NoSuchPolicy"})
	}()
	<-done
	if !strings.Contains(f.fatal, "kubelet") {
		t.Fatalf("New did not fail on the kubelet's bad config; fatal message: %q", f.fatal)
	}
	// Stop runs as a cleanup (LIFO, as testing does).
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
	runDirsAfter, _ := filepath.Glob("/run/tagger-ct-*")
	if len(runDirsAfter) > len(runDirsBefore) {
		t.Errorf("run dirs left: before %v, after %v", runDirsBefore, runDirsAfter)
	}
	forEachProcess(func(pid int, argv []string) {
		if len(argv) > 0 && strings.Contains(strings.Join(argv, " "), "/run/tagger-ct-") {
			for _, d := range runDirsBefore {
				if strings.Contains(strings.Join(argv, " "), d) {
					return
				}
			}
			t.Errorf("process left: %d %v", pid, argv)
		}
	})
}
