package charttest

import (
	"maps"
	"path"
	"reflect"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// checkNodeAgentLifecycle: what lets an upgrade roll the agents with no
// moment in which a node's mirror refuses (docs/install.md, "Upgrades").
func checkNodeAgentLifecycle(t *testing.T, ds *appsv1.DaemonSet, c corev1.Container) {
	t.Helper()
	// The hosts.toml files stay when a pod stops: no preStop cleanup.
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
		t.Errorf("node agent has a preStop hook %+v: a stopping agent must leave the node's configuration for the next one", c.Lifecycle.PreStop)
	}
	// Surge: the new pod next to the old one, never a node without an agent.
	u := ds.Spec.UpdateStrategy
	if u.Type != appsv1.RollingUpdateDaemonSetStrategyType || u.RollingUpdate == nil ||
		u.RollingUpdate.MaxSurge == nil || u.RollingUpdate.MaxSurge.String() != "1" ||
		u.RollingUpdate.MaxUnavailable == nil || u.RollingUpdate.MaxUnavailable.String() != "0" {
		t.Errorf("node agent updateStrategy %+v, want RollingUpdate maxSurge 1 maxUnavailable 0", u)
	}
	// No host ports: the scheduler would keep the surge pod off the node.
	for _, p := range c.Ports {
		t.Errorf("node agent declares port %+v: with hostNetwork it is a host port, which forbids the surge pod", p)
	}
	// Probes read the pod's own readiness file, never a shared TCP port.
	ready, n := flagValue(c.Args, "ready-file")
	if n != 1 || ready == "" {
		t.Fatalf("node agent args %q: want one --ready-file", c.Args)
	}
	checkReadyProbe(t, "node agent readiness", c.ReadinessProbe, ready, false)
	checkReadyProbe(t, "node agent liveness", c.LivenessProbe, ready, true)
	checkStateDir(t, "node agent", ds.Spec.Template.Spec, c, ready)
}

// checkReadyProbe: an exec of `node-agent ready-check` on file.
func checkReadyProbe(t *testing.T, what string, p *corev1.Probe, file string, live bool) {
	t.Helper()
	if p == nil || p.Exec == nil || p.HTTPGet != nil || p.TCPSocket != nil {
		t.Errorf("%s probe %+v: want an exec of node-agent ready-check", what, p)
		return
	}
	cmd := p.Exec.Command
	want := []string{"/usr/local/bin/node-agent", "ready-check", "--ready-file=" + file}
	if len(cmd) < 3 || !slices.Equal(cmd[:3], want) {
		t.Errorf("%s probe %q, want it to start %q", what, cmd, want)
	}
	if got := slices.Contains(cmd, "--live"); got != live {
		t.Errorf("%s probe %q: --live %v, want %v", what, cmd, got, live)
	}
	if _, n := flagValue(cmd, "max-age"); live && n != 1 {
		t.Errorf("%s probe %q: no --max-age (a hung agent would stay alive)", what, cmd)
	}
}

// checkStateDir: the readiness file's directory is an emptyDir of the pod's
// own, mounted writable.
func checkStateDir(t *testing.T, what string, spec corev1.PodSpec, c corev1.Container, file string) {
	t.Helper()
	dir := path.Dir(file)
	for _, m := range c.VolumeMounts {
		if m.MountPath != dir {
			continue
		}
		i := slices.IndexFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })
		if i < 0 || spec.Volumes[i].EmptyDir == nil || m.ReadOnly {
			t.Errorf("%s: %s is mounted from %+v, want a writable emptyDir", what, dir, spec.Volumes[i])
		}
		return
	}
	t.Errorf("%s: nothing mounted at %s, where the readiness file %s goes (the root filesystem is read-only)", what, dir, file)
}

// The post-delete hook's objects and their order (helm creates hooks by
// ascending weight and waits for Jobs).
const (
	hookDaemonSet = "tagger-node-cleanup"
	hookJob       = "tagger-node-cleanup-wait"
	hookAccount   = "tagger-node-cleanup"
)

var wantHookWeights = map[string]string{
	"ServiceAccount/" + hookAccount: "-1",
	"Role/" + hookJob:               "-1",
	"RoleBinding/" + hookJob:        "-1",
	"DaemonSet/" + hookDaemonSet:    "0",
	"Job/" + hookJob:                "1",
}

// hookPerms: the waiter reads DaemonSets and Pods of the release namespace.
var hookPerms = map[string][]string{
	"apps/daemonsets": {"get", "list"},
	"/pods":           {"get", "list"},
}

