package hooks

import (
	"strings"
	"testing"

	"github.com/tagger-project/tagger/pkg/pins"
)

var fuzzRegistries = Registries{Harbor: "harbor.example.com"}.withDefaults()

// checkEvent is what every parser must hold to, whatever the bytes: no
// panic; a failure is a payload error (400), never an internal one; at most
// maxRefsPerDelivery images, each a tag reference that parses back to
// itself (so no field smuggles in a digest or another registry).
func checkEvent(t *testing.T, ev event, err error) {
	t.Helper()
	if err != nil {
		if !isPayloadError(err) {
			t.Fatalf("not a payload error: %v", err)
		}
		if len(clip(err.Error())) > maxMessage+32 {
			t.Fatalf("clip let %d bytes through", len(clip(err.Error())))
		}
		return
	}
	if len(ev.refs) > maxRefsPerDelivery {
		t.Fatalf("%d refs", len(ev.refs))
	}
	for _, r := range ev.refs {
		back, perr := pins.ParseReference(r.String())
		if perr != nil || back != r || r.Tag == "" {
			t.Fatalf("ref %+v does not parse back: %+v %v", r, back, perr)
		}
	}
}

func FuzzParseDockerHub(f *testing.F) {
	f.Add([]byte(dockerHubSample("library/nginx", "1.27", dockerHubCallbackURL)))
	f.Add([]byte(dockerHubSample("nginx", "latest", "")))
	f.Add([]byte(`{"push_data":{"tag":"a@b"},"repository":{"repo_name":"x/../y"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := parseDockerHub(b, fuzzRegistries)
		checkEvent(t, ev, err)
	})
}

func FuzzParseQuay(f *testing.F) {
	f.Add([]byte(quaySample("quay.io/team/api", `["v2","v3"]`)))
	f.Add([]byte(quayLegacySample))
	f.Add([]byte(`{"repository":"team/api","updated_tags":{"v1":"x"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := parseQuay(b, fuzzRegistries)
		checkEvent(t, ev, err)
	})
}

func FuzzParseGitHub(f *testing.F) {
	f.Add("package", []byte(githubSample("package", "published", "Octo-Org", "app", "v1")))
	f.Add("registry_package", []byte(githubSample("registry_package", "published", "octo", "a%2Fb", "v2")))
	f.Add("ping", []byte(githubPingSample))
	f.Add("package", []byte(githubNPMSample))
	f.Fuzz(func(t *testing.T, eventName string, b []byte) {
		ev, err := parseGitHub(eventName, b, fuzzRegistries)
		checkEvent(t, ev, err)
	})
}

func FuzzParseHarbor(f *testing.F) {
	f.Add([]byte(harborSample("PUSH_ARTIFACT", "["+harborResourceJSON(harborDigest, "1.0", "harbor.example.com/proj/svc:1.0")+"]", "proj/svc")))
	f.Add([]byte(harborSample("pushImage", "["+harborResourceJSON(harborDigest, "1.0", "")+"]", "proj/svc")))
	f.Add([]byte(harborSample("DELETE_ARTIFACT", "[]", "")))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := parseHarbor(b, fuzzRegistries)
		checkEvent(t, ev, err)
	})
}

func FuzzParseGeneric(f *testing.F) {
	f.Add([]byte(genericSample("registry.example.com/ci/tool:main")))
	f.Add([]byte(`{"image":"nginx@sha256:` + strings.Repeat("0", 64) + `","id":"x"}`))
	f.Add([]byte(`{"image":""}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := parseGeneric(b)
		checkEvent(t, ev, err)
	})
}

// FuzzSignature: a header is accepted only when it is the body's HMAC under
// the secret (hex case aside), and the genuine one always is.
func FuzzSignature(f *testing.F) {
	f.Add("sha256=00", []byte("{}"), "secret")
	f.Add(Signature([]byte("{}"), "secret"), []byte("{}"), "secret")
	f.Add("sha1=abc", []byte(""), "")
	f.Fuzz(func(t *testing.T, header string, body []byte, secret string) {
		want := Signature(body, secret)
		got := validSignature(header, body, secret)
		if got && !strings.EqualFold(header, want) {
			t.Fatalf("accepted %q for %q", header, want)
		}
		if secret != "" && !validSignature(want, body, secret) {
			t.Fatal("refused the genuine signature")
		}
		if secret == "" && got {
			t.Fatal("an empty secret matched")
		}
	})
}

// FuzzSecretEqual: only the secret itself matches.
func FuzzSecretEqual(f *testing.F) {
	f.Add("a", "a")
	f.Add("", "")
	f.Add("abc", "abd")
	f.Fuzz(func(t *testing.T, presented, secret string) {
		if secretEqual(presented, secret) != (secret != "" && presented == secret) {
			t.Fatalf("secretEqual(%q, %q)", presented, secret)
		}
	})
}

// FuzzSplitPath: the route split never panics and never yields a provider
// with a '/'.
func FuzzSplitPath(f *testing.F) {
	f.Add("/hooks/github")
	f.Add("/hooks/generic/token/more")
	f.Add("/hooks/")
	f.Fuzz(func(t *testing.T, p string) {
		name, _, _ := splitPath(p)
		if strings.Contains(name, "/") {
			t.Fatalf("provider %q", name)
		}
		if name != "" && !strings.HasPrefix(p, pathPrefix) {
			t.Fatalf("provider from %q", p)
		}
	})
}
