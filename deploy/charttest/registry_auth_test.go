package charttest

import (
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/pkg/controller/registryauth"
)

// authOff, appended to values with a registry block, turns the registry's
// authentication off, for tests about storage that push anonymously.
const authOff = "  auth:\n    enabled: false\n"

// TestRegistryAuth runs the real registry with the default render's
// configuration and the chart-generated signing Secret: every request
// without a token is refused with the controller's realm, a token signed
// with the Secret's key (as the controller signs) is accepted, and the
// readiness probe's path answers 200 without a token.
func TestRegistryAuth(t *testing.T) {
	bin := rig.RequireBins(t, "registry")
	r := render(t, "")
	sec := get[*corev1.Secret](t, r, "Secret", "tagger-registry-auth")
	signer, err := registryauth.ParseSigner(sec.Data["tls.key"])
	if err != nil {
		t.Fatalf("chart-generated tls.key: %v", err)
	}
	block, _ := pem.Decode(sec.Data["trusted.crt"])
	if block == nil {
		t.Fatal("chart-generated trusted.crt: no PEM")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if registryauth.Thumbprint(cert.PublicKey) != signer.KeyID() {
		t.Fatal("trusted.crt is not tls.key's certificate")
	}

	dir := t.TempDir()
	bundle := filepath.Join(dir, "trusted.crt")
	if err := os.WriteFile(bundle, sec.Data["trusted.crt"], 0o600); err != nil {
		t.Fatal(err)
	}
	addr := rig.FreeAddr(t)
	cfg := writeRegistryConfig(t, r, dir, func(cfg map[string]any) {
		setPath(t, cfg, filepath.Join(dir, "data"), "storage", "filesystem", "rootdirectory")
		setPath(t, cfg, addr, "http", "addr")
		setPath(t, cfg, bundle, "auth", "token", "rootcertbundle")
	})
	reg := get[*appsv1.Deployment](t, r, "Deployment", "tagger-registry")
	c := container(t, reg.Spec.Template.Spec, "registry")
	p := c.ReadinessProbe
	if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/" || p.HTTPGet.Port.String() != "http" {
		t.Fatalf("registry readiness probe %+v: want an httpGet of / on the http port", p)
	}
	// serve waits for the kubelet's probe: no token, 200 while the storage is healthy.
	serve(t, c, bin, cfg, dir, addr)

	// No token: 401 for a pull, with the controller's Service as realm.
	resp := get2(t, "http://"+addr+"/v2/team/app/tags/list", "")
	want := `realm="http://tagger-controller-registry-auth.tagger-system.svc:8082/token",service="tagger-registry"`
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), want) {
		t.Fatalf("pull without a token: %d %q, want 401 with %s", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), want)
	}
	// A token signed with the Secret's key: the registry accepts it (404:
	// no such repository, past authentication).
	now := time.Now()
	tok, err := signer.Sign(map[string]any{
		"iss": "tagger-controller", "aud": "tagger-registry", "sub": "test",
		"exp": now.Add(time.Minute).Unix(), "nbf": now.Unix(), "iat": now.Unix(),
		"access": []map[string]any{{"type": "repository", "name": "team/app", "actions": []string{"pull"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if resp := get2(t, "http://"+addr+"/v2/team/app/tags/list", tok); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("pull with a token of the chart's key: %d, want 404 (authenticated, no repository)", resp.StatusCode)
	}
}

func get2(t *testing.T, u, bearer string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// TestRegistryNetworkPolicy: enabled, the registry admits only the
// controller pods and the node addresses on its port (plus extra peers);
// enabled without node CIDRs, the render refuses (the agents would be cut off).
func TestRegistryNetworkPolicy(t *testing.T) {
	r := render(t, `
registry:
  networkPolicy:
    enabled: true
    nodeCIDRs: [10.0.0.0/24]
    extraFrom:
      - namespaceSelector:
          matchLabels:
            kubernetes.io/metadata.name: monitoring
`)
	np := get[*networkingv1.NetworkPolicy](t, r, "NetworkPolicy", "tagger-registry")
	if got := np.Spec.PodSelector.MatchLabels["app.kubernetes.io/component"]; got != "registry" {
		t.Errorf("NetworkPolicy selects %v, want the registry pods", np.Spec.PodSelector.MatchLabels)
	}
	if len(np.Spec.Ingress) != 2 {
		t.Fatalf("ingress rules %+v, want the tagger one and the extra one", np.Spec.Ingress)
	}
	rule := np.Spec.Ingress[0]
	if len(rule.Ports) != 1 || rule.Ports[0].Port.IntValue() != 5000 || len(rule.From) != 2 {
		t.Fatalf("tagger ingress rule %+v: want port 5000 from the controller pods and the nodes", rule)
	}
	if rule.From[0].PodSelector == nil || rule.From[0].PodSelector.MatchLabels["app.kubernetes.io/component"] != "controller" {
		t.Errorf("first peer %+v, want the controller pods", rule.From[0])
	}
	if rule.From[1].IPBlock == nil || rule.From[1].IPBlock.CIDR != "10.0.0.0/24" {
		t.Errorf("second peer %+v, want the node CIDR", rule.From[1])
	}
	if _, err := runHelm(t, renderArgs("--values", writeValues(t, "registry:\n  networkPolicy:\n    enabled: true\n"))...); err == nil ||
		!strings.Contains(err.Error(), "nodeCIDRs") {
		t.Errorf("NetworkPolicy without node CIDRs: %v, want a refusal naming nodeCIDRs", err)
	}
}
