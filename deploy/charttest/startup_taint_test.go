package charttest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	authnclient "k8s.io/client-go/kubernetes/typed/authentication/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/pkg/node/startuptaint"
)

// The startup-taint objects the chart renders by default.
const (
	startupTaintName = "tagger-node-agent-startup-taint"
	agentSA          = "tagger-node-agent"
	nodeNameClaim    = "authentication.kubernetes.io/node-name"
)

// checkStartupTaint: the default render gates new nodes: the agent gets the
// flag, tolerates the taint, knows its node, and the policy is bound.
func checkStartupTaint(t *testing.T, r *rendered) {
	t.Helper()
	get[*admissionv1.ValidatingAdmissionPolicy](t, r, "ValidatingAdmissionPolicy", startupTaintName)
	b := get[*admissionv1.ValidatingAdmissionPolicyBinding](t, r, "ValidatingAdmissionPolicyBinding", startupTaintName)
	if b.Spec.PolicyName != startupTaintName || !slices.Equal(b.Spec.ValidationActions, []admissionv1.ValidationAction{admissionv1.Deny}) {
		t.Errorf("policy binding %+v: want policy %s with Deny", b.Spec, startupTaintName)
	}
	spec := podSpecs(r)["DaemonSet/tagger-node-agent"]
	if !slices.ContainsFunc(spec.Tolerations, func(tol corev1.Toleration) bool {
		return tol.Key == startuptaint.DefaultKey && tol.Operator == corev1.TolerationOpExists && tol.Effect == corev1.TaintEffectNoSchedule
	}) {
		t.Errorf("node agent does not tolerate its startup taint: %+v", spec.Tolerations)
	}
	c := container(t, spec, "node-agent")
	if env, ok := envVar(c, "NODE_NAME"); !ok || env.ValueFrom == nil || env.ValueFrom.FieldRef == nil || env.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("node agent NODE_NAME %+v, want the downward API spec.nodeName", env)
	}
}

// checkNoStartupTaint: without the gate, neither the node permissions nor
// the policy are rendered.
func checkNoStartupTaint(t *testing.T, r *rendered) {
	t.Helper()
	for _, kind := range []string{"ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} {
		if _, ok := r.find(kind, startupTaintName); ok {
			t.Errorf("startup taint off, still renders %s %s", kind, startupTaintName)
		}
	}
	if ds, ok := r.find("DaemonSet", "tagger-node-agent"); ok {
		c := container(t, podSpecs(r)["DaemonSet/tagger-node-agent"], "node-agent")
		if _, n := flagValue(c.Args, "startup-taint"); n != 0 {
			t.Errorf("startup taint off, %s still passes --startup-taint: %q", ds.GetObjectKind().GroupVersionKind().Kind, c.Args)
		}
	}
}

// checkStartupTaintKey: an operator's own key reaches the flag, the
// toleration (the only one when nodeAgent.tolerations is emptied) and the
// policy.
func checkStartupTaintKey(t *testing.T, r *rendered) {
	t.Helper()
	const key = "example.com/tagger-not-ready"
	spec := podSpecs(r)["DaemonSet/tagger-node-agent"]
	want := []corev1.Toleration{{Key: key, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}}
	if !slices.Equal(spec.Tolerations, want) {
		t.Errorf("tolerations %+v, want only %+v", spec.Tolerations, want)
	}
	c := container(t, spec, "node-agent")
	if v, n := flagValue(c.Args, "startup-taint"); n != 1 || v != key {
		t.Errorf("--startup-taint %q (%d times), want %q once", v, n, key)
	}
	p := get[*admissionv1.ValidatingAdmissionPolicy](t, r, "ValidatingAdmissionPolicy", startupTaintName)
	if !slices.ContainsFunc(p.Spec.Validations, func(v admissionv1.Validation) bool { return strings.Contains(v.Expression, "'"+key+"'") }) {
		t.Errorf("policy validations do not name %s: %+v", key, p.Spec.Validations)
	}
}

// agentClient is the node agent as the apiserver sees it on node: a
// ServiceAccount token bound to a Pod on that node, as the kubelet mints it.
func agentClient(t *testing.T, kube *rig.Kube, admin *corev1client.CoreV1Client, pod *corev1.Pod) *rest.Config {
	t.Helper()
	ctx := t.Context()
	tr, err := admin.ServiceAccounts(namespace).CreateToken(ctx, agentSA, &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
		ExpirationSeconds: ptr(int64(3600)),
		BoundObjectRef:    &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for pod %s: %v", pod.Name, err)
	}
	cfg := rest.AnonymousClientConfig(kube.Config)
	cfg.BearerToken = tr.Status.Token
	return cfg
}

func ptr[T any](v T) *T { return &v }

// whoAmI returns the node-name claim the apiserver reads from cfg's token.
func whoAmI(t *testing.T, cfg *rest.Config) (string, []string) {
	t.Helper()
	c, err := authnclient.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.SelfSubjectReviews().Create(t.Context(), &authnv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("self subject review: %v", err)
	}
	return r.Status.UserInfo.Username, r.Status.UserInfo.Extra[nodeNameClaim]
}

