package charttest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/tagger-project/tagger/internal/rig"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Values of the non-default renders.
const (
	s3Values = `
registry:
  replicas: 3
  httpSecret:
    existingSecret: tagger-registry-http
  storage:
    type: s3
    s3:
      bucket: tagger-cache
      region: us-east-1
      regionendpoint: http://seaweedfs.storage.svc:8333
      forcepathstyle: true
      secure: false
      existingSecret: tagger-registry-s3
`
	// Every node agent value away from its default (k3s paths, strict
	// registries, no convergence, no metrics); a plain-HTTP pattern repeats
	// the bundled registry, which the chart adds by itself.
	nodeAgentValues = `
nodeAgent:
  listen: 127.0.0.1:5055
  metricsAddr: "0"
  healthAddr: ":19092"
  hostsDir: /var/lib/rancher/k3s/agent/etc/containerd/certs.d
  containerdConfig: /var/lib/rancher/k3s/agent/etc/containerd/config.toml
  containerdSocket: ""
  registryURL: https://registry.example.com
  dialTimeout: 1s
  strictRegistries: [docker.io, "*.corp.example"]
  plainHTTPRegistries: [registry.local:5000, tagger-registry.tagger-system.svc:5000]
  convergeWorkers: 4
  logFormat: text
  logLevel: debug
  startupTaint:
    enabled: false
`
	// A startup taint of the operator's own, with tolerations narrowed to
	// none: the agent still tolerates its own taint.
	startupTaintValues = `
nodeAgent:
  tolerations: []
  startupTaint:
    key: example.com/tagger-not-ready
`
	nodeAgentOffValues = `
nodeAgent:
  enabled: false
`
	rwxValues = `
registry:
  persistence:
    accessMode: ReadWriteMany
    storageClassName: nfs
`
)

// The RBAC the chart promises (docs/install.md, "RBAC"), as "group/resource"
// -> verbs. Anything more is a least-privilege regression.
var (
	controllerPerms = map[string][]string{
		"tagger.dev/tags":        {"get", "list", "patch", "update", "watch"},
		"tagger.dev/tags/status": {"get", "patch", "update"},
		"events.k8s.io/events":   {"create", "patch"},
		"/events":                {"create", "patch"},
		// spec.rollout.restart: restart workloads like `kubectl rollout restart`.
		"apps/deployments":  {"get", "list", "patch", "watch"},
		"apps/statefulsets": {"get", "list", "patch", "watch"},
		"apps/daemonsets":   {"get", "list", "patch", "watch"},
		"/namespaces":       {"list", "watch"},
		// The bundled registry's token issuer reviews the tokens it is shown.
		"authentication.k8s.io/tokenreviews": {"create"},
	}
	// The pull Secrets (pullSecrets.scope=namespace, in pullSecrets.namespace)
	// and the webhook Secret (by name, when pull Secrets live elsewhere): the
	// one Secret a Tag names, read by name; never list or watch.
	secretGetPerms      = map[string][]string{"/secrets": {"get"}}
	leaderElectionPerms = map[string][]string{
		"coordination.k8s.io/leases": {"create", "delete", "get", "list", "patch", "update", "watch"},
	}
	nodeAgentPerms = map[string][]string{
		"tagger.dev/tags": {"get", "list", "watch"},
	}
	// Only with nodeAgent.startupTaint.enabled (the default), and confined
	// by the chart's ValidatingAdmissionPolicy to removing the startup taint
	// from the agent's own node.
	startupTaintPerms = map[string][]string{
		"/nodes": {"get", "patch"},
	}
)

