package install

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tagger-project/tagger/internal/rig"
)

// registryAuth is what the chart gives the pods for the bundled registry's
// token auth, moved off the pod: the chart-generated signing key and trusted
// certificate (from the Secret helm created), the ServiceAccounts' projected
// tokens (audience tagger-registry, as the chart projects them) and a
// loopback address for the controller's issuer.
type registryAuth struct {
	keyFile, controllerToken, agentToken string
	trusted                              []byte
	issuerAddr                           string
}

func bundledAuth(t *testing.T, ctx context.Context, c client.Client, cs kubernetes.Interface, dir string) registryAuth {
	t.Helper()
	var sec corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: release + "-registry-auth"}, &sec); err != nil {
		t.Fatalf("the chart's registry signing Secret: %v", err)
	}
	a := registryAuth{keyFile: filepath.Join(dir, "registry-auth.key"), trusted: sec.Data["trusted.crt"], issuerAddr: rig.FreeAddr(t)}
	if len(sec.Data["tls.key"]) == 0 || len(a.trusted) == 0 {
		t.Fatalf("the chart's registry signing Secret lacks tls.key or trusted.crt: keys %v", keysOf(sec.Data))
	}
	if err := os.WriteFile(a.keyFile, sec.Data["tls.key"], 0o600); err != nil {
		t.Fatal(err)
	}
	for sa, file := range map[string]*string{release + "-controller": &a.controllerToken, release + "-node-agent": &a.agentToken} {
		exp := int64(3600)
		tr, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{Audiences: []string{"tagger-registry"}, ExpirationSeconds: &exp},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("registry token for ServiceAccount %s: %v", sa, err)
		}
		*file = filepath.Join(dir, sa+".registry-token")
		if err := os.WriteFile(*file, []byte(tr.Status.Token), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return a
}

// pullToken asks the controller's issuer for a pull token on repo, as the
// controller's ServiceAccount.
func (a registryAuth) pullToken(t *testing.T, repo string) string {
	t.Helper()
	sa, err := os.ReadFile(a.controllerToken)
	if err != nil {
		t.Fatal(err)
	}
	q := url.Values{"service": {"tagger-registry"}, "scope": {"repository:" + repo + ":pull"}}
	req, _ := http.NewRequest(http.MethodGet, "http://"+a.issuerAddr+"/token?"+q.Encode(), nil)
	req.SetBasicAuth("serviceaccount", string(sa))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("registry token from the controller's issuer: %v", err)
	}
	defer resp.Body.Close()
	var body struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK || body.Token == "" {
		t.Fatalf("registry token from the controller's issuer: %d %v", resp.StatusCode, err)
	}
	return body.Token
}

func keysOf(m map[string][]byte) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
