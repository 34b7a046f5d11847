package webhooks

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/pkg/hooks"
)

var secrets = hooks.Secrets{
	DockerHub: "dockerhub-token-0d6f",
	Quay:      "quay-token-77e1",
	GitHub:    "github-secret-a9c4",
	Harbor:    "Basic aGFyYm9yOnNlY3JldA==",
	Generic:   "generic-token-51b0",
}

// provider describes how to deliver one provider's push notification for
// <upstream>/<repo>:<tag>.
type provider struct {
	name string
	repo string // upstream repository the Tag pins
	// payload is the body announcing a push of repo:tag.
	payload func(host, repo, tag string) string
	// send makes an authenticated delivery of body; forge one with a wrong
	// secret.
	send, forge func(body string) delivery
}

func providers() []provider {
	token := func(name, secret string) func(string) delivery {
		return func(body string) delivery { return delivery{path: "/hooks/" + name + "/" + secret, body: body} }
	}
	github := func(secret string) func(string) delivery {
		return func(body string) delivery {
			return delivery{path: "/hooks/github", body: body, header: map[string]string{
				"X-GitHub-Event": "package", "X-Hub-Signature-256": hooks.Signature([]byte(body), secret)}}
		}
	}
	harbor := func(auth string) func(string) delivery {
		return func(body string) delivery {
			return delivery{path: "/hooks/harbor", body: body, header: map[string]string{"Authorization": auth}}
		}
	}
	return []provider{
		{
			name: hooks.ProviderDockerHub, repo: "hub/app",
			payload: func(_, repo, tag string) string { return dockerHubPayload(repo, tag) },
			send:    token("dockerhub", secrets.DockerHub), forge: token("dockerhub", secrets.Quay),
		},
		{
			name: hooks.ProviderQuay, repo: "quayns/app",
			// docker_url says quay.io, mapped to the local upstream.
			payload: func(_, repo, tag string) string { return quayPayload("quay.io/"+repo, tag) },
			send:    token("quay", secrets.Quay), forge: token("quay", secrets.Quay+"x"),
		},
		{
			name: hooks.ProviderGitHub, repo: "octo-org/gh-app",
			payload: func(_, repo, tag string) string {
				owner, name, _ := strings.Cut(repo, "/")
				return githubPayload(strings.ToUpper(owner[:1])+owner[1:], name, tag) // GitHub logins are mixed case
			},
			send: github(secrets.GitHub), forge: github("not-the-secret"),
		},
		{
			name: hooks.ProviderHarbor, repo: "harborproj/app",
			payload: func(host, repo, tag string) string {
				return harborPayload(host+"/"+repo+":"+tag, tag, "sha256:"+strings.Repeat("0", 64), repo)
			},
			send: harbor(secrets.Harbor), forge: harbor("Basic d3Jvbmc6d3Jvbmc="),
		},
		{
			name: hooks.ProviderGeneric, repo: "ci/app",
			payload: func(host, repo, tag string) string { return genericPayload(host + "/" + repo + ":" + tag) },
			send:    token("generic", secrets.Generic), forge: token("generic", ""),
		},
	}
}