func render(t *testing.T, values string) *rendered {
	t.Helper()
	var extra []string
	if values != "" {
		extra = []string{"--values", writeValues(t, values)}
	}
	out, err := runHelm(t, renderArgs(extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	r, err := decodeAll([]byte(out))
	if err != nil {
		t.Fatalf("decode helm template output: %v", err)
	}
	return r
}

func TestRender(t *testing.T) {
	tests := []struct {
		name   string
		values string
		check  func(*testing.T, *rendered)
	}{
		{name: "defaults", check: checkDefaults},
		{name: "s3 with 3 replicas", values: s3Values, check: checkS3},
		{name: "node agent customized", values: nodeAgentValues, check: func(t *testing.T, r *rendered) {
			checkNodeAgent(t, r, customNodeAgent)
			checkNoStartupTaint(t, r)
		}},
		{name: "node agent disabled", values: nodeAgentOffValues, check: checkNodeAgentOff},
		{name: "startup taint key", values: startupTaintValues, check: checkStartupTaintKey},
		{name: "filesystem ReadWriteMany", values: rwxValues, check: checkReadWriteMany},
		{name: "webhooks enabled", values: "webhooks:\n  enabled: true\n", check: checkWebhooks},
		{name: "pull secrets in the release namespace", check: checkPullSecrets(namespace, false)},
		{name: "pull secrets in their own namespace and the webhook Secret by name", values: "pullSecrets:\n  namespace: registry-creds\nwebhooks:\n  enabled: true\n  secretName: hooks\n", check: checkPullSecrets("registry-creds", true)},
		{name: "pull secrets cluster-wide", values: "pullSecrets:\n  scope: cluster\n", check: checkPullSecrets("", false)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := render(t, tt.values)
			checkCommon(t, r)
			checkRBAC(t, r)
			tt.check(t, r)
		})
	}
}

// checkCommon holds for every render: namespaces, labels, the CRD, the
// controller, the registry Service, hardened pods.
func checkCommon(t *testing.T, r *rendered) {
	for _, o := range r.objects {
		switch {
		case clusterScoped[o.kind] && o.ns != "":
			t.Errorf("%s is cluster-scoped but sets namespace %q", o, o.ns)
		case o.name == "tagger-controller-pull-secrets" && o.ns != "":
			// pullSecrets.namespace: where the pull Secrets are (checkPullSecrets).
		case !clusterScoped[o.kind] && o.ns != namespace:
			t.Errorf("%s: namespace %q, want %q (plain manifests must say where they go)", o, o.ns, namespace)
		}
		l := o.obj.(metav1.Object).GetLabels()
		for k, want := range map[string]string{
			"app.kubernetes.io/name":       "tagger",
			"app.kubernetes.io/instance":   releaseName,
			"app.kubernetes.io/managed-by": "Helm",
			"app.kubernetes.io/part-of":    "tagger",
		} {
			if l[k] != want {
				t.Errorf("%s: label %s=%q, want %q", o, k, l[k], want)
			}
		}
		if l["app.kubernetes.io/component"] == "" {
			t.Errorf("%s: no app.kubernetes.io/component label", o)
		}
	}

	crd := get[*apiextensionsv1.CustomResourceDefinition](t, r, "CustomResourceDefinition", "tags.tagger.dev")
	if crd.Spec.Scope != apiextensionsv1.ClusterScoped {
		t.Errorf("CRD scope %s, want Cluster", crd.Spec.Scope)
	}

	// Workload selectors select their own pods, and every Service selects a
	// workload's pods.
	var podLabels []labels.Set
	for _, o := range r.objects {
		var sel *metav1.LabelSelector
		var tmpl map[string]string
		switch w := o.obj.(type) {
		case *appsv1.Deployment:
			sel, tmpl = w.Spec.Selector, w.Spec.Template.Labels
		case *appsv1.DaemonSet:
			sel, tmpl = w.Spec.Selector, w.Spec.Template.Labels
		default:
			continue
		}
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil || !s.Matches(labels.Set(tmpl)) {
			t.Errorf("%s: selector %v does not match its pod labels %v (%v)", o, sel, tmpl, err)
		}
		podLabels = append(podLabels, tmpl)
	}
	for _, svc := range ofKind[*corev1.Service](r) {
		sel := labels.SelectorFromSet(svc.Spec.Selector)
		if len(svc.Spec.Selector) == 0 || !slices.ContainsFunc(podLabels, func(l labels.Set) bool { return sel.Matches(l) }) {
			t.Errorf("Service %s selects no rendered pods: %v", svc.Name, svc.Spec.Selector)
		}
	}

	// Controller: the chart's flags, probes, image and Services.
	d := get[*appsv1.Deployment](t, r, "Deployment", "tagger-controller")
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("controller replicas %v, want 2", d.Spec.Replicas)
	}
	c := container(t, d.Spec.Template.Spec, "controller")
	if want := []string{"/usr/local/bin/controller"}; !slices.Equal(c.Command, want) {
		t.Errorf("controller command %q, want %q", c.Command, want)
	}
	wantArgs := []string{
		"--leader-elect",
		"--leader-election-namespace=" + namespace,
		"--metrics-addr=:8443",
		"--health-addr=:8081",
		"--log-format=json",
		"--log-level=info",
		"--max-concurrent-checks=8",
		"--max-concurrent-caches=2",
		"--upstream-timeout=30s",
		"--registry-qps=10",
		"--registry-url=http://tagger-registry." + namespace + ".svc:5000", // spec.cache copies go here
		// The bundled registry's token issuer and the controller's own token.
		"--registry-token-file=/var/run/secrets/tagger.dev/registry/token",
		"--registry-auth-addr=:8082",
		"--registry-auth-key-file=/etc/tagger/registry-auth/tls.key",
		"--registry-auth-audience=tagger-registry",
		"--registry-auth-token-ttl=5m",
		"--registry-auth-pushers=system:serviceaccount:" + namespace + ":tagger-controller",
		"--registry-auth-pullers=system:serviceaccount:" + namespace + ":tagger-node-agent",
	}
	// --webhook-addr depends on webhooks.enabled: "0" by default, checked
	// with the webhook values in checkWebhooks; --pull-secret-namespace on
	// pullSecrets, checked in checkPullSecrets.
	args := slices.DeleteFunc(slices.Clone(c.Args), func(a string) bool { return strings.HasPrefix(a, "--webhook-addr=") })
	if len(c.Args)-len(args) != 1 {
		t.Errorf("controller args %q: want exactly one --webhook-addr", c.Args)
	}
	args = slices.DeleteFunc(args, func(a string) bool {
		return strings.HasPrefix(a, "--pull-secret-namespace=") || strings.HasPrefix(a, "--webhook-secret=")
	})
	if !slices.Equal(args, wantArgs) {
		t.Errorf("controller args:\n got %q\nwant %q", c.Args, wantArgs)
	}
	if c.Image != "ghcr.io/tagger-project/tagger:0.1.0" {
		t.Errorf("controller image %q, want ghcr.io/tagger-project/tagger:0.1.0 (appVersion)", c.Image)
	}
	for probe, p := range map[string]*corev1.Probe{"/healthz": c.LivenessProbe, "/readyz": c.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != probe || p.HTTPGet.Port.String() != "health" {
			t.Errorf("controller probe for %s: %+v", probe, p)
		}
	}
	if !slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == "health" && p.ContainerPort == 8081 }) {
		t.Errorf("controller ports %+v: no health port 8081", c.Ports)
	}
	metrics := get[*corev1.Service](t, r, "Service", "tagger-controller-metrics")
	if len(metrics.Spec.Ports) != 1 || metrics.Spec.Ports[0].Name != "metrics" || metrics.Spec.Ports[0].Port != 8443 {
		t.Errorf("metrics Service ports %+v, want one port 8443 named metrics", metrics.Spec.Ports)
	}
	pdb := get[*policyv1.PodDisruptionBudget](t, r, "PodDisruptionBudget", "tagger-controller")
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 1 {
		t.Errorf("controller PDB minAvailable %v, want 1", pdb.Spec.MinAvailable)
	}

	// The registry Service node agents and the controller reach.
	svc := get[*corev1.Service](t, r, "Service", "tagger-registry")
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 5000 {
		t.Errorf("registry Service ports %+v, want 5000", svc.Spec.Ports)
	}
	reg := get[*appsv1.Deployment](t, r, "Deployment", "tagger-registry")
	rc := container(t, reg.Spec.Template.Spec, "registry")
	if rc.Image != defaultRegistryImage {
		t.Errorf("registry image %q, want %s", rc.Image, defaultRegistryImage)
	}
	if got := append(slices.Clone(rc.Command), rc.Args...); !slices.Equal(got, []string{"registry", "serve", "/etc/distribution/config.yml"}) {
		t.Errorf("registry command %q", got)
	}
	if e, ok := envVar(rc, "OTEL_TRACES_EXPORTER"); !ok || e.Value != "none" {
		t.Errorf("registry env OTEL_TRACES_EXPORTER = %+v, want none", e)
	}
	cfg := registryConfig(t, r)
	for path, want := range map[string]any{
		"version":                "0.1",
		"http.addr":              ":5000",
		"storage.delete.enabled": true,
		"storage.maintenance.uploadpurging.enabled":  true,
		"storage.maintenance.uploadpurging.age":      "168h",
		"storage.maintenance.uploadpurging.interval": "24h",
		"storage.maintenance.uploadpurging.dryrun":   false,
		"health.storagedriver.enabled":               true,
	} {
		got, ok := lookup(cfg, strings.Split(path, ".")...)
		if !ok || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("registry config %s = %v, want %v", path, got, want)
		}
	}

	checkPods(t, r)
}