func jsonPatch(c *corev1client.CoreV1Client, node, patch string, dryRun bool) error {
	o := metav1.PatchOptions{}
	if dryRun {
		o.DryRun = []string{metav1.DryRunAll}
	}
	_, err := c.Nodes().Patch(context.Background(), node, types.JSONPatchType, []byte(patch), o)
	return err
}

// refusedByPolicy: the request passed RBAC and one of the policy's rules
// denied it; an expression that fails also denies (fail closed), but means
// the policy is broken, so it does not count here.
func refusedByPolicy(err error) bool {
	return apierrors.IsForbidden(err) && strings.Contains(err.Error(), "ValidatingAdmissionPolicy '"+startupTaintName+"'") &&
		!strings.Contains(err.Error(), "resulted in error")
}

func waitFor(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The chart's RBAC and ValidatingAdmissionPolicy on a real apiserver, with
// the agent's pod-bound token: the agent removes the startup taint from its
// own node and can do nothing else to any Node; other users are untouched.
func TestStartupTaintPolicy(t *testing.T) {
	r := render(t, "")
	checkStartupTaint(t, r)
	kube := rig.NewKube(t)
	ctx := t.Context()
	admin, err := corev1client.NewForConfig(kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	apply := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}},
		get[*corev1.ServiceAccount](t, r, "ServiceAccount", agentSA),
		get[*rbacv1.ClusterRole](t, r, "ClusterRole", startupTaintName),
		get[*rbacv1.ClusterRoleBinding](t, r, "ClusterRoleBinding", startupTaintName),
		get[*admissionv1.ValidatingAdmissionPolicy](t, r, "ValidatingAdmissionPolicy", startupTaintName),
		get[*admissionv1.ValidatingAdmissionPolicyBinding](t, r, "ValidatingAdmissionPolicyBinding", startupTaintName),
	}
	for _, n := range []string{"node-a", "node-b"} {
		apply = append(apply, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{"zone": "z1"}},
			Spec: corev1.NodeSpec{Taints: []corev1.Taint{
				{Key: "dedicated", Value: "infra", Effect: corev1.TaintEffectNoSchedule},
				{Key: startuptaint.DefaultKey, Effect: corev1.TaintEffectNoSchedule},
			}}})
	}
	for _, o := range apply {
		if err := kube.Client.Create(ctx, o); err != nil {
			t.Fatalf("create %T %s: %v", o, o.GetName(), err)
		}
	}
	// The agent's pod on node-a, as the DaemonSet controller and scheduler
	// would make it (there are neither here).
	pod, err := admin.Pods(namespace).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "tagger-node-agent-a"},
		Spec: corev1.PodSpec{ServiceAccountName: agentSA, NodeName: "node-a",
			Containers: []corev1.Container{{Name: "node-agent", Image: "tagger:test"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	agentCfg := agentClient(t, kube, admin, pod)
	if user, claim := whoAmI(t, agentCfg); user != "system:serviceaccount:"+namespace+":"+agentSA || !slices.Equal(claim, []string{"node-a"}) {
		t.Fatalf("agent token is %s with node claim %v; want the agent's ServiceAccount on node-a", user, claim)
	}
	agent, err := corev1client.NewForConfig(agentCfg)
	if err != nil {
		t.Fatal(err)
	}

	// RBAC and the policy are read by informers: wait until a forbidden
	// change (dry run, nothing is written) is refused by the policy.
	waitFor(t, "policy active for the agent", func() error {
		err := jsonPatch(agent, "node-a", `[{"op":"add","path":"/metadata/labels/x","value":"y"}]`, true)
		if refusedByPolicy(err) {
			return nil
		}
		return fmt.Errorf("dry-run label change answered %v, want a denial by %s", err, startupTaintName)
	})

	nodeA, err := admin.Nodes().Get(ctx, "node-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	taintsA := nodeA.Spec.Taints // with the apiserver's own not-ready taint
	idx := slices.IndexFunc(taintsA, func(t corev1.Taint) bool { return t.Key == startuptaint.DefaultKey })
	removeOwn, _, err := startuptaint.Patch(taintsA, startuptaint.DefaultKey)
	if err != nil {
		t.Fatal(err)
	}
	refused := []struct{ name, node, patch string }{
		{"remove the startup taint from another node", "node-b", string(patchFor(t, admin, "node-b"))},
		{"add a taint", "node-a", `[{"op":"add","path":"/spec/taints/-","value":{"key":"evil","effect":"NoSchedule"}}]`},
		{"remove another taint", "node-a", fmt.Sprintf(`[{"op":"remove","path":"/spec/taints/%d"}]`, slices.IndexFunc(taintsA, func(t corev1.Taint) bool { return t.Key == "dedicated" }))},
		{"change a taint's effect", "node-a", fmt.Sprintf(`[{"op":"replace","path":"/spec/taints/%d/effect","value":"PreferNoSchedule"}]`, idx)},
		{"change a label", "node-a", `[{"op":"replace","path":"/metadata/labels/zone","value":"z2"}]`},
		{"add an annotation", "node-a", `[{"op":"add","path":"/metadata/annotations","value":{"a":"b"}}]`},
		{"cordon", "node-a", `[{"op":"add","path":"/spec/unschedulable","value":true}]`},
		{"set the provider ID", "node-a", `[{"op":"add","path":"/spec/providerID","value":"fake://x"}]`},
		{"remove the startup taint and change a label at once", "node-a",
			strings.TrimSuffix(string(removeOwn), "]") + `,{"op":"replace","path":"/metadata/labels/zone","value":"z2"}]`},
	}
	for _, c := range refused {
		t.Run("refused/"+c.name, func(t *testing.T) {
			err := jsonPatch(agent, c.node, c.patch, false)
			if !refusedByPolicy(err) {
				t.Fatalf("patch %s on %s answered %v, want a denial by %s", c.patch, c.node, err, startupTaintName)
			}
			t.Logf("refused: %v", err)
		})
	}
	t.Run("refused/status and delete", func(t *testing.T) {
		if _, err := agent.Nodes().Patch(ctx, "node-a", types.MergePatchType, []byte(`{"status":{"capacity":{"pods":"1"}}}`), metav1.PatchOptions{}, "status"); !apierrors.IsForbidden(err) {
			t.Errorf("status patch answered %v, want forbidden", err)
		}
		if err := agent.Nodes().Delete(ctx, "node-b", metav1.DeleteOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("delete answered %v, want forbidden", err)
		}
	})

	// A token of the same ServiceAccount without the node claim (not bound
	// to a pod): the policy fails closed.
	t.Run("refused/token without node claim", func(t *testing.T) {
		tr, err := admin.ServiceAccounts(namespace).CreateToken(ctx, agentSA, &authnv1.TokenRequest{
			Spec: authnv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(3600))}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cfg := rest.AnonymousClientConfig(kube.Config)
		cfg.BearerToken = tr.Status.Token
		unbound, err := corev1client.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := jsonPatch(unbound, "node-a", string(removeOwn), true); !refusedByPolicy(err) {
			t.Fatalf("unbound token removing the startup taint answered %v, want a denial", err)
		}
	})

	// Nothing refused was written.
	for _, n := range []string{"node-a", "node-b"} {
		got, err := admin.Nodes().Get(ctx, n, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got.Labels["zone"] != "z1" || len(got.Annotations) != 0 || got.Spec.Unschedulable || got.Spec.ProviderID != "" ||
			!slices.ContainsFunc(got.Spec.Taints, func(t corev1.Taint) bool { return t.Key == startuptaint.DefaultKey }) {
			t.Fatalf("node %s changed by refused requests: %+v %+v", n, got.ObjectMeta.Labels, got.Spec)
		}
	}

	// The agent's own remover, with the agent's token: allowed, exactly once.
	rm := &startuptaint.Remover{Nodes: agent.Nodes(), Node: "node-a", Key: startuptaint.DefaultKey}
	if removed, err := rm.Remove(ctx); err != nil || !removed {
		t.Fatalf("agent removing its own startup taint: removed %v, %v", removed, err)
	}
	got, err := admin.Nodes().Get(ctx, "node-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := startuptaint.Without(taintsA, startuptaint.DefaultKey)
	if len(got.Spec.Taints) != len(want) || slices.ContainsFunc(got.Spec.Taints, func(t corev1.Taint) bool { return t.Key == startuptaint.DefaultKey }) {
		t.Fatalf("node-a taints %+v, want %+v", got.Spec.Taints, want)
	}
	if removed, err := rm.Remove(ctx); err != nil || removed {
		t.Fatalf("second removal: removed %v, %v; want nothing to do", removed, err)
	}

	// Any other user is not matched: the admin changes node-b freely.
	if err := jsonPatch(admin, "node-b", `[{"op":"replace","path":"/metadata/labels/zone","value":"z2"},{"op":"add","path":"/spec/taints/-","value":{"key":"admin","effect":"NoSchedule"}}]`, false); err != nil {
		t.Fatalf("admin change to node-b: %v", err)
	}
	if n, err := admin.Nodes().Get(ctx, "node-b", metav1.GetOptions{}); err != nil || n.Labels["zone"] != "z2" {
		t.Fatalf("admin label change not stored: %v", err)
	}
}

// patchFor is the startup-taint removal the agent would send for node.
func patchFor(t *testing.T, admin *corev1client.CoreV1Client, node string) []byte {
	t.Helper()
	n, err := admin.Nodes().Get(t.Context(), node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p, ok, err := startuptaint.Patch(n.Spec.Taints, startuptaint.DefaultKey)
	if err != nil || !ok {
		t.Fatalf("no startup taint on %s: %v", node, err)
	}
	return p
}
