package mirror

import (
	"strings"
	"testing"
)

func TestValidRepository(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"nginx", true},
		{"library/nginx", true},
		{"a/b/c/d", true},
		{"my-app", true},
		{"my--app", true},
		{"my_app", true},
		{"my__app", true},
		{"my.app", true},
		{"a0/b-1.c_2__d", true},
		{"0", true},
		{strings.Repeat("a", 255), true},
		{strings.Repeat("a", 256), false},
		{"", false},
		{"/nginx", false},
		{"nginx/", false},
		{"library//nginx", false},
		{"Nginx", false},
		{"..", false},
		{".", false},
		{"library/../nginx", false},
		{"library/./nginx", false},
		{"%2e%2e", false},
		{"library%2fnginx", false},
		{"my...app", false},
		{"my._app", false},
		{"my___app", false},
		{"my-.app", false},
		{"-app", false},
		{"app-", false},
		{"_app", false},
		{"app.", false},
		{"my app", false},
		{"my:app", false},
		{"my\\app", false},
		{"ngïnx", false},
	} {
		if got := validRepository(tc.name); got != tc.ok {
			t.Errorf("validRepository(%q) = %v, want %v", tc.name, got, tc.ok)
		}
	}
}

func TestValidTag(t *testing.T) {
	for _, tc := range []struct {
		tag string
		ok  bool
	}{
		{"latest", true},
		{"1.27", true},
		{"1.27.3-alpine", true},
		{"V1_x", true},
		{"_x", true},
		{"a", true},
		{strings.Repeat("a", 128), true},
		{strings.Repeat("a", 129), false},
		{"", false},
		{".1", false},
		{"-1", false},
		{"..", false},
		{"a/b", false},
		{"a:b", false},
		{"a+b", false},
		{"a b", false},
	} {
		if got := validTag(tc.tag); got != tc.ok {
			t.Errorf("validTag(%q) = %v, want %v", tc.tag, got, tc.ok)
		}
	}
}

func TestValidDigest(t *testing.T) {
	hex := func(n int) string { return strings.Repeat("0123456789abcdef", 8)[:n] }
	for _, tc := range []struct {
		d  string
		ok bool
	}{
		{"sha256:" + hex(64), true},
		{"sha384:" + hex(96), true},
		{"sha512:" + hex(128), true},
		{"sha256:" + hex(63), false},
		{"sha256:" + hex(65), false},
		{"sha256:" + strings.ToUpper(hex(64)), false},
		{"sha512:" + hex(64), false},
		{"md5:" + hex(32), false},
		{"sha256" + hex(64), false},
		{":" + hex(64), false},
		{"sha256:", false},
		{"", false},
		{"sha256:" + hex(63) + "g", false},
	} {
		if got := validDigest(tc.d); got != tc.ok {
			t.Errorf("validDigest(%q) = %v, want %v", tc.d, got, tc.ok)
		}
	}
}

func TestQueryNS(t *testing.T) {
	for _, tc := range []struct {
		raw, ns string
		ok      bool
	}{
		{"ns=docker.io", "docker.io", true},
		{"ns=localhost%3A5000", "localhost:5000", true},
		{"ns=localhost:5000", "localhost:5000", true},
		{"a=1&ns=quay.io&b=2", "quay.io", true},
		{"ns=quay.io&ns=ghcr.io", "quay.io", true},
		{"xns=quay.io", "", false},
		{"ns=", "", false},
		{"ns", "", false},
		{"", "", false},
		{"ns=%zz", "", false},
	} {
		ns, ok := queryNS(tc.raw)
		if ns != tc.ns || ok != tc.ok {
			t.Errorf("queryNS(%q) = %q, %v; want %q, %v", tc.raw, ns, ok, tc.ns, tc.ok)
		}
	}
}

func TestParseRoute(t *testing.T) {
	d := "sha256:" + strings.Repeat("a", 64)
	for _, tc := range []struct {
		raw     string
		kind    kind
		name    string
		ref     string
		invalid *ociError
	}{
		{"/v2/", kindPing, "", "", nil},
		{"/v2", kindPing, "", "", nil},
		{"/v2/library/nginx/manifests/1.27", kindManifestTag, "library/nginx", "1.27", nil},
		{"/v2/library/nginx/manifests/" + d, kindManifestDigest, "library/nginx", d, nil},
		{"/v2/library/nginx/manifests/sha256%3A" + strings.Repeat("a", 64), kindManifestDigest, "library/nginx", d, nil},
		{"/v2/library/nginx/blobs/" + d, kindBlob, "library/nginx", d, nil},
		// A repository may have a component named like a route.
		{"/v2/a/manifests/b/manifests/v1", kindManifestTag, "a/manifests/b", "v1", nil},
		{"/v2/a/blobs/" + d, kindBlob, "a", d, nil},
		{"/v2/nginx/manifests/%zz", kindManifestTag, "nginx", "", errTagInvalid},
		{"/v2/nginx/blobs/%zz", kindBlob, "nginx", "", errDigestInvalid},
		{"/v2/a/%2e%2e/manifests/x", kindManifestTag, "a/%2e%2e", "x", errNameInvalid},
		{"/v2/a/manifests", kindOther, "", "", nil},
		{"/v2/a/tags/list", kindOther, "", "", nil},
		{"/v2/_catalog", kindOther, "", "", nil},
		{"/v3/a/manifests/x", kindOther, "", "", nil},
		{"", kindOther, "", "", nil},
	} {
		rt := parseRoute(tc.raw)
		if rt.kind != tc.kind || rt.name != tc.name || rt.ref != tc.ref || rt.invalid != tc.invalid {
			t.Errorf("parseRoute(%q) = %+v, want kind %s name %q ref %q invalid %v", tc.raw, rt, kindNames[tc.kind], tc.name, tc.ref, tc.invalid)
		}
	}
}