// checkPods: every pod but the node agent's meets the "restricted" Pod
// Security profile; ServiceAccounts exist; only the controller and the node
// agent get an API token.
func checkPods(t *testing.T, r *rendered) {
	for name, spec := range podSpecs(r) {
		sa := spec.ServiceAccountName
		if _, ok := r.find("ServiceAccount", sa); !ok || sa == "" {
			t.Errorf("%s runs as ServiceAccount %q, which the chart does not render", name, sa)
		}
		wantToken := name == "Deployment/tagger-controller" || name == "DaemonSet/tagger-node-agent"
		if hasToken := spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken; hasToken != wantToken {
			t.Errorf("%s: API token mounted = %v, want %v", name, hasToken, wantToken)
		}
		if name == "DaemonSet/tagger-node-agent" {
			continue // checked in checkNodeAgent: it needs the host
		}
		if spec.HostNetwork || spec.HostPID || spec.HostIPC {
			t.Errorf("%s uses host namespaces", name)
		}
		for _, v := range spec.Volumes {
			if v.HostPath != nil {
				t.Errorf("%s mounts hostPath %s", name, v.HostPath.Path)
			}
		}
		for _, c := range spec.Containers {
			checkRestricted(t, name+"/"+c.Name, spec.SecurityContext, c.SecurityContext)
		}
	}
}

func checkRestricted(t *testing.T, what string, pod *corev1.PodSecurityContext, sc *corev1.SecurityContext) {
	t.Helper()
	if sc == nil {
		t.Errorf("%s: no securityContext", what)
		return
	}
	if pod == nil {
		pod = &corev1.PodSecurityContext{}
	}
	nonRoot := (sc.RunAsNonRoot != nil && *sc.RunAsNonRoot) || (sc.RunAsNonRoot == nil && pod.RunAsNonRoot != nil && *pod.RunAsNonRoot)
	if !nonRoot {
		t.Errorf("%s: runAsNonRoot is not true", what)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%s: readOnlyRootFilesystem is not true", what)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s: allowPrivilegeEscalation is not false", what)
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Errorf("%s: privileged", what)
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
		t.Errorf("%s: capabilities %+v, want drop [ALL] and nothing added", what, sc.Capabilities)
	}
	seccomp := sc.SeccompProfile
	if seccomp == nil {
		seccomp = pod.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: seccomp profile %+v, want RuntimeDefault", what, seccomp)
	}
}

