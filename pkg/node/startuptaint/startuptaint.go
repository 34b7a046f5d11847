// Package startuptaint removes the node agent's startup taint from the
// agent's own Node. Nodes register with the taint (kubelet
// --register-with-taints or the node pool's settings), so no pod that does not
// tolerate it is scheduled there; the agent removes it once it serves pins
// (pkg/node decides when). The removal touches only that taint: a JSON patch
// that tests the node's whole taint list and replaces it with the same list
// minus the key, so a taint another writer added or removed in between is
// never lost (the test fails and the removal is retried on the fresh list).
// The chart's ValidatingAdmissionPolicy allows the agent this one change and
// nothing else.
package startuptaint

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/util/retry"
)

// DefaultKey is the startup taint's key the chart uses.
const DefaultKey = "tagger.dev/agent-not-ready"

// Without returns taints without any taint whose key is key (whatever its
// effect), in their order, and whether one was there.
func Without(taints []corev1.Taint, key string) ([]corev1.Taint, bool) {
	out := make([]corev1.Taint, 0, len(taints))
	for _, t := range taints {
		if t.Key != key {
			out = append(out, t)
		}
	}
	return out, len(out) != len(taints)
}

// op is one RFC 6902 operation.
type op struct {
	Op    string         `json:"op"`
	Path  string         `json:"path"`
	Value []corev1.Taint `json:"value"`
}

// Patch builds the JSON patch that removes key from a Node whose taints are
// taints: a test that the list is still exactly taints, then a replace with
// the list minus key. ok is false when key is not there (nothing to do).
func Patch(taints []corev1.Taint, key string) (patch []byte, ok bool, err error) {
	rest, ok := Without(taints, key)
	if !ok {
		return nil, false, nil
	}
	old := taints
	if old == nil {
		old = []corev1.Taint{}
	}
	patch, err = json.Marshal([]op{
		{Op: "test", Path: "/spec/taints", Value: old},
		{Op: "replace", Path: "/spec/taints", Value: rest},
	})
	if err != nil {
		return nil, false, fmt.Errorf("encode taint patch: %w", err)
	}
	return patch, true, nil
}

// Remover removes Key from the Node named Node.
type Remover struct {
	Nodes corev1client.NodeInterface
	Node  string
	Key   string
	Log   logrus.FieldLogger
}

// Remove removes the taint from the node. removed is false when the node
// did not have it. A patch whose test failed (the taints changed since the
// read: the apiserver answers 422) or that hit a conflict is retried on a
// fresh read, with client-go's default backoff.
func (r *Remover) Remove(ctx context.Context) (removed bool, err error) {
	err = retry.OnError(retry.DefaultBackoff, retriable, func() error {
		n, err := r.Nodes.Get(ctx, r.Node, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("get node %s: %w", r.Node, err)
		}
		patch, ok, err := Patch(n.Spec.Taints, r.Key)
		if err != nil || !ok {
			removed = false
			return err
		}
		if _, err := r.Nodes.Patch(ctx, r.Node, types.JSONPatchType, patch, metav1.PatchOptions{FieldManager: "tagger-node-agent"}); err != nil {
			return fmt.Errorf("remove taint %s from node %s: %w", r.Key, r.Node, err)
		}
		removed = true
		return nil
	})
	if err == nil && r.Log != nil {
		if removed {
			r.Log.WithFields(logrus.Fields{"node": r.Node, "taint": r.Key}).Info("removed the startup taint: pods may be scheduled on this node")
		} else {
			r.Log.WithFields(logrus.Fields{"node": r.Node, "taint": r.Key}).Info("node has no startup taint")
		}
	}
	return removed, err
}

// Present reports whether the node has the taint now.
func (r *Remover) Present(ctx context.Context) (bool, error) {
	n, err := r.Nodes.Get(ctx, r.Node, metav1.GetOptions{})
	if err != nil {
		return false, fmt.Errorf("get node %s: %w", r.Node, err)
	}
	_, ok := Without(n.Spec.Taints, r.Key)
	return ok, nil
}

// retriable: the taint list changed under us (failed test: 422 Invalid) or
// the write conflicted.
func retriable(err error) bool {
	return apierrors.IsConflict(err) || apierrors.IsInvalid(err)
}
