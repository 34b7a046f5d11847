package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/internal/rig/inproc"
	"github.com/tagger-project/tagger/pkg/controller/registryauth"
	"github.com/tagger-project/tagger/pkg/httplimits"
	"github.com/tagger-project/tagger/pkg/registryclient"
)

// With -auth (the default) the bundled registry runs as the chart deploys
// it: distribution's token auth, tagger's issuer (pkg/controller/registryauth,
// RS256 tokens named by kid) as realm, the mirror authenticating with
// registryclient.TokenAuth. The issuer's TokenReview is replaced by a fixed
// answer (no apiserver here): the benchmark is about the requests, and a
// TokenReview happens once per token lifetime. Direct requests to the
// registry (the "distribution" baseline, wrk and the Go clients) carry a
// token minted with the same key, so both sides pay the registry's token check.

const (
	benchService = "tagger-registry"
	benchIssuer  = "tagger-controller"
	benchSAToken = "bench.service-account.token"
	benchAgent   = "system:serviceaccount:tagger-system:tagger-node-agent"
)

// benchAuthorization is the Authorization header of direct requests ("" without -auth).
var benchAuthorization string

func setBenchAuth(req *http.Request) {
	if benchAuthorization != "" {
		req.Header.Set("Authorization", benchAuthorization)
	}
}

func wrkAuthLine() string {
	if benchAuthorization == "" {
		return ""
	}
	return fmt.Sprintf("wrk.headers[\"Authorization\"] = %q\n", benchAuthorization)
}

type benchAuthState struct {
	keyFile, tokenFile string
	signer             *registryauth.Signer
	registry           string
}

type fixedReviewer struct{}

func (fixedReviewer) Review(_ context.Context, token, _ string) (string, error) {
	if token == benchSAToken {
		return benchAgent, nil
	}
	return "", nil
}

// benchAuth starts the issuer and returns the registry options; nil state without -auth.
func benchAuth(r *program, c *config) (rig.RegistryOptions, *benchAuthState, error) {
	if !c.auth {
		return rig.RegistryOptions{}, nil, nil
	}
	dir := r.TempDir()
	st := &benchAuthState{keyFile: filepath.Join(dir, "signing.key"), tokenFile: filepath.Join(dir, "token")}
	cert, err := inproc.WriteSigningKey(st.keyFile)
	if err != nil {
		return rig.RegistryOptions{}, nil, err
	}
	if err := os.WriteFile(st.tokenFile, []byte(benchSAToken), 0o600); err != nil {
		return rig.RegistryOptions{}, nil, err
	}
	keys, err := registryauth.NewKeyFile(st.keyFile)
	if err != nil {
		return rig.RegistryOptions{}, nil, err
	}
	if st.signer, err = keys.Signer(); err != nil {
		return rig.RegistryOptions{}, nil, err
	}
	log := logrus.New()
	log.SetLevel(logrus.WarnLevel)
	iss := &registryauth.Issuer{Keys: keys, Reviewer: fixedReviewer{}, Audience: registryauth.DefaultAudience,
		Service: benchService, Name: benchIssuer, Pullers: []string{benchAgent}, Log: log}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return rig.RegistryOptions{}, nil, err
	}
	srv := &http.Server{Handler: iss, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	r.Cleanup(func() { _ = srv.Close() })
	logf("registry token auth on: issuer %s", ln.Addr())
	return rig.RegistryOptions{Auth: rig.AuthToken, External: &rig.ExternalToken{
		Realm: "http://" + ln.Addr().String() + registryauth.TokenPath, Service: benchService, Issuer: benchIssuer, RootCerts: cert,
	}}, st, nil
}

// start mints the direct requests' token (pull on repo, valid an hour).
func (st *benchAuthState) start(registry, repo string) error {
	if st == nil {
		return nil
	}
	st.registry = registry
	now := time.Now()
	tok, err := st.signer.Sign(map[string]any{
		"iss": benchIssuer, "aud": benchService, "sub": "bench", "exp": now.Add(time.Hour).Unix(),
		"nbf": now.Add(-time.Minute).Unix(), "iat": now.Unix(),
		"access": []map[string]any{{"type": "repository", "name": repo, "actions": []string{"pull"}}},
	})
	if err != nil {
		return err
	}
	benchAuthorization = "Bearer " + tok
	return nil
}

// client is the node agent's client for the bundled registry (nil without -auth).
func (st *benchAuthState) client() *http.Client {
	if st == nil {
		return nil
	}
	hc := httplimits.InCluster.HTTPClient()
	ta, err := registryclient.NewTokenAuth(st.registry, hc.Transport, registryclient.ServiceAccountToken(st.tokenFile), "tagger-node-agent")
	if err != nil {
		panic(err) // the registry URL comes from the rig
	}
	hc.Transport = ta
	return hc
}