// checkRBAC: every Role and ClusterRole grants exactly what the chart
// promises, Secrets are readable only by name and only by the controller, and
// every binding points at a rendered role and ServiceAccount.
func checkRBAC(t *testing.T, r *rendered) {
	// pullSecrets.scope=cluster: the controller's ClusterRole reads Secrets
	// by name instead of the pull-secrets Role.
	_, namespaced := r.find("Role", "tagger-controller-pull-secrets")
	ctrlPerms := maps.Clone(controllerPerms)
	secretReaders := []string{"Role/tagger-controller-pull-secrets", "Role/tagger-controller-webhook-secret"}
	if !namespaced {
		ctrlPerms["/secrets"] = []string{"get"}
		secretReaders = append(secretReaders, "ClusterRole/tagger-controller")
	}
	want := map[string]map[string][]string{
		"ClusterRole/tagger-controller":          ctrlPerms,
		"Role/tagger-controller-pull-secrets":    secretGetPerms,
		"Role/tagger-controller-webhook-secret":  secretGetPerms, // resourceNames: the webhook Secret
		"Role/tagger-controller-leader-election": leaderElectionPerms,
		"ClusterRole/tagger-node-agent":          nodeAgentPerms, // when nodeAgent.enabled (the default)
		"ClusterRole/" + startupTaintName:        startupTaintPerms,
	}
	for _, o := range r.objects {
		var rules []rbacv1.PolicyRule
		switch role := o.obj.(type) {
		case *rbacv1.ClusterRole:
			if role.AggregationRule != nil {
				t.Errorf("%s aggregates other roles", o)
			}
			rules = role.Rules
		case *rbacv1.Role:
			rules = role.Rules
		default:
			continue
		}
		key := o.kind + "/" + o.name
		perms, problems := permissions(rules)
		for _, p := range problems {
			if key == "Role/tagger-controller-webhook-secret" && strings.Contains(p, "resourceNames") {
				continue // the one Secret whose name the chart knows
			}
			t.Errorf("%s: %s", key, p)
		}
		if verbs, ok := perms["/secrets"]; ok && (!slices.Contains(secretReaders, key) || !slices.Equal(verbs, []string{"get"})) {
			t.Errorf("%s grants %v on secrets; only the controller's %v may, and only get (it reads the one Secret a Tag names, never lists or watches)", key, verbs, secretReaders)
		}
		expected, ok := want[key]
		if !ok {
			t.Errorf("unexpected role %s: %v", key, perms)
			continue
		}
		if !reflect.DeepEqual(perms, expected) {
			t.Errorf("%s grants\n  %v\nwant exactly\n  %v", key, perms, expected)
		}
	}
	if _, ok := r.find("Role", "tagger-controller-leader-election"); !ok {
		t.Error("no leader-election Role")
	}

	type binding struct {
		roleRef  rbacv1.RoleRef
		subjects []rbacv1.Subject
	}
	bindings := map[string]binding{}
	for _, b := range ofKind[*rbacv1.ClusterRoleBinding](r) {
		bindings["ClusterRoleBinding/"+b.Name] = binding{b.RoleRef, b.Subjects}
	}
	for _, b := range ofKind[*rbacv1.RoleBinding](r) {
		bindings["RoleBinding/"+b.Name] = binding{b.RoleRef, b.Subjects}
	}
	wantBindings := map[string]string{ // binding -> role, bound to the ServiceAccount of the same component
		"ClusterRoleBinding/tagger-controller":          "ClusterRole/tagger-controller",
		"RoleBinding/tagger-controller-leader-election": "Role/tagger-controller-leader-election",
		"RoleBinding/tagger-controller-pull-secrets":    "Role/tagger-controller-pull-secrets",
		"RoleBinding/tagger-controller-webhook-secret":  "Role/tagger-controller-webhook-secret",
		"ClusterRoleBinding/tagger-node-agent":          "ClusterRole/tagger-node-agent",
		"ClusterRoleBinding/" + startupTaintName:        "ClusterRole/" + startupTaintName,
	}
	wantSA := map[string]string{
		"ClusterRoleBinding/tagger-controller":          "tagger-controller",
		"RoleBinding/tagger-controller-leader-election": "tagger-controller",
		"RoleBinding/tagger-controller-pull-secrets":    "tagger-controller",
		"RoleBinding/tagger-controller-webhook-secret":  "tagger-controller",
		"ClusterRoleBinding/tagger-node-agent":          "tagger-node-agent",
		"ClusterRoleBinding/" + startupTaintName:        "tagger-node-agent",
	}
	for key, b := range bindings {
		role, ok := wantBindings[key]
		if !ok {
			t.Errorf("unexpected binding %s", key)
			continue
		}
		if got := b.roleRef.Kind + "/" + b.roleRef.Name; got != role || b.roleRef.APIGroup != rbacv1.GroupName {
			t.Errorf("%s binds %s (%s), want %s", key, got, b.roleRef.APIGroup, role)
		}
		if _, ok := r.find(b.roleRef.Kind, b.roleRef.Name); !ok {
			t.Errorf("%s binds %s/%s, which is not rendered", key, b.roleRef.Kind, b.roleRef.Name)
		}
		wantSubj := []rbacv1.Subject{{Kind: "ServiceAccount", Name: wantSA[key], Namespace: namespace}}
		if !reflect.DeepEqual(b.subjects, wantSubj) {
			t.Errorf("%s subjects %+v, want %+v", key, b.subjects, wantSubj)
		}
	}
	for key, role := range wantBindings {
		kind, name, _ := strings.Cut(role, "/")
		_, roleRendered := r.find(kind, name)
		if _, ok := bindings[key]; roleRendered && !ok {
			t.Errorf("%s is rendered but not bound (%s missing)", role, key)
		}
	}
}

