package lifecycle

import (
	"context"
	"fmt"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/internal/rig/cluster"
)

// leaseName is the controller's leader election Lease in the release namespace.
const leaseName = "tagger-controller.tagger.dev"

// nodeLost (scenario g) stops the node running the bundled registry (and,
// when it is there too, the controller leader) as a power loss would. The
// leader's Lease passes to the other replica without anyone acting; the
// registry, whose volume is ReadWriteOnce, moves once the node is declared
// out of service (the Kubernetes procedure for a node that will not come
// back; a cloud's node lifecycle controller deletes the Node instead). The
// other nodes keep serving pins throughout. It returns how long the leader
// and the registry took, and brings the node back.
func (s *suite) nodeLost(ctx context.Context, image, pinned string) (leader, registry time.Duration) {
	t := s.t
	cs := s.cl.Client()
	reg := s.registryPod(ctx)
	n := s.cl.Node(reg.Spec.NodeName)
	holder := s.leaseHolder(ctx)
	leaderHere := strings.HasPrefix(holder, s.podOn(ctx, "app.kubernetes.io/component=controller", n.Name())+"_")
	t.Logf("stopping %s (registry pod %s; leader %s, on this node: %v)", n.Name(), reg.Name, holder, leaderHere)
	began := time.Now()
	n.Stop()
	if leaderHere {
		rig.WaitFor(t, 2*time.Minute, "another controller replica leads", func() (bool, string) {
			h := s.leaseHolder(ctx)
			return h != holder && h != "", h
		})
		leader = time.Since(began).Round(time.Second)
	}
	rig.WaitFor(t, 3*time.Minute, "node "+n.Name()+" NotReady", func() (bool, string) {
		node, err := cs.CoreV1().Nodes().Get(ctx, n.Name(), metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady {
				return c.Status != corev1.ConditionTrue, string(c.Status)
			}
		}
		return false, "no Ready condition"
	})
	taint := `{"spec":{"taints":[{"key":"node.kubernetes.io/out-of-service","value":"nodeshutdown","effect":"NoExecute"}]}}`
	if _, err := cs.CoreV1().Nodes().Patch(ctx, n.Name(), types.StrategicMergePatchType, []byte(taint), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	declared := time.Now()
	rig.WaitFor(t, 3*time.Minute, "the bundled registry Ready on another node", func() (bool, string) {
		p := s.registryPod(ctx)
		return p.Spec.NodeName != n.Name() && podReady(p), fmt.Sprintf("%s on %s ready %v", p.Name, p.Spec.NodeName, podReady(p))
	})
	registry = time.Since(declared).Round(time.Second)
	for _, o := range s.cl.Nodes() {
		if o != n {
			s.pullPinned(ctx, o, image, pinned)
		}
	}
	if _, err := cs.CoreV1().Nodes().Patch(ctx, n.Name(), types.StrategicMergePatchType, []byte(`{"spec":{"taints":null}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	n.Start()
	s.waitInstalled(ctx)
	if !leaderHere {
		leader = s.leaderNodeLost(ctx)
	}
	return leader, registry
}

// leaderNodeLost stops the node of the controller leader: the other
// replica takes the Lease without anyone acting. It returns how long that
// took, and brings the node back.
func (s *suite) leaderNodeLost(ctx context.Context) time.Duration {
	t := s.t
	holder := s.leaseHolder(ctx)
	var n *cluster.Node
	for _, o := range s.cl.Nodes() {
		if name := s.podOn(ctx, "app.kubernetes.io/component=controller", o.Name()); strings.HasPrefix(holder, name+"_") {
			n = o
		}
	}
	if n == nil {
		t.Fatalf("no node runs the leader %s", holder)
	}
	t.Logf("stopping %s, the leader's node (%s)", n.Name(), holder)
	began := time.Now()
	n.Stop()
	rig.WaitFor(t, 2*time.Minute, "another controller replica leads", func() (bool, string) {
		h := s.leaseHolder(ctx)
		return h != holder && h != "", h
	})
	took := time.Since(began).Round(time.Second)
	n.Start()
	s.waitInstalled(ctx)
	return took
}

// pullPinned pulls image afresh through node n's CRI and checks it got pinned.
func (s *suite) pullPinned(ctx context.Context, n *cluster.Node, image, pinned string) {
	got, err := pullAfresh(ctx, n, image)
	if err != nil {
		s.t.Errorf("CRI pull %s on %s: %v", image, n.Name(), err)
		return
	}
	if got != pinned {
		s.t.Errorf("CRI pull %s on %s: %s, want the pinned %s", image, n.Name(), got, pinned)
	}
}

func (s *suite) registryPod(ctx context.Context) *corev1.Pod {
	pods, err := s.cl.Client().CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=registry"})
	if err != nil {
		s.t.Fatal(err)
	}
	var best *corev1.Pod
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.DeletionTimestamp == nil && (best == nil || p.CreationTimestamp.After(best.CreationTimestamp.Time)) {
			best = p
		}
	}
	if best == nil {
		return &corev1.Pod{}
	}
	return best
}

// podOn is the name of the pod with label selector sel on node ("" if none).
func (s *suite) podOn(ctx context.Context, sel, node string) string {
	pods, err := s.cl.Client().CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: sel, FieldSelector: "spec.nodeName=" + node})
	if err != nil || len(pods.Items) == 0 {
		return "\x00" // matches no holder
	}
	return pods.Items[0].Name
}

func (s *suite) leaseHolder(ctx context.Context) string {
	var l *coordinationv1.Lease
	l, err := s.cl.Client().CoordinationV1().Leases(namespace).Get(ctx, leaseName, metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}
