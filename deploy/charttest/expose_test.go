package charttest

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

const webhooksName = "tagger-controller-webhooks"

// The webhook receivers exposed through an Ingress and an HTTPRoute at once
// (both are optional and independent).
const webhookExposeValues = `
webhooks:
  enabled: true
  ingress:
    enabled: true
    className: nginx
    annotations: {cert-manager.io/cluster-issuer: letsencrypt}
    hosts: [hooks.example.com]
    tls: [{secretName: hooks-tls, hosts: [hooks.example.com]}]
  httpRoute:
    enabled: true
    parentRefs: [{name: public, namespace: gateways, sectionName: https}]
    hostnames: [hooks.example.com]
`

func TestRenderWebhookExposure(t *testing.T) {
	r := render(t, webhookExposeValues)
	checkCommon(t, r)
	checkWebhooks(t, r)

	ing := get[*networkingv1.Ingress](t, r, "Ingress", webhooksName)
	if ing.Spec.IngressClassName == nil || *ing.Spec.IngressClassName != "nginx" ||
		ing.Annotations["cert-manager.io/cluster-issuer"] != "letsencrypt" {
		t.Errorf("Ingress class %v annotations %v", ing.Spec.IngressClassName, ing.Annotations)
	}
	if len(ing.Spec.TLS) != 1 || ing.Spec.TLS[0].SecretName != "hooks-tls" {
		t.Errorf("Ingress TLS %+v", ing.Spec.TLS)
	}
	if len(ing.Spec.Rules) != 1 || ing.Spec.Rules[0].Host != "hooks.example.com" {
		t.Fatalf("Ingress rules %+v, want one for hooks.example.com", ing.Spec.Rules)
	}
	checkIngressPaths(t, ing.Spec.Rules[0])

	route := get[*unstructured.Unstructured](t, r, "HTTPRoute", webhooksName)
	if route.GetAPIVersion() != "gateway.networking.k8s.io/v1" || route.GetNamespace() != namespace {
		t.Errorf("HTTPRoute %s in %q", route.GetAPIVersion(), route.GetNamespace())
	}
	parents, _, _ := unstructured.NestedSlice(route.Object, "spec", "parentRefs")
	hosts, _, _ := unstructured.NestedStringSlice(route.Object, "spec", "hostnames")
	if len(parents) != 1 || parents[0].(map[string]any)["name"] != "public" || len(hosts) != 1 || hosts[0] != "hooks.example.com" {
		t.Errorf("HTTPRoute parentRefs %v hostnames %v", parents, hosts)
	}
	rules, _, _ := unstructured.NestedSlice(route.Object, "spec", "rules")
	if len(rules) != 1 {
		t.Fatalf("HTTPRoute rules %v, want one", rules)
	}
	rule := rules[0].(map[string]any)
	matches, _, _ := unstructured.NestedSlice(rule, "matches")
	backends, _, _ := unstructured.NestedSlice(rule, "backendRefs")
	if len(matches) != 1 || len(backends) != 1 {
		t.Fatalf("HTTPRoute rule %v: want one match and one backend", rule)
	}
	typ, _, _ := unstructured.NestedString(matches[0].(map[string]any), "path", "type")
	val, _, _ := unstructured.NestedString(matches[0].(map[string]any), "path", "value")
	be := backends[0].(map[string]any)
	if typ != "PathPrefix" || val != "/hooks" || be["name"] != webhooksName || be["port"] != int64(8080) {
		t.Errorf("HTTPRoute routes %s %s to %v, want PathPrefix /hooks to %s:8080", typ, val, be, webhooksName)
	}
}

// checkIngressPaths: only /hooks, to the webhooks Service's port.
func checkIngressPaths(t *testing.T, rule networkingv1.IngressRule) {
	t.Helper()
	if rule.HTTP == nil || len(rule.HTTP.Paths) != 1 {
		t.Fatalf("Ingress rule %+v: want one path", rule)
	}
	p := rule.HTTP.Paths[0]
	if p.Path != "/hooks" || p.PathType == nil || *p.PathType != networkingv1.PathTypePrefix ||
		p.Backend.Service == nil || p.Backend.Service.Name != webhooksName || p.Backend.Service.Port.Name != "webhooks" {
		t.Errorf("Ingress path %+v, want Prefix /hooks to %s port webhooks", p, webhooksName)
	}
}