func checkDefaults(t *testing.T, r *rendered) {
	// (The webhook Service is absent: webhooks.enabled defaults to false.)
	want := []string{
		"ClusterRole/tagger-controller",
		"ClusterRole/tagger-node-agent",
		"ClusterRole/tagger-node-agent-startup-taint",
		"ClusterRoleBinding/tagger-controller",
		"ClusterRoleBinding/tagger-node-agent",
		"ClusterRoleBinding/tagger-node-agent-startup-taint",
		"ConfigMap/tagger-registry",
		"CustomResourceDefinition/tags.tagger.dev",
		"DaemonSet/tagger-node-agent",
		"Deployment/tagger-controller",
		"Deployment/tagger-registry",
		"PersistentVolumeClaim/tagger-registry",
		"PodDisruptionBudget/tagger-controller",
		"Role/tagger-controller-leader-election",
		"Role/tagger-controller-pull-secrets",
		"RoleBinding/tagger-controller-leader-election",
		"RoleBinding/tagger-controller-pull-secrets",
		"Secret/tagger-registry-auth",
		"Service/tagger-controller-metrics",
		"Service/tagger-controller-registry-auth",
		"Service/tagger-node-agent-metrics",
		"Service/tagger-registry",
		"ServiceAccount/tagger-controller",
		"ServiceAccount/tagger-node-agent",
		"ServiceAccount/tagger-registry",
		"ValidatingAdmissionPolicy/tagger-node-agent-startup-taint",
		"ValidatingAdmissionPolicyBinding/tagger-node-agent-startup-taint",
	}
	if got := r.kinds(); !slices.Equal(got, want) {
		t.Errorf("default render:\n got %v\nwant %v\n(node agent on, no gc CronJob on a ReadWriteOnce volume)", got, want)
	}
	checkNodeAgent(t, r, defaultNodeAgent)
	checkStartupTaint(t, r)

	reg := get[*appsv1.Deployment](t, r, "Deployment", "tagger-registry")
	if reg.Spec.Replicas == nil || *reg.Spec.Replicas != 1 {
		t.Errorf("registry replicas %v, want 1", reg.Spec.Replicas)
	}
	if reg.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("registry strategy %q, want Recreate (one ReadWriteOnce volume)", reg.Spec.Strategy.Type)
	}
	pvc := get[*corev1.PersistentVolumeClaim](t, r, "PersistentVolumeClaim", "tagger-registry")
	if got := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; got.Cmp(resource.MustParse("20Gi")) != 0 {
		t.Errorf("registry PVC size %s, want 20Gi", got.String())
	}
	if !slices.Equal(pvc.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}) {
		t.Errorf("registry PVC access modes %v", pvc.Spec.AccessModes)
	}
	if pvc.Spec.StorageClassName != nil {
		t.Errorf("registry PVC storageClassName %q, want unset (the cluster default)", *pvc.Spec.StorageClassName)
	}
	// helm uninstall keeps the cache (docs/install.md, "Uninstall").
	if got := pvc.Annotations["helm.sh/resource-policy"]; got != "keep" {
		t.Errorf("registry PVC helm.sh/resource-policy %q, want keep", got)
	}
	spec := reg.Spec.Template.Spec
	c := container(t, spec, "registry")
	m, ok := mount(c, "data")
	if !ok || m.MountPath != "/var/lib/registry" {
		t.Errorf("registry data mount %+v", m)
	}
	if !slices.ContainsFunc(spec.Volumes, func(v corev1.Volume) bool {
		return v.Name == "data" && v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == pvc.Name
	}) {
		t.Errorf("registry does not mount PVC %s: %+v", pvc.Name, spec.Volumes)
	}
	cfg := registryConfig(t, r)
	if got, _ := lookup(cfg, "storage", "filesystem", "rootdirectory"); got != "/var/lib/registry" {
		t.Errorf("registry filesystem rootdirectory %v", got)
	}
	if _, ok := lookup(cfg, "storage", "s3"); ok {
		t.Error("default registry config has an s3 section")
	}
	for _, e := range c.Env {
		if strings.HasPrefix(e.Name, "REGISTRY_STORAGE_S3_") || e.Name == "REGISTRY_HTTP_SECRET" {
			t.Errorf("default registry env has %s", e.Name)
		}
	}
}

