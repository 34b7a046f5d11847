// The registry: NewRegistry runs the real distribution registry (v3, the
// binary hack/testbin.sh builds) as a separate process for tests, with optional
// htpasswd or token authentication, and pushes generated images into it over
// the registry HTTP API. It also offers a counting reverse proxy so tests can
// assert how many requests of each kind a client made.

package rig

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Auth selects how the registry authenticates clients.
type Auth string

const (
	// AuthNone lets anyone pull and push.
	AuthNone Auth = ""
	// AuthBasic is distribution's htpasswd access controller: HTTP Basic
	// credentials checked against RegistryOptions.Users.
	AuthBasic Auth = "htpasswd"
	// AuthToken is distribution's token access controller, backed by an
	// in-test token server that checks RegistryOptions.Users and issues signed JWTs.
	AuthToken Auth = "token"
)

// RegistryOptions configure a Registry. The zero value is an unauthenticated registry.
type RegistryOptions struct {
	// Host is the address the registry listens on. Default 127.0.0.1; a
	// multi-node cluster's nodes live in network namespaces of their own
	// and reach the machine only on the cluster bridge's address
	// (cluster.Cluster.HostIP), so registries they pull from listen there.
	Host string
	// Auth selects the access controller.
	Auth Auth
	// Users maps user names to passwords for AuthBasic and AuthToken.
	Users map[string]string
	// AnonymousPull makes the token server grant pull (only) to requests
	// without credentials. Without it an anonymous request gets a token with
	// no access, as Docker Hub does for private repositories.
	AnonymousPull bool
	// TokenTTL is the lifetime of issued tokens (expires_in); default 5m.
	TokenTTL time.Duration
	// External, with AuthToken, sends clients to another token issuer (tagger's
	// own, pkg/controller/registryauth) instead of the rig's token server:
	// the registry's realm, service and issuer are External's and it trusts
	// External.RootCerts. The push helpers keep working: the registry also
	// trusts the rig's own signing key, with which they mint their tokens.
	External *ExternalToken
	// S3 stores content in an S3-compatible bucket through distribution's s3
	// driver instead of the registry's temp dir, so several registries can
	// share one store (see internal/rig). Nil: filesystem storage.
	S3 *S3Storage
}

// ExternalToken is a token issuer the registry trusts besides the rig's.
type ExternalToken struct {
	Realm, Service, Issuer string
	// RootCerts is a PEM bundle of the issuer's certificates (its keys).
	RootCerts []byte
}

// S3Storage is the s3 driver configuration of a registry: path-style, plain
// HTTP, signature v4, with blob redirects disabled so clients only ever talk
// to the registry (as the chart configures it).
type S3Storage struct {
	// Endpoint is the store's base URL, "http://127.0.0.1:port" (regionendpoint).
	Endpoint string
	Bucket   string
	// Region is any value for a non-AWS store; default us-east-1.
	Region    string
	AccessKey string
	SecretKey string
	// RootDirectory is the key prefix inside the bucket; registries sharing
	// a store share it.
	RootDirectory string
}

const (
	registryStartAttempts = 5
	registryStartTimeout  = 20 * time.Second
	registryStopTimeout   = 10 * time.Second
	// instanceHeader carries a per-start nonce in every registry response, so
	// the readiness probe cannot mistake another process that grabbed the
	// port for ours.
	instanceHeader = "X-Registrytest-Instance"
	adminUser      = "registrytest-admin"
)

// Registry is a running (or stopped) distribution registry process listening
// on 127.0.0.1. Its storage lives in a test temp dir (or RegistryOptions.S3) and
// survives Stop/Start.
type Registry struct {
	t      T
	bin    string
	dir    string
	opts   RegistryOptions
	secret string
	admin  string // password of adminUser, used by the push helpers
	token  *tokenServer
	client *http.Client

	mu   sync.Mutex
	port int
	proc *registryProcess
}

type registryProcess struct {
	*Process
	nonce string
}

// NewRegistry starts a registry on an ephemeral loopback port and stops it when the
// test ends. It needs the registry binary (Require semantics: skip
// locally, fail in CI when it is missing).
func NewRegistry(t testing.TB, o RegistryOptions) *Registry {
	t.Helper()
	return StartRegistry(t, filepath.Join(RequireBins(t, "registry"), "registry"), o)
}

