package cleanupwait

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/tagger-project/tagger/internal/rig"
)

const ns = "tagger-system"

var cleanupLabels = map[string]string{"app.kubernetes.io/component": "node-cleanup"}

// cluster is an apiserver without controllers: the test plays the DaemonSet
// controller and the kubelets by writing the DaemonSet's status and creating
// its pods with their Ready conditions.
type cluster struct {
	t  *testing.T
	cs kubernetes.Interface
	ds *appsv1.DaemonSet
}

func newCluster(t *testing.T) *cluster {
	rig.RequireBins(t, "kube-apiserver", "etcd")
	k := rig.NewKube(t)
	cs, err := kubernetes.NewForConfig(k.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tagger-node-cleanup"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: cleanupLabels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: cleanupLabels}, Spec: podSpec("")},
		},
	}
	if ds, err = cs.AppsV1().DaemonSets(ns).Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return &cluster{t: t, cs: cs, ds: ds}
}

func podSpec(node string) corev1.PodSpec {
	no := false
	return corev1.PodSpec{
		NodeName: node, AutomountServiceAccountToken: &no,
		Containers: []corev1.Container{{Name: "cleanup", Image: "tagger:test"}},
	}
}

// status writes the DaemonSet status as its controller would.
func (c *cluster) status(observed int64, desired, updated, ready int32) {
	c.t.Helper()
	ctx := context.Background()
	ds, err := c.cs.AppsV1().DaemonSets(ns).Get(ctx, c.ds.Name, metav1.GetOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	ds.Status = appsv1.DaemonSetStatus{ObservedGeneration: observed, DesiredNumberScheduled: desired,
		CurrentNumberScheduled: desired, UpdatedNumberScheduled: updated, NumberReady: ready, NumberAvailable: ready}
	if c.ds, err = c.cs.AppsV1().DaemonSets(ns).UpdateStatus(ctx, ds, metav1.UpdateOptions{}); err != nil {
		c.t.Fatal(err)
	}
}

// pod creates a pod on node with labels, Ready or not, as the kubelet reports it.
func (c *cluster) pod(name, node string, labels map[string]string, ready bool) {
	c.t.Helper()
	ctx := context.Background()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels}, Spec: podSpec(node)}
	p, err := c.cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	c.setReady(p, ready)
}

func (c *cluster) setReady(p *corev1.Pod, ready bool) {
	c.t.Helper()
	s := corev1.ConditionFalse
	if ready {
		s = corev1.ConditionTrue
	}
	p.Status.Phase = corev1.PodRunning
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: s, LastTransitionTime: metav1.Now()}}
	if _, err := c.cs.CoreV1().Pods(ns).UpdateStatus(context.Background(), p, metav1.UpdateOptions{}); err != nil {
		c.t.Fatal(err)
	}
}

func (c *cluster) readyPod(name string) {
	c.t.Helper()
	p, err := c.cs.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	c.setReady(p, true)
}

// cleanupPod labels a pod as the DaemonSet controller does for generation gen.
func cleanupPod(gen int64) map[string]string {
	return map[string]string{"app.kubernetes.io/component": "node-cleanup", templateGenerationLabel: fmt.Sprint(gen)}
}

var agentLabels = map[string]string{"app.kubernetes.io/component": "node-agent"}

func (c *cluster) options(timeout time.Duration) Options {
	return Options{Namespace: ns, DaemonSet: c.ds.Name, AgentSelector: "app.kubernetes.io/component=node-agent",
		Timeout: timeout, Interval: 50 * time.Millisecond}
}

func TestWaitSucceedsWhenEveryNodeIsDone(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	gen := c.ds.Generation
	c.status(0, 0, 0, 0) // created, not yet seen by the controller
	c.pod("cleanup-a", "node-a", cleanupPod(gen), true)
	c.pod("cleanup-b", "node-b", cleanupPod(gen), false)
	c.pod("agent-c", "node-c", agentLabels, true) // an agent still stopping

	done := make(chan error, 1)
	go func() { done <- Wait(ctx, c.cs, c.options(time.Minute)) }()

	steps := []struct {
		what string
		do   func()
	}{
		{"the controller saw the DaemonSet: 3 nodes, pods on 2", func() { c.status(gen, 3, 2, 1) }},
		{"the third node's pod, not ready yet", func() { c.pod("cleanup-c", "node-c", cleanupPod(gen), false) }},
		{"every pod created", func() { c.status(gen, 3, 3, 1) }},
		{"node-b restored", func() { c.readyPod("cleanup-b"); c.status(gen, 3, 3, 2) }},
		{"node-c restored", func() { c.readyPod("cleanup-c"); c.status(gen, 3, 3, 3) }},
	}
	for _, s := range steps {
		s.do()
		p, err := Check(ctx, c.cs, c.options(time.Minute))
		if err != nil {
			t.Fatalf("%s: %v", s.what, err)
		}
		if p.Done {
			t.Fatalf("done after %q although the agent pod on node-c is still there: %s", s.what, p)
		}
		select {
		case err := <-done:
			t.Fatalf("Wait returned after %q: %v (%s)", s.what, err, p)
		case <-time.After(200 * time.Millisecond):
		}
	}
	p, _ := Check(ctx, c.cs, c.options(time.Minute))
	if want := []string{"node-c"}; len(p.Agents) != 1 || p.Agents[0] != want[0] {
		t.Errorf("agents %v, want %v", p.Agents, want)
	}
	// The agent pod goes (grace 0: no kubelet here would confirm a graceful
	// deletion; a terminating agent pod still counts as present).
	zero := int64(0)
	if err := c.cs.CoreV1().Pods(ns).Delete(ctx, "agent-c", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Wait: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Wait did not return once every node was done")
	}
}

func TestWaitTimesOutNamingNodes(t *testing.T) {
	c := newCluster(t)
	gen := c.ds.Generation
	c.pod("cleanup-a", "node-a", cleanupPod(gen), true)
	c.pod("cleanup-b", "node-b", cleanupPod(gen), false)
	c.pod("cleanup-old", "node-d", cleanupPod(gen-1+100), true) // a pod of another template
	c.status(gen, 4, 3, 2)

	start := time.Now()
	err := Wait(context.Background(), c.cs, c.options(time.Second))
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Wait: %v, want ErrTimeout", err)
	}
	if took := time.Since(start); took < time.Second || took > 20*time.Second {
		t.Errorf("timed out after %s, want about 1s", took)
	}
	for _, want := range []string{"2/4 nodes cleaned", "not done on nodes node-b, node-d", "1 nodes have no cleanup pod yet", "3 of 4 nodes run the current cleanup pod"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
}

func TestWaitMissingDaemonSet(t *testing.T) {
	c := newCluster(t)
	o := c.options(300 * time.Millisecond)
	o.DaemonSet = "no-such"
	err := Wait(context.Background(), c.cs, o)
	if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("Wait on a missing DaemonSet: %v", err)
	}
}
