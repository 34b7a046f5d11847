package inproc

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/pkg/controller"
	"github.com/tagger-project/tagger/pkg/controller/registryauth"
	"github.com/tagger-project/tagger/pkg/node"
)

// The identities of a bundled registry with authentication, as the chart
// names them: the controller's and the node agent's ServiceAccounts.
const (
	AuthNamespace  = "tagger-system"
	ControllerSA   = "tagger-controller"
	NodeAgentSA    = "tagger-node-agent"
	authService    = "tagger-registry"
	authIssuerName = "tagger-controller"
)

// AuthRegistry is a bundled registry with tagger's token authentication, as
// the chart deploys it: distribution's token auth whose realm is the
// controller's issuer (pkg/controller/registryauth) on IssuerAddr, trusting
// the signing key in KeyFile; ServiceAccount tokens bound to the registry
// audience for the controller and the node agent in ControllerToken and
// AgentToken (files, as the kubelet projects them).
type AuthRegistry struct {
	*rig.Registry
	Kube *rig.Kube
	// KeyFile is the issuer's PEM signing key; CertPEM its certificate, the
	// registry's rootcertbundle.
	KeyFile string
	CertPEM []byte
	// IssuerAddr is where the issuer must listen ("127.0.0.1:port").
	IssuerAddr string
	// ControllerToken and AgentToken are token files for the two identities.
	ControllerToken, AgentToken string
}

// NewAuthRegistry starts a registry with token authentication against k's
// apiserver; the issuer itself runs in the controller (Controller sets its
// options) or, for focused tests, wherever the test starts it on IssuerAddr.
func NewAuthRegistry(t testing.TB, k *rig.Kube, o rig.RegistryOptions) *AuthRegistry {
	t.Helper()
	dir := t.TempDir()
	a := &AuthRegistry{Kube: k, KeyFile: filepath.Join(dir, "signing.key")}
	var err error
	if a.CertPEM, err = WriteSigningKey(a.KeyFile); err != nil {
		t.Fatalf("registry auth: %v", err)
	}
	ports, err := rig.FreePorts(1)
	if err != nil {
		t.Fatalf("registry auth: %v", err)
	}
	a.IssuerAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	for name, file := range map[string]*string{ControllerSA: &a.ControllerToken, NodeAgentSA: &a.AgentToken} {
		tok := ServiceAccountToken(t, k, AuthNamespace, name, registryauth.DefaultAudience)
		*file = filepath.Join(dir, name+".token")
		if err := os.WriteFile(*file, []byte(tok), 0o600); err != nil {
			t.Fatalf("registry auth: %v", err)
		}
	}
	o.Auth = rig.AuthToken
	o.External = &rig.ExternalToken{
		Realm: "http://" + a.IssuerAddr + registryauth.TokenPath, Service: authService, Issuer: authIssuerName, RootCerts: a.CertPEM,
	}
	a.Registry = rig.NewRegistry(t, o)
	return a
}

// IssuerOptions are the controller's issuer options for this registry.
func (a *AuthRegistry) IssuerOptions() registryauth.Options {
	return registryauth.Options{
		Addr: a.IssuerAddr, KeyFile: a.KeyFile, Audience: registryauth.DefaultAudience,
		Service: authService, Issuer: authIssuerName, TTL: registryauth.DefaultTTL,
		Pushers: []string{ServiceAccountUser(AuthNamespace, ControllerSA)},
		Pullers: []string{ServiceAccountUser(AuthNamespace, NodeAgentSA)},
	}
}

// Controller points o at this registry, authenticating as the controller
// and serving the issuer.
func (a *AuthRegistry) Controller(o *controller.Options) {
	o.RegistryURL = a.URL()
	o.RegistryTokenFile = a.ControllerToken
	o.RegistryAuth = a.IssuerOptions()
}

// Agent points o at this registry, authenticating as the node agent.
func (a *AuthRegistry) Agent(o *node.Options) {
	o.RegistryURL = a.URL()
	o.RegistryTokenFile = a.AgentToken
}

// ServiceAccountUser is the user name of a ServiceAccount's tokens.
func ServiceAccountUser(namespace, name string) string {
	return "system:serviceaccount:" + namespace + ":" + name
}

// ServiceAccountToken creates namespace and ServiceAccount name if missing
// and returns a token for it bound to audience, valid for an hour.
func ServiceAccountToken(t rig.T, k *rig.Kube, namespace, name, audience string) string {
	t.Helper()
	cs, err := kubernetes.NewForConfig(k.Config)
	if err != nil {
		t.Fatalf("kube client: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create namespace %s: %v", namespace, err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}}
	if _, err := cs.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create service account %s/%s: %v", namespace, name, err)
	}
	exp := int64(3600)
	tr, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: &exp},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for %s/%s: %v", namespace, name, err)
	}
	return tr.Status.Token
}

// WriteSigningKey writes a new RSA key to path and returns its self-signed
// certificate (PEM), as the chart's genCA makes them.
func WriteSigningKey(path string) ([]byte, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generate signing key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{CommonName: "tagger registry token signer"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create signing certificate: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	if err := os.WriteFile(path, keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("write signing key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}
