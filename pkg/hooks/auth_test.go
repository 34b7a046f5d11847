package hooks

import (
	"fmt"
	"strings"
	"testing"
)

func TestSecretEqual(t *testing.T) {
	for _, c := range []struct {
		presented, secret string
		want              bool
	}{
		{"s3cret", "s3cret", true},
		{"s3cre", "s3cret", false},
		{"s3cretx", "s3cret", false},
		{"S3cret", "s3cret", false},
		{"", "s3cret", false},
		{"", "", false}, // a disabled provider never authenticates
		{"x", "", false},
	} {
		if got := secretEqual(c.presented, c.secret); got != c.want {
			t.Errorf("secretEqual(%q, %q) = %v, want %v", c.presented, c.secret, got, c.want)
		}
	}
}

func TestValidSignature(t *testing.T) {
	body := []byte(`{"action":"published"}`)
	// GitHub's documented test vector: secret "It's a Secret to Everybody",
	// payload "Hello, World!".
	const docSig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
	if !validSignature(docSig, []byte("Hello, World!"), "It's a Secret to Everybody") {
		t.Fatal("GitHub's documented example does not verify")
	}
	good := Signature(body, "k")
	for _, c := range []struct {
		name, header string
		body         []byte
		secret       string
		want         bool
	}{
		{"valid", good, body, "k", true},
		{"valid, upper-case hex", "sha256=" + strings.ToUpper(strings.TrimPrefix(good, "sha256=")), body, "k", true},
		{"wrong secret", good, body, "k2", false},
		{"other body", good, []byte(`{"action":"updated"}`), "k", false},
		{"body with trailing newline", good, append(body, '\n'), "k", false},
		{"no prefix", strings.TrimPrefix(good, "sha256="), body, "k", false},
		{"sha1 prefix", "sha1=" + strings.TrimPrefix(good, "sha256="), body, "k", false},
		{"truncated", good[:len(good)-2], body, "k", false},
		{"not hex", "sha256=" + strings.Repeat("z", 64), body, "k", false},
		{"empty", "", body, "k", false},
		{"no secret configured", Signature(body, ""), body, "", false},
	} {
		if got := validSignature(c.header, c.body, c.secret); got != c.want {
			t.Errorf("%s: validSignature = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestLoadSecrets(t *testing.T) {
	s := LoadSecrets(map[string][]byte{
		"dockerhub": []byte("dh\n"),
		"github":    []byte("  gh  "),
		"harbor":    []byte("Bearer abc"),
		"other":     []byte("ignored"),
	})
	want := Secrets{DockerHub: "dh", GitHub: "gh", Harbor: "Bearer abc"}
	if s != want {
		t.Fatalf("LoadSecrets = %#v, want %#v", s, want)
	}
	if LoadSecrets(nil) != (Secrets{}) {
		t.Fatal("LoadSecrets(nil) enabled something")
	}
}

func TestSecretsDoNotPrint(t *testing.T) {
	o := Options{Secrets: testSecrets}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		out := fmt.Sprintf(verb, o.Secrets) + fmt.Sprintf(verb, o)
		for _, s := range allSecrets(testSecrets) {
			if strings.Contains(out, s) {
				t.Errorf("%s prints secret %q: %s", verb, s, out)
			}
		}
	}
	if got := testSecrets.String(); got != "hooks.Secrets{enabled: dockerhub,quay,github,harbor,generic}" {
		t.Errorf("String() = %q", got)
	}
}