func checkS3(t *testing.T, r *rendered) {
	reg := get[*appsv1.Deployment](t, r, "Deployment", "tagger-registry")
	if reg.Spec.Replicas == nil || *reg.Spec.Replicas != 3 {
		t.Errorf("registry replicas %v, want 3", reg.Spec.Replicas)
	}
	if reg.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType {
		t.Errorf("registry strategy %q, want RollingUpdate", reg.Spec.Strategy.Type)
	}
	if _, ok := r.find("PersistentVolumeClaim", "tagger-registry"); ok {
		t.Error("PVC rendered for s3 storage")
	}
	for _, v := range reg.Spec.Template.Spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			t.Errorf("s3 registry mounts a PVC: %+v", v)
		}
	}
	cfg := registryConfig(t, r)
	for path, want := range map[string]any{
		"storage.s3.bucket":         "tagger-cache",
		"storage.s3.region":         "us-east-1",
		"storage.s3.regionendpoint": "http://seaweedfs.storage.svc:8333",
		"storage.s3.forcepathstyle": true,
		"storage.s3.secure":         false,
		"storage.redirect.disable":  true,
	} {
		got, ok := lookup(cfg, strings.Split(path, ".")...)
		if !ok || got != want {
			t.Errorf("registry config %s = %#v, want %#v", path, got, want)
		}
	}
	if _, ok := lookup(cfg, "storage", "filesystem"); ok {
		t.Error("s3 registry config still has a filesystem section")
	}
	for _, key := range []string{"accesskey", "secretkey"} {
		if v, ok := lookup(cfg, "storage", "s3", key); ok {
			t.Errorf("s3 %s is in the ConfigMap (%v); credentials belong in a Secret", key, v)
		}
	}

	cj := get[*batchv1.CronJob](t, r, "CronJob", "tagger-registry-gc")
	if cj.Spec.Schedule != "0 3 * * *" {
		t.Errorf("gc schedule %q", cj.Spec.Schedule)
	}
	if cj.Spec.ConcurrencyPolicy != batchv1.ForbidConcurrent {
		t.Errorf("gc concurrencyPolicy %q, want Forbid", cj.Spec.ConcurrencyPolicy)
	}
	gc := container(t, cj.Spec.JobTemplate.Spec.Template.Spec, "garbage-collect")
	if script := strings.Join(append(slices.Clone(gc.Command), gc.Args...), " "); !strings.Contains(script, "registry garbage-collect --delete-untagged=false /etc/distribution/config.yml") {
		t.Errorf("gc command does not run `registry garbage-collect --delete-untagged=false /etc/distribution/config.yml`:\n%s", script)
	}
	ro, ok := envVar(gc, "REGISTRY_STORAGE_MAINTENANCE_READONLY")
	var readonly struct{ Enabled bool }
	if !ok || json.Unmarshal([]byte(ro.Value), &readonly) != nil || !readonly.Enabled {
		t.Errorf("gc REGISTRY_STORAGE_MAINTENANCE_READONLY = %q, want {\"enabled\": true}", ro.Value)
	}

	// Credentials and the shared upload secret come from Secrets, in the
	// registry and its gc job alike.
	for what, c := range map[string]corev1.Container{"registry": container(t, reg.Spec.Template.Spec, "registry"), "gc": gc} {
		for env, ref := range map[string][2]string{
			"REGISTRY_STORAGE_S3_ACCESSKEY": {"tagger-registry-s3", "accesskey"},
			"REGISTRY_STORAGE_S3_SECRETKEY": {"tagger-registry-s3", "secretkey"},
			"REGISTRY_HTTP_SECRET":          {"tagger-registry-http", "http-secret"},
		} {
			e, ok := envVar(c, env)
			if !ok || e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil ||
				e.ValueFrom.SecretKeyRef.Name != ref[0] || e.ValueFrom.SecretKeyRef.Key != ref[1] {
				t.Errorf("%s env %s = %+v, want secretKeyRef %s/%s", what, env, e, ref[0], ref[1])
			}
		}
	}
}

func checkReadWriteMany(t *testing.T, r *rendered) {
	pvc := get[*corev1.PersistentVolumeClaim](t, r, "PersistentVolumeClaim", "tagger-registry")
	if !slices.Equal(pvc.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}) {
		t.Errorf("PVC access modes %v, want ReadWriteMany", pvc.Spec.AccessModes)
	}
	if pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName != "nfs" {
		t.Errorf("PVC storageClassName %v, want nfs", pvc.Spec.StorageClassName)
	}
	// A ReadWriteMany volume can be opened by the gc pod while the registry runs.
	cj := get[*batchv1.CronJob](t, r, "CronJob", "tagger-registry-gc")
	spec := cj.Spec.JobTemplate.Spec.Template.Spec
	if !slices.ContainsFunc(spec.Volumes, func(v corev1.Volume) bool {
		return v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == pvc.Name
	}) {
		t.Errorf("gc job does not mount PVC %s", pvc.Name)
	}
	if m, ok := mount(container(t, spec, "garbage-collect"), "data"); !ok || m.MountPath != "/var/lib/registry" {
		t.Errorf("gc data mount %+v", m)
	}
}

func checkWebhooks(t *testing.T, r *rendered) {
	svc := get[*corev1.Service](t, r, "Service", "tagger-controller-webhooks")
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 8080 || svc.Spec.Ports[0].TargetPort.String() != "webhooks" {
		t.Errorf("webhook Service ports %+v, want 8080 -> webhooks", svc.Spec.Ports)
	}
	d := get[*appsv1.Deployment](t, r, "Deployment", "tagger-controller")
	c := container(t, d.Spec.Template.Spec, "controller")
	if !slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == "webhooks" && p.ContainerPort == 8080 }) {
		t.Errorf("controller ports %+v: no webhooks port 8080", c.Ports)
	}
	if !slices.Contains(c.Args, "--webhook-addr=:8080") {
		t.Errorf("controller args %q: webhooks enabled but not served on :8080", c.Args)
	}
}

