package registryauth_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sirupsen/logrus"
	"k8s.io/client-go/kubernetes"

	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/internal/rig/inproc"
	"github.com/tagger-project/tagger/pkg/controller/imagecopy"
	"github.com/tagger-project/tagger/pkg/controller/registryauth"
	"github.com/tagger-project/tagger/pkg/pins"
	"github.com/tagger-project/tagger/pkg/registryclient"
)

// env is a real apiserver, a real distribution registry with token auth and
// tagger's issuer in front of it, counting token requests.
type env struct {
	k       *rig.Kube
	reg     *inproc.AuthRegistry
	issued  atomic.Int64
	seed    rig.Image
	seedRep string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	rig.RequireBins(t, "kube-apiserver", "etcd", "registry")
	e := &env{k: rig.NewKube(t)}
	e.reg = inproc.NewAuthRegistry(t, e.k, rig.RegistryOptions{})
	o := e.reg.IssuerOptions()
	keys, err := registryauth.NewKeyFile(o.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(e.k.Config)
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(testWriter{t})
	iss := &registryauth.Issuer{Keys: keys, Reviewer: registryauth.TokenReviewer{Client: cs}, Audience: o.Audience,
		Service: o.Service, Name: o.Issuer, Pushers: o.Pushers, Pullers: o.Pullers, TTL: o.TTL, Log: log}
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.issued.Add(1)
		iss.ServeHTTP(w, r)
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	e.seedRep = "seed/app"
	e.seed = e.reg.PushImage(t, e.seedRep, "v1", rig.ImageOptions{})
	return e
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// token asks the issuer for scope with saToken as the Basic password; it
// returns the status and the registry token (if any).
func (e *env) token(t *testing.T, saToken string, scopes ...string) (int, string) {
	t.Helper()
	q := url.Values{"service": {"tagger-registry"}, "scope": scopes}
	req, _ := http.NewRequest(http.MethodGet, "http://"+e.reg.IssuerAddr+registryauth.TokenPath+"?"+q.Encode(), nil)
	if saToken != "" {
		req.SetBasicAuth(registryclient.ServiceAccountUser, saToken)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Token string }
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body.Token
}

// call sends method to the registry path with a Bearer token (none when
// "") and returns the status.
func (e *env) call(t *testing.T, method, path, bearer string, body []byte) int {
	t.Helper()
	req, _ := http.NewRequest(method, e.reg.URL()+path, bytes.NewReader(body))
	if body == nil {
		req.Body = http.NoBody
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	req.Header.Set("Accept", registryclient.ManifestAccept)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized && !strings.Contains(resp.Header.Get("WWW-Authenticate"), `realm="http://`+e.reg.IssuerAddr) {
		t.Errorf("%s %s: 401 without the issuer's Bearer challenge: %q", method, path, resp.Header.Get("WWW-Authenticate"))
	}
	return resp.StatusCode
}

// attempts are the requests an intruder would make: pull, push, delete, catalog.
func (e *env) attempts() map[string][2]string {
	m := "/v2/" + e.seedRep + "/manifests/" + e.seed.Digest.String()
	return map[string][2]string{
		"pull manifest":   {http.MethodGet, m},
		"pull blob":       {http.MethodGet, "/v2/" + e.seedRep + "/blobs/" + e.seed.Layers[0].Digest.String()},
		"push blob":       {http.MethodPost, "/v2/" + e.seedRep + "/blobs/uploads/"},
		"push to new":     {http.MethodPost, "/v2/evil/blobs/uploads/"},
		"delete manifest": {http.MethodDelete, m},
		"catalog":         {http.MethodGet, "/v2/_catalog"},
	}
}

func (e *env) tokenFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestAccessMatrix is issue #12's matrix against the real registry and the
// real apiserver: nobody without a token, the node agent only pulls, other
// identities, wrong-audience and expired tokens get nothing.
func TestAccessMatrix(t *testing.T) {
	e := newEnv(t)
	all := []string{"repository:" + e.seedRep + ":pull,push,delete", "repository:evil:pull,push", "registry:catalog:*"}

	t.Run("no credentials", func(t *testing.T) {
		for name, a := range e.attempts() {
			if got := e.call(t, a[0], a[1], "", nil); got != http.StatusUnauthorized {
				t.Errorf("%s without a token: %d, want 401", name, got)
			}
		}
		if st, _ := e.token(t, "", all...); st != http.StatusUnauthorized {
			t.Errorf("token without credentials: %d, want 401", st)
		}
	})

	t.Run("node agent pulls only", func(t *testing.T) {
		st, tok := e.token(t, e.tokenFile(t, e.reg.AgentToken), all...)
		if st != http.StatusOK {
			t.Fatalf("agent token: %d", st)
		}
		for name, a := range e.attempts() {
			got := e.call(t, a[0], a[1], tok, nil)
			switch {
			case strings.HasPrefix(name, "pull") && got != http.StatusOK:
				t.Errorf("agent %s: %d, want 200", name, got)
			case !strings.HasPrefix(name, "pull") && got != http.StatusUnauthorized && got != http.StatusForbidden:
				t.Errorf("agent %s: %d, want 401 or 403", name, got)
			}
		}
	})

	refused := map[string]string{
		"other service account": inproc.ServiceAccountToken(t, e.k, "default", "intruder", registryauth.DefaultAudience),
		"controller token for another audience": inproc.ServiceAccountToken(t, e.k, inproc.AuthNamespace, inproc.ControllerSA,
			"https://kubernetes.default.svc"),
		"expired controller token": resigned(t, e.k, e.tokenFile(t, e.reg.ControllerToken), -2*time.Hour),
		"not a token":              "a.b.c",
	}
	// The control case: the same forgery, not expired, is accepted, so the
	// expired one is refused for its expiry and not its signature.
	if st, _ := e.token(t, resigned(t, e.k, e.tokenFile(t, e.reg.ControllerToken), -time.Minute), all...); st != http.StatusOK {
		t.Fatalf("re-signed unexpired controller token: %d, want 200", st)
	}
	for name, sa := range refused {
		t.Run(name, func(t *testing.T) {
			if st, tok := e.token(t, sa, all...); st != http.StatusUnauthorized || tok != "" {
				t.Errorf("token: %d (token %t), want 401 and none", st, tok != "")
			}
		})
	}

	t.Run("controller copies and prunes", func(t *testing.T) { controllerCopyPrune(t, e) })
}

// controllerCopyPrune runs the real copier and prune, authenticating as the
// controller, and checks tokens are cached, not fetched per request.
func controllerCopyPrune(t *testing.T, e *env) {
	up := rig.NewRegistry(t, rig.RegistryOptions{})
	img := up.PushImage(t, "team/app", "v1", rig.ImageOptions{Layers: 3})
	hc, err := authClient(e.reg.URL(), e.reg.ControllerToken)
	if err != nil {
		t.Fatal(err)
	}
	plain := func(string) bool { return true }
	c := &imagecopy.Copier{Upstream: registryclient.New(registryclient.Options{PlainHTTP: plain}), Registry: e.reg.URL(), HTTPClient: hc}
	ref, err := pins.ParseReference(up.Host() + "/team/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	before := e.issued.Load()
	if _, err := c.Copy(ctx, ref, img.Digest, registryclient.Credentials{}, "v1"); err != nil {
		t.Fatalf("copy with the controller's token: %v", err)
	}
	// Copy again (all present) and once more: no new token for the same scopes.
	afterFirst := e.issued.Load()
	for range 2 {
		if _, err := c.Copy(ctx, ref, img.Digest, registryclient.Credentials{}, "v1"); err != nil {
			t.Fatalf("second copy: %v", err)
		}
	}
	if n := e.issued.Load() - afterFirst; n > 0 {
		t.Errorf("copies of content already there fetched %d more tokens: tokens are not cached", n)
	}
	t.Logf("first copy fetched %d tokens", afterFirst-before)
	res, err := c.Prune(ctx, ref.CacheRepository(), []digest.Digest{img.Digest}, imagecopy.Keep())
	if err != nil {
		t.Fatalf("prune with the controller's token: %v", err)
	}
	if len(res.Deleted) == 0 {
		t.Fatal("prune deleted nothing")
	}
	if st := e.call(t, http.MethodGet, "/v2/"+ref.CacheRepository()+"/manifests/"+img.Digest.String(), e.reg.AdminToken(t, ref.CacheRepository()), nil); st != http.StatusNotFound {
		t.Errorf("pruned manifest: GET %d, want 404", st)
	}
}

// TestAgentReadsThroughTokenAuth reads a pinned manifest and blob as the
// node's mirror does (Endpoint with the agent's TokenAuth), many times, with
// one token fetch.
func TestAgentReadsThroughTokenAuth(t *testing.T) {
	e := newEnv(t)
	hc, err := authClient(e.reg.URL(), e.reg.AgentToken)
	if err != nil {
		t.Fatal(err)
	}
	ep, err := registryclient.NewEndpoint(e.reg.URL(), hc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	before := e.issued.Load()
	for range 50 {
		if _, _, err := ep.FetchManifest(ctx, e.seedRep, e.seed.Digest); err != nil {
			t.Fatalf("agent pull: %v", err)
		}
	}
	if n := e.issued.Load() - before; n != 1 {
		t.Errorf("50 pulls fetched %d tokens, want 1", n)
	}
	// The agent's client cannot push, whatever it asks.
	err = ep.PushBlob(ctx, e.seedRep, ocispec.Descriptor{Digest: digest.FromString("x"), Size: 1}, strings.NewReader("x"))
	if !registryclient.IsUnauthorized(err) {
		t.Errorf("agent push: %v, want 401 or 403", err)
	}
	if _, err := ep.DeleteManifest(ctx, e.seedRep, e.seed.Digest); !registryclient.IsUnauthorized(err) {
		t.Errorf("agent delete: %v, want 401 or 403", err)
	}
}

func authClient(registry, tokenFile string) (*http.Client, error) {
	ta, err := registryclient.NewTokenAuth(registry, nil, registryclient.ServiceAccountToken(tokenFile), "test")
	if err != nil {
		return nil, err
	}
	return &http.Client{Transport: ta, Timeout: 30 * time.Second}, nil
}

// resigned re-signs a real token of the apiserver with its own key, issued
// at now+shift and valid 10 minutes: with shift -2h it has expired, which
// TokenRequest would never issue.
func resigned(t *testing.T, k *rig.Kube, tok string, shift time.Duration) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(shift).Unix()
	claims["iat"], claims["nbf"], claims["exp"] = past, past, past+600
	if kc, ok := claims["kubernetes.io"].(map[string]any); ok {
		kc["warnafter"] = past + 300
	}
	b, _ := json.Marshal(claims)
	input := parts[0] + "." + base64.RawURLEncoding.EncodeToString(b)
	pemBytes, err := os.ReadFile(k.ServiceAccountSigningKey())
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(pemBytes)
	var key any
	if key, err = x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
		if key, err = x509.ParseECPrivateKey(block.Bytes); err != nil {
			if key, err = x509.ParsePKCS1PrivateKey(block.Bytes); err != nil {
				t.Fatalf("apiserver signing key: %v", err)
			}
		}
	}
	sum := sha256.Sum256([]byte(input))
	var sig []byte
	switch k := key.(type) {
	case *rsa.PrivateKey:
		sig, err = rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, sum[:])
	case *ecdsa.PrivateKey:
		var r, s *big.Int
		r, s, err = ecdsa.Sign(rand.Reader, k, sum[:])
		n := (k.Curve.Params().BitSize + 7) / 8
		sig = make([]byte, 2*n)
		if err == nil {
			r.FillBytes(sig[:n])
			s.FillBytes(sig[n:])
		}
	default:
		t.Fatalf("apiserver signing key: %T", key)
	}
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}