// StartRegistry is NewRegistry with an explicit registry binary.
func StartRegistry(t T, bin string, o RegistryOptions) *Registry {
	t.Helper()
	r := &Registry{
		t:      t,
		bin:    bin,
		dir:    t.TempDir(),
		opts:   o,
		secret: randomHex(16),
		admin:  randomHex(16),
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{}},
	}
	if o.Auth != AuthNone && o.Auth != AuthBasic && o.Auth != AuthToken {
		t.Fatalf("rig registry: unknown auth %q", o.Auth)
	}
	if o.External != nil && o.Auth != AuthToken {
		t.Fatalf("rig registry: External needs AuthToken")
	}
	users := map[string]string{adminUser: r.admin}
	for u, p := range o.Users {
		users[u] = p
	}
	switch o.Auth {
	case AuthBasic:
		if err := writeHtpasswd(filepath.Join(r.dir, "htpasswd"), users); err != nil {
			t.Fatalf("rig registry: %v", err)
		}
	case AuthToken:
		ts, err := newTokenServer(users, o.AnonymousPull, o.TokenTTL)
		if err != nil {
			t.Fatalf("rig registry: %v", err)
		}
		r.token = ts
		t.Cleanup(ts.Close)
		roots := ts.certPEM
		if x := o.External; x != nil {
			ts.service, ts.issuer = x.Service, x.Issuer
			roots = append(append([]byte{}, roots...), x.RootCerts...)
		}
		if err := os.WriteFile(filepath.Join(r.dir, "token-root.pem"), roots, 0o600); err != nil {
			t.Fatalf("rig registry: write token root cert: %v", err)
		}
	}
	t.Cleanup(func() {
		r.Stop()
		r.client.CloseIdleConnections()
	})

	var err error
	for range registryStartAttempts {
		var ps []int
		if ps, err = FreePorts(1); err != nil {
			break
		}
		r.port = ps[0]
		if err = r.Start(); !errors.Is(err, errAddrInUse) {
			break
		}
		// Someone took the port between our probe and the registry's bind: pick another.
	}
	if err != nil {
		t.Fatalf("rig registry: %v", err)
	}
	return r
}

// Host is the registry's "127.0.0.1:port" (or RegistryOptions.Host's).
func (r *Registry) Host() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hostLocked()
}

// URL is the registry's base URL, "http://127.0.0.1:port".
func (r *Registry) URL() string { return "http://" + r.Host() }

// Running reports whether the registry process is up.
func (r *Registry) Running() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.proc != nil
}

// Stop kills the registry process and waits for it to exit, so a test can
// simulate an upstream going down. Storage is kept; Start brings it back.
// Stopping a stopped registry does nothing.
func (r *Registry) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.proc
	if p == nil {
		return
	}
	r.proc = nil
	// SIGKILL: a test upstream has nothing to flush, every write it
	// acknowledged is already on disk.
	if !p.Kill(registryStopTimeout) {
		r.t.Errorf("rig registry: registry pid %d did not exit %v after SIGKILL", p.Pid(), registryStopTimeout)
	}
	if r.t.Failed() {
		r.t.Logf("rig registry: registry %s output (tail):\n%s", r.hostLocked(), p.Output().String())
	}
	r.client.CloseIdleConnections()
}

// Start (re)starts a stopped registry on the same port and storage and waits
// until it answers. It fails if the port has been taken meanwhile. Starting
// a running registry does nothing.
func (r *Registry) Start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc != nil {
		return nil
	}
	p, err := r.spawn()
	if err != nil {
		return err
	}
	if err := r.waitReady(p); err != nil {
		p.KillWait()
		return err
	}
	r.proc = p
	return nil
}

func (r *Registry) hostLocked() string {
	ip := r.opts.Host
	if ip == "" {
		ip = "127.0.0.1"
	}
	return net.JoinHostPort(ip, strconv.Itoa(r.port))
}

func (r *Registry) spawn() (*registryProcess, error) {
	nonce := randomHex(8)
	cfg, err := r.config(nonce)
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(r.dir, "config.json")
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		return nil, fmt.Errorf("write registry config: %w", err)
	}
	cmd := exec.Command(r.bin, "serve", cfgPath)
	cmd.Env = registryEnv()
	pp, err := StartProcess(cmd, NewTailBuffer(64<<10))
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", r.bin, err)
	}
	return &registryProcess{Process: pp, nonce: nonce}, nil
}

// CollectGarbage stops the registry, runs distribution's `registry
// garbage-collect` on its storage as the chart does (--delete-untagged=false:
// manifests no tag points at are kept, pins are by digest) and starts it
// again on the same port.
func (r *Registry) CollectGarbage(t T) {
	t.Helper()
	r.Stop()
	cmd := exec.Command(r.bin, "garbage-collect", "--delete-untagged=false", filepath.Join(r.dir, "config.json"))
	cmd.Env = registryEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("rig registry: registry garbage-collect: %v\n%s", err, out)
	}
	t.Logf("registry garbage-collect:\n%s", out)
	if err := r.Start(); err != nil {
		t.Fatalf("rig registry: restart after garbage-collect: %v", err)
	}
}

