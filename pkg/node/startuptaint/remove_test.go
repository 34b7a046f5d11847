package startuptaint

import (
	"context"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/tagger-project/tagger/internal/rig"
)

// racingNodes adds a taint to the node right after the remover's first read,
// as a cloud controller or an operator may: the remover's patch then tests
// a stale list.
type racingNodes struct {
	corev1client.NodeInterface
	admin corev1client.NodeInterface
	gets  int
	t     *testing.T
}

func (r *racingNodes) Get(ctx context.Context, name string, o metav1.GetOptions) (*corev1.Node, error) {
	n, err := r.NodeInterface.Get(ctx, name, o)
	r.gets++
	if err == nil && r.gets == 1 {
		patch := []byte(`[{"op":"add","path":"/spec/taints/-","value":{"key":"raced","effect":"NoSchedule"}}]`)
		if _, perr := r.admin.Patch(ctx, name, types.JSONPatchType, patch, metav1.PatchOptions{}); perr != nil {
			r.t.Errorf("add the racing taint: %v", perr)
		}
	}
	return n, err
}

func taintKeys(n *corev1.Node) []string {
	var keys []string
	for _, t := range n.Spec.Taints {
		keys = append(keys, t.Key+":"+string(t.Effect))
	}
	return keys
}

// Against a real apiserver: the taint goes, every other taint stays, a taint
// added between the read and the patch is kept (the test op fails, the
// removal is retried), and a node without the taint is left alone.
func TestRemoveRealAPIServer(t *testing.T) {
	kube := rig.NewKube(t)
	ctx := t.Context()
	core, err := corev1client.NewForConfig(kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	nodes := core.Nodes()
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{"a": "b"}},
		Spec: corev1.NodeSpec{Taints: []corev1.Taint{
			{Key: "dedicated", Value: "gpu", Effect: corev1.TaintEffectNoSchedule},
			{Key: DefaultKey, Effect: corev1.TaintEffectNoSchedule},
		}},
	}
	// The apiserver's TaintNodesByCondition admission adds its own not-ready
	// taint to a new Node: one more taint that must stay.
	created, err := nodes.Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	before, _ := Without(created.Spec.Taints, DefaultKey)
	racing := &racingNodes{NodeInterface: nodes, admin: nodes, t: t}
	r := &Remover{Nodes: racing, Node: "n1", Key: DefaultKey}
	removed, err := r.Remove(ctx)
	if err != nil || !removed {
		t.Fatalf("Remove = %v, %v; want removed", removed, err)
	}
	if racing.gets < 2 {
		t.Errorf("the raced patch was not retried (%d reads)", racing.gets)
	}
	got, err := nodes.Get(ctx, "n1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := append(taintKeys(&corev1.Node{Spec: corev1.NodeSpec{Taints: before}}), "raced:NoSchedule")
	if keys := taintKeys(got); !slices.Equal(keys, want) {
		t.Fatalf("taints after removal %v, want %v", keys, want)
	}
	if got.Labels["a"] != "b" {
		t.Errorf("labels changed: %v", got.Labels)
	}

	again := &Remover{Nodes: nodes, Node: "n1", Key: DefaultKey}
	if removed, err := again.Remove(ctx); err != nil || removed {
		t.Fatalf("second Remove = %v, %v; want nothing to do", removed, err)
	}
	after, err := nodes.Get(ctx, "n1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if after.ResourceVersion != got.ResourceVersion {
		t.Errorf("a node without the taint was written (resourceVersion %s -> %s)", got.ResourceVersion, after.ResourceVersion)
	}

	missing := &Remover{Nodes: nodes, Node: "absent", Key: DefaultKey}
	if _, err := missing.Remove(ctx); err == nil {
		t.Fatal("Remove on a missing node succeeded")
	}
}