// TestProviders: for each provider, bad deliveries are refused and change
// nothing, then the documented payload makes the controller check the
// upstream and record the new generation.
func TestProviders(t *testing.T) {
	c := startCluster(t)
	up := rig.NewRegistry(t, rig.RegistryOptions{})
	host := up.Host()
	window := 200 * time.Millisecond
	hs := startHooks(t, hooks.Options{
		Secrets:    secrets,
		Coalesce:   window,
		Registries: hooks.Registries{DockerHub: host, Quay: host, GHCR: host},
	})

	for _, p := range providers() {
		t.Run(p.name, func(t *testing.T) {
			name := "wh-" + p.name
			image := host + "/" + p.repo + ":v1"
			img1 := up.PushImage(t, p.repo, "v1", rig.ImageOptions{})
			rig.CreateTag(t, c, rig.NewTag(name, image))
			rig.WaitTag(t, c, name, "generation 1", rig.ServedIs(1, img1.Digest.String()))
			waitIndexed(t, name, image)

			// The upstream moves: only a check can tell.
			img2 := up.PushImage(t, p.repo, "v1", rig.ImageOptions{})
			before := rig.GetTag(t, c, name)

			good := p.payload(host, p.repo, "v1")
			oversized := good + strings.Repeat(" ", hooks.MaxBodyBytes)
			wrongType := p.send(good)
			wrongType.contentType = "text/plain"
			// Signed over its (empty) body: GitHub's receiver answers 401
			// to anything without a valid signature, before the method.
			get := p.send("")
			get.method = http.MethodGet
			// GitHub's secret signs the body: a body over the bound cannot
			// be verified, and unverified deliveries only ever get 401.
			oversizedStatus := http.StatusRequestEntityTooLarge
			if p.name == hooks.ProviderGitHub {
				oversizedStatus = http.StatusUnauthorized
			}
			for _, bad := range []struct {
				what   string
				d      delivery
				status int
			}{
				{"wrong secret", p.forge(good), http.StatusUnauthorized},
				{"oversized", p.send(oversized), oversizedStatus},
				{"malformed JSON", p.send(good[:len(good)/2]), http.StatusBadRequest},
				{"missing fields", p.send(`{}`), http.StatusBadRequest},
				{"wrong Content-Type", wrongType, http.StatusUnsupportedMediaType},
				{"not POST", get, http.StatusMethodNotAllowed},
				{"repository no Tag pins", p.send(p.payload(host, p.repo+"-other", "v1")), http.StatusNotFound},
				{"tag no Tag pins", p.send(p.payload(host, p.repo, "v2")), http.StatusNotFound},
			} {
				a := post(t, hs.url, bad.d)
				if a.status != bad.status {
					t.Errorf("%s: %d %s, want %d", bad.what, a.status, a.raw, bad.status)
				}
				if msg, _ := a.body["error"].(string); msg == "" {
					t.Errorf("%s: answer %s has no error", bad.what, a.raw)
				}
			}
			// Well past the coalescing window: nothing may have been requested.
			time.Sleep(5 * window)
			after := rig.GetTag(t, c, name)
			if after.ResourceVersion != before.ResourceVersion || len(hs.checksFor(name)) != 0 {
				t.Fatalf("refused deliveries changed Tag %s: resourceVersion %s -> %s, checks %+v",
					name, before.ResourceVersion, after.ResourceVersion, hs.checksFor(name))
			}
			if after.Status.ServedDigest != img1.Digest.String() {
				t.Fatalf("served digest moved without an accepted webhook")
			}

			a := post(t, hs.url, p.send(good))
			if a.status != http.StatusAccepted || a.body["checks"] != float64(1) {
				t.Fatalf("good delivery: %d %s, want 202 {\"checks\":1}", a.status, a.raw)
			}
			tag := rig.WaitTag(t, c, name, "generation 2 after the webhook", rig.ServedIs(2, img2.Digest.String()))
			checks := hs.checksFor(name)
			if len(checks) != 1 || tag.Status.CheckAnnotation != checks[0].Value ||
				!strings.HasPrefix(checks[0].Value, "webhook:"+p.name+":") {
				t.Fatalf("checks %+v, Tag acted on %q", checks, tag.Status.CheckAnnotation)
			}
			if tag.Status.LastCheck == nil || tag.Status.LastCheck.Result != v1alpha1.CheckNewGeneration {
				t.Fatalf("lastCheck %+v, want NewGeneration", tag.Status.LastCheck)
			}
		})
	}
}

