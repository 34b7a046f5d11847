package install

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tagger-project/tagger/internal/rig"
)

// The chart's post-delete hook objects.
const (
	hookDaemonSet = "tagger-node-cleanup"
	hookJob       = "tagger-node-cleanup-wait"
	hookAccount   = "tagger-node-cleanup"
	hookNode      = "node-1"
)

// seedNodeConfig writes the node's own hosts.toml for registry and returns
// the hosts dir as it is then.
func seedNodeConfig(t *testing.T, hostsDir, registry string) map[string]string {
	t.Helper()
	dir := filepath.Join(hostsDir, registry)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	own := fmt.Sprintf("# the node's own\nserver = \"http://%s\"\n", registry)
	if err := os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(own), 0o644); err != nil {
		t.Fatal(err)
	}
	return rig.SnapshotDir(t, hostsDir)
}

// uninstall runs `helm uninstall` and plays, for its post-delete hook, the
// parts a cluster has and this apiserver has not: the DaemonSet controller
// and kubelet of one node (the hook DaemonSet's container, run as the real
// binary with its rendered command and args, on hostsDir; its pod and the
// DaemonSet status written as they would be once its readiness probe
// passes) and the Job controller (the waiter, run as the real binary with
// its rendered args and a token of the hook's own ServiceAccount, so its
// Role is proven enough; its Job marked complete when it exits 0). Helm must
// then finish the uninstall and delete every hook object.
func uninstall(t *testing.T, helm rig.HelmRunner, c client.Client, cs kubernetes.Interface, kc *rig.Kube, bins, tmp, hostsDir string) {
	t.Helper()
	ctx := context.Background()
	result := make(chan error, 1)
	var helmOut string
	go func() {
		out, err := helm.Run(ctx, "uninstall", release, "--namespace", namespace, "--timeout", "2m")
		helmOut = out
		result <- err
	}()

	// The cleanup DaemonSet's pod on hookNode.
	var ds appsv1.DaemonSet
	waitGet(t, c, hookDaemonSet, &ds, result)
	ctr := ds.Spec.Template.Spec.Containers[0]
	if len(ctr.Command) < 3 || ctr.Command[0] != "/usr/local/bin/node-agent" {
		t.Fatalf("cleanup hook command %q", ctr.Command)
	}
	ready := filepath.Join(tmp, "cleanup-state", "ready")
	args := append(slices.Clone(ctr.Command[1:]), ctr.Args...)
	args = append(args, "--hosts-dir="+hostsDir, "--ready-file="+ready)
	hold := start(t, "node-agent", bins, args)
	probe := append(slices.Clone(ctr.ReadinessProbe.Exec.Command[1:]), "--ready-file="+ready)
	rig.WaitFor(t, waitTimeout, "cleanup hook pod's readiness probe passes", func() (bool, string) {
		out, err := exec.Command(filepath.Join(bins, "node-agent"), probe...).CombinedOutput()
		return err == nil, fmt.Sprintf("%v %s; cleanup output: %s", err, out, hold.out)
	})
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: hookDaemonSet + "-" + hookNode,
			Labels: mergeLabels(ds.Spec.Template.Labels, map[string]string{"pod-template-generation": fmt.Sprint(ds.Generation)})},
		Spec: ds.Spec.Template.Spec,
	}
	pod.Spec.NodeName = hookNode
	mustCreate(t, c, pod)
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning,
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()}}}
	if err := c.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
	ds.Status = appsv1.DaemonSetStatus{ObservedGeneration: ds.Generation, DesiredNumberScheduled: 1, CurrentNumberScheduled: 1,
		UpdatedNumberScheduled: 1, NumberReady: 1, NumberAvailable: 1}
	if err := c.Status().Update(ctx, &ds); err != nil {
		t.Fatal(err)
	}

	// The waiter Job, as the hook's ServiceAccount.
	var job batchv1.Job
	waitGet(t, c, hookJob, &job, result)
	spec := job.Spec.Template.Spec
	wargs := append(slices.Clone(spec.Containers[0].Command[1:]), spec.Containers[0].Args...)
	wargs = append(wargs, "--kubeconfig="+saKubeconfig(t, cs, kc, tmp, spec.ServiceAccountName), "--log-format=text")
	waiter := start(t, "node-agent", bins, wargs)
	select {
	case <-waiter.Done():
	case <-time.After(waitTimeout):
		t.Fatalf("cleanup-wait did not finish:\n%s", waiter.out)
	}
	if err := waiter.Err(); err != nil || strings.Contains(strings.ToLower(waiter.out.String()), "forbidden") {
		t.Fatalf("cleanup-wait as %s: %v\n%s", spec.ServiceAccountName, err, waiter.out)
	}
	now := metav1.Now()
	job.Status = batchv1.JobStatus{StartTime: &job.CreationTimestamp, CompletionTime: &now, Succeeded: 1,
		Conditions: []batchv1.JobCondition{
			{Type: batchv1.JobSuccessCriteriaMet, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: batchv1.JobComplete, Status: corev1.ConditionTrue, LastTransitionTime: now},
		}}
	if err := c.Status().Update(ctx, &job); err != nil {
		t.Fatalf("mark the waiter Job complete: %v", err)
	}

	select {
	case err := <-result:
		if err != nil {
			t.Fatalf("helm uninstall: %v\n%s", err, helmOut)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("helm uninstall did not return after its hook Job completed")
	}
	// hook-succeeded: helm removed the hook's objects.
	for _, h := range []struct {
		name string
		obj  client.Object
	}{
		{hookDaemonSet, &appsv1.DaemonSet{}}, {hookJob, &batchv1.Job{}}, {hookAccount, &corev1.ServiceAccount{}},
		{hookJob, &rbacv1.Role{}}, {hookJob, &rbacv1.RoleBinding{}},
	} {
		if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: h.name}, h.obj); !apierrors.IsNotFound(err) {
			t.Errorf("hook %T %s after helm uninstall: %v", h.obj, h.name, err)
		}
	}
	hold.stop(t) // helm deleted the DaemonSet: the kubelet stops its pod
}

// waitGet waits until the hook object name exists (helm creates the hooks
// one after the other), failing early when helm already returned.
func waitGet(t *testing.T, c client.Client, name string, o client.Object, helm <-chan error) {
	t.Helper()
	rig.WaitFor(t, waitTimeout, fmt.Sprintf("helm creates hook %T %s", o, name), func() (bool, string) {
		select {
		case err := <-helm:
			t.Fatalf("helm uninstall returned before creating %s: %v", name, err)
		default:
		}
		err := c.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, o)
		return err == nil, fmt.Sprint(err)
	})
}

func mergeLabels(a, b map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}