func TestRenderWebhookExposureDefaults(t *testing.T) {
	r := render(t, "webhooks:\n  enabled: true\n  ingress:\n    enabled: true\n")
	ing := get[*networkingv1.Ingress](t, r, "Ingress", webhooksName)
	if ing.Spec.IngressClassName != nil || len(ing.Spec.TLS) != 0 || len(ing.Spec.Rules) != 1 || ing.Spec.Rules[0].Host != "" {
		t.Errorf("Ingress without class, TLS or hosts: %+v", ing.Spec)
	}
	checkIngressPaths(t, ing.Spec.Rules[0])
	for _, kind := range []string{"Ingress", "HTTPRoute"} {
		if _, ok := render(t, "webhooks:\n  enabled: true\n").find(kind, webhooksName); ok {
			t.Errorf("%s rendered by default", kind)
		}
	}
}

func TestRenderExposureRefuses(t *testing.T) {
	for name, tt := range map[string]struct{ values, want string }{
		"ingress without webhooks": {"webhooks:\n  ingress:\n    enabled: true\n", "webhooks.ingress.enabled needs webhooks.enabled=true"},
		"route without webhooks": {"webhooks:\n  httpRoute:\n    enabled: true\n    parentRefs: [{name: gw}]\n",
			"webhooks.httpRoute.enabled needs webhooks.enabled=true"},
		"route without parents":        {"webhooks:\n  enabled: true\n  httpRoute:\n    enabled: true\n", "needs webhooks.httpRoute.parentRefs"},
		"agent metrics without a port": {"nodeAgent:\n  metricsAddr: \"9091\"\n", `nodeAgent.metricsAddr="9091" has no port`},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := runHelm(t, renderArgs("--values", writeValues(t, tt.values))...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("helm template with\n%s\nanswered %v, want %q", tt.values, err, tt.want)
			}
		})
	}
}

const agentMetricsName = "tagger-node-agent-metrics"

func TestRenderNodeAgentMetricsService(t *testing.T) {
	svc := get[*corev1.Service](t, render(t, ""), "Service", agentMetricsName)
	if svc.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("node agent metrics Service clusterIP %q, want None (one endpoint per node)", svc.Spec.ClusterIP)
	}
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != "metrics" || svc.Spec.Ports[0].Port != 9091 || svc.Spec.Ports[0].TargetPort.IntValue() != 9091 {
		t.Errorf("node agent metrics Service ports %+v, want metrics 9091 -> 9091", svc.Spec.Ports)
	}
	if svc.Spec.Selector["app.kubernetes.io/component"] != "node-agent" {
		t.Errorf("node agent metrics Service selects %v", svc.Spec.Selector)
	}

	svc = get[*corev1.Service](t, render(t, "nodeAgent:\n  metricsAddr: \"10.0.0.1:19091\"\n  metrics:\n    service:\n      annotations: {a: b}\n"),
		"Service", agentMetricsName)
	if svc.Spec.Ports[0].Port != 19091 || svc.Annotations["a"] != "b" {
		t.Errorf("metricsAddr 10.0.0.1:19091: Service ports %+v annotations %v", svc.Spec.Ports, svc.Annotations)
	}
	for _, values := range []string{
		"nodeAgent:\n  metricsAddr: \"0\"\n",
		"nodeAgent:\n  metricsAddr: 127.0.0.1:9091\n",
		"nodeAgent:\n  metricsAddr: \"[::1]:9091\"\n",
		"nodeAgent:\n  metrics:\n    service:\n      enabled: false\n",
		"nodeAgent:\n  enabled: false\n",
	} {
		if _, ok := render(t, values).find("Service", agentMetricsName); ok {
			t.Errorf("node agent metrics Service rendered with\n%s", values)
		}
	}
}