// checkPullSecrets: with a pull-secret namespace, the controller is told it
// and may get Secrets there only (a Role there, none in the ClusterRole);
// the webhook Secret, when pull Secrets live elsewhere, by name only. With
// pullSecrets.scope=cluster (ns ""), neither Role and no flag.
func checkPullSecrets(ns string, webhookRole bool) func(*testing.T, *rendered) {
	return func(t *testing.T, r *rendered) {
		d := get[*appsv1.Deployment](t, r, "Deployment", "tagger-controller")
		args := container(t, d.Spec.Template.Spec, "controller").Args
		v, n := flagValue(args, "pull-secret-namespace")
		role, found := r.find("Role", "tagger-controller-pull-secrets")
		if ns == "" {
			if n != 0 || found {
				t.Errorf("scope=cluster: --pull-secret-namespace given %d times, pull-secrets Role rendered: %v", n, found)
			}
			return
		}
		if n != 1 || v != ns {
			t.Errorf("controller args %q: want --pull-secret-namespace=%s once", args, ns)
		}
		if !found || role.(*rbacv1.Role).Namespace != ns {
			t.Fatalf("no pull-secrets Role in namespace %s", ns)
		}
		if b, ok := r.find("RoleBinding", "tagger-controller-pull-secrets"); !ok || b.(*rbacv1.RoleBinding).Namespace != ns {
			t.Errorf("no pull-secrets RoleBinding in namespace %s", ns)
		}
		wh, found := r.find("Role", "tagger-controller-webhook-secret")
		if found != webhookRole {
			t.Fatalf("webhook-secret Role rendered: %v, want %v", found, webhookRole)
		}
		if found {
			rules := wh.(*rbacv1.Role).Rules
			if len(rules) != 1 || !slices.Equal(rules[0].ResourceNames, []string{"hooks"}) || wh.(*rbacv1.Role).Namespace != namespace {
				t.Errorf("webhook-secret Role %+v in %s, want get on Secret hooks in %s", rules, wh.(*rbacv1.Role).Namespace, namespace)
			}
		}
	}
}

// TestRenderRefuses: values that cannot work fail `helm template` with a
// message that says what to change.
func TestRenderRefuses(t *testing.T) {
	tests := []struct {
		name, values, want string
	}{
		{
			name:   "filesystem with 2 replicas",
			values: "registry:\n  replicas: 2\n",
			want:   "registry.replicas=2 needs registry.storage.type=s3",
		},
		{
			name:   "s3 replicas without a shared http secret",
			values: "registry:\n  replicas: 2\n  storage:\n    type: s3\n    s3: {bucket: b, region: us-east-1}\n",
			want:   "registry.replicas=2 needs registry.httpSecret.existingSecret",
		},
		{
			name:   "s3 without a bucket",
			values: "registry:\n  storage:\n    type: s3\n    s3: {region: us-east-1}\n",
			want:   "registry.storage.s3.bucket is required",
		},
		{
			name:   "s3 without a region",
			values: "registry:\n  storage:\n    type: s3\n    s3: {bucket: b}\n",
			want:   "registry.storage.s3.region is required",
		},
		{
			name:   "unknown storage type",
			values: "registry:\n  storage:\n    type: gcs\n",
			want:   `registry.storage.type must be "filesystem" or "s3", got "gcs"`,
		},
		{
			name:   "unknown pull-secret scope",
			values: "pullSecrets:\n  scope: everywhere\n",
			want:   `at '/pullSecrets/scope': value must be one of 'namespace', 'cluster'`, // the schema refuses it before the template's own check
		},
		{
			name:   "controller replicas without leader election",
			values: "controller:\n  leaderElect: false\n",
			want:   "controller.replicas=2 needs controller.leaderElect=true",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := runHelm(t, renderArgs("--values", writeValues(t, tt.values))...)
			if err == nil {
				t.Fatalf("helm template accepted:\n%s", tt.values)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("helm template failed without saying %q:\n%v", tt.want, err)
			}
		})
	}
}

func TestLint(t *testing.T) {
	for name, values := range map[string]string{
		"defaults":         "",
		"s3":               s3Values,
		"node agent":       nodeAgentValues,
		"node agent off":   nodeAgentOffValues,
		"rwx":              rwxValues,
		"webhooks exposed": webhookExposeValues,
	} {
		t.Run(name, func(t *testing.T) {
			args := []string{"lint", "--strict", chartDir, "--namespace", namespace}
			if values != "" {
				args = append(args, "--values", writeValues(t, values))
			}
			out, err := runHelm(t, args...)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if !strings.Contains(out, "0 chart(s) failed") {
				t.Errorf("helm lint:\n%s", out)
			}
		})
	}
}

// plainManifestArgs are hack/render-manifests.sh's values for tagger.yaml:
// the registry token signing key is never rendered into a shared file.
var plainManifestArgs = []string{"--set", "registry.auth.existingSecret=tagger-registry-auth"}

// manifestHeader is what hack/render-manifests.sh writes before the render.
const manifestHeader = "# Generated by hack/render-manifests.sh from deploy/chart/tagger with default values. Do not edit.\n" +
	"# Apply deploy/manifests/namespace.yaml first: kubectl apply -f deploy/manifests/namespace.yaml -f deploy/manifests/tagger.yaml\n"

// cleanupHeader is what hack/render-manifests.sh writes before the hook render.
const cleanupHeader = "# Generated by hack/render-manifests.sh from deploy/chart/tagger with default values. Do not edit.\n" +
	"# Uninstall only, after kubectl delete -f deploy/manifests/tagger.yaml: restores every node's containerd hosts.toml (docs/install.md, \"Uninstall\").\n"