// TestForgedDigestPinsNothing: a payload's digest is never used; a delivery
// claiming a digest the upstream does not have only causes a HEAD that finds
// the tag unchanged.
func TestForgedDigestPinsNothing(t *testing.T) {
	c := startCluster(t)
	up := rig.NewRegistry(t, rig.RegistryOptions{})
	hs := startHooks(t, hooks.Options{Secrets: secrets, Coalesce: 50 * time.Millisecond})
	img := up.PushImage(t, "forged/app", "v1", rig.ImageOptions{})
	image := up.Host() + "/forged/app:v1"
	rig.CreateTag(t, c, rig.NewTag("wh-forged", image))
	rig.WaitTag(t, c, "wh-forged", "generation 1", rig.ServedIs(1, img.Digest.String()))
	waitIndexed(t, "wh-forged", image)

	forged := "sha256:" + strings.Repeat("f", 64)
	body := harborPayload(image, "v1", forged, "forged/app")
	a := post(t, hs.url, delivery{path: "/hooks/harbor", body: body, header: map[string]string{"Authorization": secrets.Harbor}})
	if a.status != http.StatusAccepted {
		t.Fatalf("%d %s", a.status, a.raw)
	}
	var value string
	rig.WaitFor(t, waitTimeout, "the webhook check", func() (bool, string) {
		cs := hs.checksFor("wh-forged")
		if len(cs) == 1 {
			value = cs[0].Value
		}
		return value != "", "no check yet"
	})
	tag := rig.WaitTag(t, c, "wh-forged", "check acted on", func(tag *v1alpha1.Tag) (bool, string) {
		return tag.Status.CheckAnnotation == value, "want checkAnnotation " + value
	})
	if tag.Status.LastCheck == nil || tag.Status.LastCheck.Result != v1alpha1.CheckUnchanged ||
		len(tag.Status.Generations) != 1 || tag.Status.ServedDigest != img.Digest.String() {
		t.Fatalf("forged delivery changed the pin: %+v", tag.Status)
	}
	for _, g := range tag.Status.Generations {
		if g.Digest == forged {
			t.Fatal("the payload's digest was recorded")
		}
	}
}

// TestCoalescing: 50 deliveries for one tag within a second cost one
// annotation patch and one upstream manifest HEAD.
func TestCoalescing(t *testing.T) {
	c := startCluster(t)
	up := rig.NewRegistry(t, rig.RegistryOptions{})
	proxy := rig.NewCountingProxy(t, up.URL())
	window := 2 * time.Second
	hs := startHooks(t, hooks.Options{Secrets: secrets, Coalesce: window})

	img1 := up.PushImage(t, "burst/app", "v1", rig.ImageOptions{})
	image := proxy.Host() + "/burst/app:v1"
	rig.CreateTag(t, c, rig.NewTag("wh-burst", image))
	rig.WaitTag(t, c, "wh-burst", "generation 1", rig.ServedIs(1, img1.Digest.String()))
	waitIndexed(t, "wh-burst", image)
	img2 := up.PushImage(t, "burst/app", "v1", rig.ImageOptions{})
	proxy.Reset()

	// 50 deliveries over about 750ms, a few at a time.
	body := genericPayload(image)
	start := time.Now()
	var wg sync.WaitGroup
	for wave := range 10 {
		for range 5 {
			wg.Go(func() {
				a := post(t, hs.url, delivery{path: "/hooks/generic/" + secrets.Generic, body: body})
				if a.status != http.StatusAccepted {
					t.Errorf("delivery in wave %d: %d %s", wave, a.status, a.raw)
				}
			})
		}
		time.Sleep(75 * time.Millisecond)
	}
	wg.Wait()
	sent := time.Since(start)
	if sent > window {
		t.Fatalf("sending 50 deliveries took %v, longer than the %v window; the test cannot tell coalescing apart", sent, window)
	}

	rig.WaitTag(t, c, "wh-burst", "generation 2", rig.ServedIs(2, img2.Digest.String()))
	// Wait out a second window in case a second check were coming.
	time.Sleep(time.Until(start.Add(2*window + time.Second)))
	if n := len(hs.checksFor("wh-burst")); n != 1 {
		t.Fatalf("%d annotation patches, want 1: %+v", n, hs.checksFor("wh-burst"))
	}
	if heads := proxy.Count(http.MethodHead, rig.KindManifest); heads != 1 {
		t.Fatalf("%d upstream manifest HEADs, want 1: %s; %v", heads, proxy, proxy.Requests())
	}
}
