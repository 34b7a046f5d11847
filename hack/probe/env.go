package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"time"

	"github.com/opencontainers/go-digest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/internal/rig/inproc"
	"github.com/tagger-project/tagger/pkg/hooks"
	"github.com/tagger-project/tagger/pkg/logging"
	"github.com/tagger-project/tagger/pkg/node"
	"github.com/tagger-project/tagger/pkg/pins"
)

// Webhook secrets the probe's controller reads.
const (
	genericToken = "probe-generic-token"
	githubSecret = "probe-github-secret"
)

// env is what the probe attacks.
type env struct {
	mirror, webhooks, metrics, health string // host:port
	upstream                          *rig.Registry
	kube                              *rig.Kube
	image                             rig.Image
	ns, repo                          string // the pinned image as the mirror sees it
}

// start runs the apiserver, an upstream and a bundled registry, the
// controller with its webhook receivers, and a node agent; it pins one OCI
// image, cached in the bundled registry, and waits until the agent serves it.
func start(ctx context.Context, p *rig.Program, bin string) (*env, error) {
	kc, err := rig.StartKube(bin)
	if err != nil {
		return nil, err
	}
	// The in-process controller and agent log as the binaries do.
	logging.SetKubeLoggers(kc.Log)
	p.Cleanup(func() { _ = kc.Stop() })
	e := &env{kube: kc}
	e.upstream = rig.StartRegistry(p, filepath.Join(bin, "registry"), rig.RegistryOptions{})
	bundled := rig.StartRegistry(p, filepath.Join(bin, "registry"), rig.RegistryOptions{})
	e.image = e.upstream.PushImage(p, "probe/app", "v1", rig.ImageOptions{Layers: 2, LayerSize: 256 << 10})
	e.ns, e.repo = e.upstream.Host(), "probe/app"

	if err := kc.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "tagger-system"}}); err != nil {
		return nil, fmt.Errorf("create namespace: %w", err)
	}
	if err := kc.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "tagger-system", Name: "webhooks"},
		Data: map[string][]byte{hooks.SecretKeyGeneric: []byte(genericToken), hooks.SecretKeyGitHub: []byte(githubSecret)}}); err != nil {
		return nil, fmt.Errorf("create webhook secret: %w", err)
	}
	o := inproc.ControllerOptions()
	o.RegistryURL = bundled.URL()
	e.webhooks = rig.FreeAddr(p)
	o.WebhookAddr, o.WebhookSecret = e.webhooks, "tagger-system/webhooks"
	inproc.RunController(kc, o)

	tag := rig.NewTag("app", e.upstream.Host()+"/probe/app:v1")
	tag.Spec.Cache = true
	rig.CreateTag(p, kc.Client, tag)
	rig.WaitTagFor(p, 60*time.Second, kc.Client, "app", "served and cached", func(t *v1alpha1.Tag) (bool, string) {
		c := rig.Condition(t, v1alpha1.ConditionCached)
		return t.Status.ServedDigest == e.image.Digest.String() && c.Status == metav1.ConditionTrue,
			fmt.Sprintf("served %q, Cached %s/%s", t.Status.ServedDigest, c.Status, c.Reason)
	})

	no := node.DefaultOptions()
	no.Listen, no.MetricsAddr, no.HealthAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	dir := p.TempDir()
	no.HostsDir, no.ContainerdConfig, no.CRIEndpoint = filepath.Join(dir, "certs.d"), filepath.Join(dir, "config.toml"), ""
	no.RegistryURL = bundled.URL()
	no.PlainHTTPRegistries = []string{"127.0.0.1:*"}
	agent, err := node.New(kc.Config, no, kc.Log)
	if err != nil {
		return nil, fmt.Errorf("node agent: %w", err)
	}
	actx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- agent.Run(actx) }()
	p.Cleanup(func() { cancel(); <-done })
	e.mirror, e.metrics, e.health = agent.Addr("mirror"), agent.Addr("metrics"), agent.Addr("health")
	ref, err := pins.ParseReference(e.upstream.Host() + "/probe/app:v1")
	if err != nil {
		return nil, err
	}
	rig.WaitFor(p, 30*time.Second, "the node agent to pin the image", func() (bool, string) {
		pin, ok := agent.Pins().Lookup(ref.Registry, ref.Repository, ref.Tag)
		return ok && pin.Digest == e.image.Digest.String(), fmt.Sprintf("pin %+v", pin)
	})
	return e, nil
}

// resolves checks, through the mirror, that the pinned tag still resolves
// to the pinned digest (HEAD, as containerd resolves), that its GET and the
// GET by digest return bytes that hash to it, whatever the Accept, and that
// the Tag still serves it.
func (e *env) resolves(ctx context.Context) error {
	c := &http.Client{Timeout: 10 * time.Second}
	want := e.image.Digest
	for _, target := range []string{"/v2/" + e.repo + "/manifests/v1", "/v2/" + e.repo + "/manifests/" + want.String()} {
		for _, accept := range []string{"", "*/*", "text/html"} {
			for _, method := range []string{http.MethodHead, http.MethodGet} {
				req, err := http.NewRequestWithContext(ctx, method, "http://"+e.mirror+target+"?ns="+e.ns, nil)
				if err != nil {
					return err
				}
				if accept != "" {
					req.Header.Set("Accept", accept)
				}
				resp, err := c.Do(req)
				if err != nil {
					return fmt.Errorf("%s %s: %w", method, target, err)
				}
				body, err := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				if err != nil || resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != want.String() {
					return fmt.Errorf("%s %s (Accept %q): %d, digest %q, %v", method, target, accept, resp.StatusCode, resp.Header.Get("Docker-Content-Digest"), err)
				}
				if method == http.MethodGet && (digest.FromBytes(body) != want || !bytes.Equal(body, e.image.Manifest)) {
					return fmt.Errorf("GET %s (Accept %q): body does not hash to %s", target, accept, want)
				}
			}
		}
	}
	t := &v1alpha1.Tag{}
	if err := e.kube.Client.Get(ctx, client.ObjectKey{Name: "app"}, t); err != nil {
		return fmt.Errorf("get Tag: %w", err)
	}
	if t.Status.ServedDigest != want.String() {
		return fmt.Errorf("Tag serves %s, want %s", t.Status.ServedDigest, want)
	}
	return nil
}