// TestManifestsCurrent fails when deploy/manifests/tagger.yaml or
// node-cleanup.yaml is not what the chart renders now.
func TestManifestsCurrent(t *testing.T) {
	t.Run("tagger.yaml", func(t *testing.T) { checkManifest(t, "tagger.yaml", manifestHeader, renderArgs(plainManifestArgs...)) })
	t.Run("node-cleanup.yaml", func(t *testing.T) { checkManifest(t, "node-cleanup.yaml", cleanupHeader, hookRenderArgs()) })
}

func checkManifest(t *testing.T, name, header string, args []string) {
	out, err := runHelm(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	want := header + out
	path := filepath.Join(repoRoot(t), "deploy", "manifests", name)
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v: run hack/render-manifests.sh", err)
	}
	if string(got) == want {
		return
	}
	gl, wl := strings.Split(string(got), "\n"), strings.Split(want, "\n")
	line := 0
	for line < len(gl) && line < len(wl) && gl[line] == wl[line] {
		line++
	}
	at := func(ls []string) string {
		if line < len(ls) {
			return ls[line]
		}
		return "<end of file>"
	}
	t.Errorf("deploy/manifests/%s is stale: run hack/render-manifests.sh and commit the result.\n"+
		"first difference at line %d:\n  file:   %q\n  render: %q", name, line+1, at(gl), at(wl))
}

// TestPlainManifests: the committed manifests decode, with the namespace
// they install into.
func TestPlainManifests(t *testing.T) {
	dir := filepath.Join(repoRoot(t), "deploy", "manifests")
	data, err := os.ReadFile(filepath.Join(dir, "namespace.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	ns, err := decodeAll(data)
	if err != nil {
		t.Fatalf("namespace.yaml: %v", err)
	}
	if got := ns.kinds(); !slices.Equal(got, []string{"Namespace/" + namespace}) {
		t.Errorf("namespace.yaml holds %v, want Namespace/%s", got, namespace)
	}
	data, err = os.ReadFile(filepath.Join(dir, "tagger.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := decodeAll(data)
	if err != nil {
		t.Fatalf("tagger.yaml: %v", err)
	}
	if _, ok := r.find("Namespace", namespace); ok {
		t.Error("tagger.yaml creates the namespace; it belongs in namespace.yaml")
	}
	for _, o := range r.objects {
		if !clusterScoped[o.kind] && o.ns != namespace {
			t.Errorf("tagger.yaml: %s in namespace %q, want %q", o, o.ns, namespace)
		}
	}
	if _, ok := r.find("DaemonSet", "tagger-node-cleanup"); ok {
		t.Error("tagger.yaml holds the uninstall hook: applying it would restore every node at once")
	}

	data, err = os.ReadFile(filepath.Join(dir, "node-cleanup.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	hooks, err := decodeAll(data)
	if err != nil {
		t.Fatalf("node-cleanup.yaml: %v", err)
	}
	if got, want := hooks.kinds(), slices.Sorted(maps.Keys(wantHookWeights)); !slices.Equal(got, want) {
		t.Errorf("node-cleanup.yaml holds %v, want %v", got, want)
	}
}

// TestChartCRDsCurrent: the chart ships the CRD controller-gen generated
// (templates/crds.yaml reads it from files/crds).
func TestChartCRDsCurrent(t *testing.T) {
	root := repoRoot(t)
	generated, err := filepath.Glob(filepath.Join(root, "deploy", "crds", "*.yaml"))
	if err != nil || len(generated) == 0 {
		t.Fatalf("no generated CRDs in deploy/crds (%v)", err)
	}
	for _, g := range generated {
		name := filepath.Base(g)
		want, err := os.ReadFile(g)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(root, chartDir, crdFiles, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s/files/crds/%s differs from deploy/crds/%s (%v): run `make generate`", chartDir, name, name, err)
		}
	}
}

// TestControllerAcceptsChartArgs runs the controller binary with the flags
// the chart passes: every flag must exist, or the pods would crash-loop on
// "flag provided but not defined". A missing kubeconfig stops it right after
// flag parsing.
func TestControllerAcceptsChartArgs(t *testing.T) {
	r := render(t, "controller:\n  plainHTTPRegistries: [\"registry.local:5000\", \"*.svc.cluster.local:5000\"]\n")
	d := get[*appsv1.Deployment](t, r, "Deployment", "tagger-controller")
	c := container(t, d.Spec.Template.Spec, "controller")
	if !slices.Contains(c.Args, "--plain-http-registries=registry.local:5000,*.svc.cluster.local:5000") {
		t.Errorf("controller args %q lack --plain-http-registries=a,b", c.Args)
	}

	dir := t.TempDir()
	bin := rig.Command(t, rig.Race, "controller")
	missing := filepath.Join(dir, "no-kubeconfig")
	cmd := exec.Command(bin, append(slices.Clone(c.Args), "--kubeconfig="+missing)...)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("controller ran without a kubeconfig:\n%s", out)
	}
	if strings.Contains(string(out), "flag provided but not defined") || !strings.Contains(string(out), "load kubeconfig") {
		t.Errorf("controller refused the chart's args %q:\n%s", c.Args, out)
	}
}