func renderHooks(t *testing.T, values string) *rendered {
	t.Helper()
	var extra []string
	if values != "" {
		extra = []string{"--values", writeValues(t, values)}
	}
	out, err := runHelm(t, hookRenderArgs(extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	r, err := decodeAll([]byte(out))
	if err != nil {
		t.Fatalf("decode hook render: %v", err)
	}
	return r
}

func TestCleanupHookRender(t *testing.T) {
	for name, values := range map[string]string{"defaults": "", "customized": nodeAgentValues} {
		t.Run(name, func(t *testing.T) {
			checkCleanupHook(t, render(t, values), renderHooks(t, values))
		})
	}
	t.Run("disabled", func(t *testing.T) {
		for _, values := range []string{nodeAgentOffValues, "nodeAgent:\n  cleanupHook:\n    enabled: false\n"} {
			_, err := runHelm(t, hookRenderArgs("--values", writeValues(t, values))...)
			if err == nil || !strings.Contains(err.Error(), "could not find template") {
				t.Errorf("with %q the hook still renders (%v)", values, err)
			}
		}
	})
}

// checkCleanupHook compares the hook (hooks) with the agent it cleans up
// after (main, the release's own objects).
func checkCleanupHook(t *testing.T, main, hooks *rendered) {
	if got, want := hooks.kinds(), slices.Sorted(maps.Keys(wantHookWeights)); !slices.Equal(got, want) {
		t.Fatalf("hook render holds %v, want %v", got, want)
	}
	for _, o := range hooks.objects {
		key := o.kind + "/" + o.name
		a := o.obj.(metav1.Object).GetAnnotations()
		if a["helm.sh/hook"] != "post-delete" || a["helm.sh/hook-weight"] != wantHookWeights[key] ||
			a["helm.sh/hook-delete-policy"] != "before-hook-creation,hook-succeeded" {
			t.Errorf("%s hook annotations %v: want post-delete, weight %s, before-hook-creation,hook-succeeded", key, a, wantHookWeights[key])
		}
		if o.ns != namespace {
			t.Errorf("%s in namespace %q", key, o.ns)
		}
	}

	// The waiter's RBAC: a namespaced Role, read-only, bound to the hook's account.
	role := get[*rbacv1.Role](t, hooks, "Role", hookJob)
	perms, problems := permissions(role.Rules)
	for _, p := range problems {
		t.Error(p)
	}
	if !reflect.DeepEqual(perms, hookPerms) {
		t.Errorf("waiter Role grants %v, want exactly %v", perms, hookPerms)
	}
	rb := get[*rbacv1.RoleBinding](t, hooks, "RoleBinding", hookJob)
	if rb.RoleRef.Kind != "Role" || rb.RoleRef.Name != role.Name ||
		!reflect.DeepEqual(rb.Subjects, []rbacv1.Subject{{Kind: "ServiceAccount", Name: hookAccount, Namespace: namespace}}) {
		t.Errorf("waiter RoleBinding %+v %+v", rb.RoleRef, rb.Subjects)
	}

	// The cleanup DaemonSet reaches every node the agent runs on, mounts the
	// same hosts dir and takes the agent's own flags.
	agent := get[*appsv1.DaemonSet](t, main, "DaemonSet", "tagger-node-agent")
	as := agent.Spec.Template.Spec
	ac := container(t, as, "node-agent")
	ds := get[*appsv1.DaemonSet](t, hooks, "DaemonSet", hookDaemonSet)
	hs := ds.Spec.Template.Spec
	hc := container(t, hs, "cleanup")
	if !reflect.DeepEqual(hs.Tolerations, as.Tolerations) || !reflect.DeepEqual(hs.NodeSelector, as.NodeSelector) ||
		!reflect.DeepEqual(hs.Affinity, as.Affinity) || hs.PriorityClassName != as.PriorityClassName {
		t.Errorf("cleanup pods do not go where the agent goes: tolerations %v nodeSelector %v affinity %v priority %q; agent: %v %v %v %q",
			hs.Tolerations, hs.NodeSelector, hs.Affinity, hs.PriorityClassName, as.Tolerations, as.NodeSelector, as.Affinity, as.PriorityClassName)
	}
	if want := []string{"/usr/local/bin/node-agent", "cleanup", "--hold"}; !slices.Equal(hc.Command, want) || !slices.Equal(hc.Args, ac.Args) {
		t.Errorf("cleanup container runs %q %q, want %q with the agent's args %q", hc.Command, hc.Args, want, ac.Args)
	}
	if hc.Image != ac.Image {
		t.Errorf("cleanup image %q, agent image %q", hc.Image, ac.Image)
	}
	hostsDir, _ := flagValue(ac.Args, "hosts-dir")
	for _, v := range hs.Volumes {
		if v.HostPath != nil && v.HostPath.Path != hostsDir {
			t.Errorf("cleanup pods mount hostPath %s; they need only %s", v.HostPath.Path, hostsDir)
		}
	}
	v, ok := hostPathVolume(hs, hostsDir)
	av, _ := hostPathVolume(as, hostsDir)
	if !ok || !reflect.DeepEqual(v.HostPath, av.HostPath) {
		t.Errorf("cleanup hostPath for %s: %+v, agent's %+v", hostsDir, v.HostPath, av.HostPath)
	} else if m, ok := mount(hc, v.Name); !ok || m.MountPath != hostsDir || m.ReadOnly {
		t.Errorf("cleanup mount of %s: %+v", hostsDir, m)
	}
	if hs.HostNetwork || hs.HostPID || (hs.AutomountServiceAccountToken == nil || *hs.AutomountServiceAccountToken) {
		t.Errorf("cleanup pods: hostNetwork %v hostPID %v token %v; they need files only", hs.HostNetwork, hs.HostPID, hs.AutomountServiceAccountToken)
	}
	if hs.ServiceAccountName != hookAccount {
		t.Errorf("cleanup pods run as %q", hs.ServiceAccountName)
	}
	if !reflect.DeepEqual(hc.SecurityContext, ac.SecurityContext) {
		t.Errorf("cleanup securityContext %+v, want the agent's %+v", hc.SecurityContext, ac.SecurityContext)
	}
	ready, _ := flagValue(hc.Args, "ready-file")
	checkReadyProbe(t, "cleanup readiness", hc.ReadinessProbe, ready, false)
	checkStateDir(t, "cleanup pod", hs, hc, ready)

	// The waiter names the hook DaemonSet, and selects the agent's pods and
	// only them.
	job := get[*batchv1.Job](t, hooks, "Job", hookJob)
	js := job.Spec.Template.Spec
	jc := container(t, js, "wait")
	if want := []string{"/usr/local/bin/node-agent", "cleanup-wait"}; !slices.Equal(jc.Command, want) {
		t.Errorf("waiter command %q, want %q", jc.Command, want)
	}
	for flag, want := range map[string]string{"namespace": namespace, "daemonset": ds.Name, "timeout": "4m"} {
		if got, n := flagValue(jc.Args, flag); n != 1 || got != want {
			t.Errorf("waiter --%s=%q (%d times), want %q", flag, got, n, want)
		}
	}
	sel, _ := flagValue(jc.Args, "agent-selector")
	s, err := labels.Parse(sel)
	if err != nil {
		t.Fatalf("--agent-selector=%s: %v", sel, err)
	}
	if !s.Matches(labels.Set(agent.Spec.Template.Labels)) || s.Matches(labels.Set(ds.Spec.Template.Labels)) || s.Matches(labels.Set(job.Spec.Template.Labels)) {
		t.Errorf("--agent-selector=%s must select the agent's pods %v and not the hook's %v, %v", sel, agent.Spec.Template.Labels, ds.Spec.Template.Labels, job.Spec.Template.Labels)
	}
	if dsel, _ := metav1.LabelSelectorAsSelector(ds.Spec.Selector); dsel.Matches(labels.Set(agent.Spec.Template.Labels)) || dsel.Matches(labels.Set(job.Spec.Template.Labels)) {
		t.Errorf("cleanup DaemonSet selector %v matches pods that are not its own", ds.Spec.Selector)
	}
	if job.Spec.BackoffLimit == nil || *job.Spec.BackoffLimit != 0 || js.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("waiter Job backoffLimit %v restartPolicy %q: want one attempt, its own timeout", job.Spec.BackoffLimit, js.RestartPolicy)
	}
	if js.ServiceAccountName != hookAccount || (js.AutomountServiceAccountToken != nil && !*js.AutomountServiceAccountToken) {
		t.Errorf("waiter runs as %q with token %v", js.ServiceAccountName, js.AutomountServiceAccountToken)
	}
	if jc.TerminationMessagePolicy != corev1.TerminationMessageFallbackToLogsOnError {
		t.Errorf("waiter terminationMessagePolicy %q: the nodes it names would not show in the pod status", jc.TerminationMessagePolicy)
	}
	checkRestricted(t, "Job/"+hookJob, js.SecurityContext, jc.SecurityContext)
}