var errAddrInUse = errors.New("address already in use")

// waitReady polls GET /v2/ until our own process answers it, or it exits.
func (r *Registry) waitReady(p *registryProcess) error {
	ctx, cancel := context.WithTimeout(context.Background(), registryStartTimeout)
	defer cancel()
	url := "http://" + r.hostLocked() + "/v2/"
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	probe := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := probe.Do(req); err == nil {
			resp.Body.Close()
			if resp.Header.Get(instanceHeader) == p.nonce {
				return nil
			}
		}
		select {
		case <-p.Done():
			out := p.Output().String()
			if strings.Contains(out, "address already in use") {
				return fmt.Errorf("start registry on %s: %w", r.hostLocked(), errAddrInUse)
			}
			return fmt.Errorf("start registry on %s: exited (%v) before answering; output:\n%s", r.hostLocked(), p.Err(), out)
		case <-ctx.Done():
			return fmt.Errorf("start registry on %s: not answering GET /v2/ after %v; output:\n%s", r.hostLocked(), registryStartTimeout, p.Output().String())
		case <-tick.C:
		}
	}
}

// config renders the registry configuration. JSON is valid YAML, which
// saves a YAML dependency.
func (r *Registry) config(nonce string) ([]byte, error) {
	storage := map[string]any{
		"delete": map[string]any{"enabled": true},
		// Upload purging starts a background walker we don't need.
		"maintenance": map[string]any{"uploadpurging": map[string]any{"enabled": false}},
	}
	if s3 := r.opts.S3; s3 != nil {
		region := s3.Region
		if region == "" {
			region = "us-east-1"
		}
		storage["s3"] = map[string]any{
			"regionendpoint": s3.Endpoint,
			"bucket":         s3.Bucket,
			"region":         region,
			"accesskey":      s3.AccessKey,
			"secretkey":      s3.SecretKey,
			"rootdirectory":  s3.RootDirectory,
			"forcepathstyle": true,
			"secure":         false,
			"v4auth":         true,
		}
		// Blob GETs are streamed by the registry, never a 307 to the store.
		storage["redirect"] = map[string]any{"disable": true}
	} else {
		storage["filesystem"] = map[string]any{"rootdirectory": filepath.Join(r.dir, "data")}
	}
	cfg := map[string]any{
		"version": "0.1",
		"log": map[string]any{
			"level":     "warn",
			"accesslog": map[string]any{"disabled": true},
		},
		"storage": storage,
		"http": map[string]any{
			"addr": r.hostLocked(),
			// A fixed secret keeps upload state valid across a restart.
			"secret":  r.secret,
			"headers": map[string][]string{instanceHeader: {nonce}},
		},
	}
	switch r.opts.Auth {
	case AuthBasic:
		cfg["auth"] = map[string]any{"htpasswd": map[string]any{
			"realm": "registrytest",
			"path":  filepath.Join(r.dir, "htpasswd"),
		}}
	case AuthToken:
		realm := r.token.realm()
		if x := r.opts.External; x != nil {
			realm = x.Realm
		}
		cfg["auth"] = map[string]any{"token": map[string]any{
			"realm":          realm,
			"service":        r.token.service,
			"issuer":         r.token.issuer,
			"rootcertbundle": filepath.Join(r.dir, "token-root.pem"),
		}}
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("render registry config: %w", err)
	}
	return b, nil
}

// registryEnv is the test's environment without REGISTRY_* overrides (the
// registry reads its configuration from those too) and with tracing off:
// otherwise it keeps trying to export to localhost:4318.
func registryEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "REGISTRY_") && !strings.HasPrefix(kv, "OTEL_") {
			env = append(env, kv)
		}
	}
	return append(env, "OTEL_TRACES_EXPORTER=none", "OTEL_METRICS_EXPORTER=none", "OTEL_LOGS_EXPORTER=none")
}

func writeHtpasswd(path string, users map[string]string) error {
	var b bytes.Buffer
	for u, p := range users {
		// MinCost: these hashes only guard test data, and the registry
		// verifies each request with the hash's own cost.
		h, err := bcrypt.GenerateFromPassword([]byte(p), bcrypt.MinCost)
		if err != nil {
			return fmt.Errorf("hash password of %s: %w", u, err)
		}
		fmt.Fprintf(&b, "%s:%s\n", u, h)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		return fmt.Errorf("write htpasswd: %w", err)
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails
	return hex.EncodeToString(b)
}
