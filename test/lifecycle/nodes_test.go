package lifecycle

import (
	"context"
	"fmt"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/internal/rig/cluster"
)

// startupTaint is the chart's default startup taint key.
const startupTaint = "tagger.dev/agent-not-ready"

// newNodeGated (scenario e): a DaemonSet of the pinned image wants a pod on
// every node; a node joins registered with the startup taint. No pod but
// the agent's starts there before the agent removes the taint, and the
// DaemonSet's pod there runs the pinned digest.
func (s *suite) newNodeGated(ctx context.Context, image, pinned string) {
	t := s.t
	cs := s.cl.Client()
	labels := map[string]string{"app": "everywhere"}
	if _, err := cs.AppsV1().DaemonSets("default").Create(ctx, &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "everywhere"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To[int64](1),
					Containers:                    []corev1.Container{{Name: "app", Image: image}},
				},
			},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	untainted := s.watchUntaint(ctx)
	n := s.cl.AddNode(cluster.NodeOptions{Taints: []corev1.Taint{{Key: startupTaint, Effect: corev1.TaintEffectNoSchedule}}})
	// Its certs.d started as every node's did (the rig's plain-HTTP files).
	s.before[n.Name()] = s.before[s.cl.Nodes()[0].Name()]
	var pod *corev1.Pod
	rig.WaitFor(t, 3*time.Minute, "the DaemonSet's pod Running on new node "+n.Name(), func() (bool, string) {
		pods, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=everywhere", FieldSelector: "spec.nodeName=" + n.Name()})
		if err != nil || len(pods.Items) == 0 {
			return false, fmt.Sprintf("no pod yet (%v)%s", err, s.podStates(ctx))
		}
		pod = &pods.Items[0]
		return pod.Status.Phase == corev1.PodRunning, string(pod.Status.Phase)
	})
	if id := pod.Status.ContainerStatuses[0].ImageID; id == "" || id[len(id)-len(pinned):] != pinned {
		t.Errorf("pod on new node %s runs %s, want the pinned %s", n.Name(), id, pinned)
	}
	removed := untainted(n.Name())
	if removed.IsZero() {
		t.Fatalf("never saw the startup taint removed from %s", n.Name())
	}
	// Every pod on the node except the agent's was created after the taint went.
	pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + n.Name()})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.Namespace == namespace {
			continue
		}
		// Condition times have a resolution of a second, and the watch sees
		// the removal up to a poll late: allow a second.
		if scheduled := scheduledAt(&p); scheduled.Before(removed.Add(-time.Second).Truncate(time.Second)) {
			t.Errorf("pod %s/%s scheduled on %s at %v, before the agent removed the startup taint at %v", p.Namespace, p.Name, n.Name(), scheduled, removed)
		}
	}
	if err := cs.AppsV1().DaemonSets("default").Delete(ctx, "everywhere", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

func scheduledAt(p *corev1.Pod) time.Time {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionTrue {
			return c.LastTransitionTime.Time
		}
	}
	return p.CreationTimestamp.Time
}

// watchUntaint polls the Nodes until ctx ends and records, per node, when
// it was first seen without the startup taint after being seen with it.
// The returned function reads that time (zero: not seen).
func (s *suite) watchUntaint(ctx context.Context) func(node string) time.Time {
	var mu sync.Mutex
	tainted, removed := map[string]bool{}, map[string]time.Time{}
	ctx, cancel := context.WithCancel(ctx)
	s.t.Cleanup(cancel)
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			nodes, err := s.cl.Client().CoreV1().Nodes().List(ctx, metav1.ListOptions{})
			if err != nil {
				continue
			}
			now := time.Now()
			mu.Lock()
			for _, n := range nodes.Items {
				has := false
				for _, t := range n.Spec.Taints {
					has = has || t.Key == startupTaint
				}
				if has {
					tainted[n.Name] = true
				} else if tainted[n.Name] && removed[n.Name].IsZero() {
					removed[n.Name] = now
				}
			}
			mu.Unlock()
		}
	}()
	return func(node string) time.Time {
		mu.Lock()
		defer mu.Unlock()
		return removed[node]
	}
}
