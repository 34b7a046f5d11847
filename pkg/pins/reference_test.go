package pins

import (
	"errors"
	"testing"
)

func TestParseReference(t *testing.T) {
	cases := []struct {
		in                   string
		want                 string
		apiHost, cacheRepo   string
		wantErr, wantDigestE bool
	}{
		{in: "nginx", want: "docker.io/library/nginx:latest", apiHost: "registry-1.docker.io", cacheRepo: "docker.io/library/nginx"},
		{in: "nginx:1.27", want: "docker.io/library/nginx:1.27", apiHost: "registry-1.docker.io", cacheRepo: "docker.io/library/nginx"},
		{in: "docker.io/nginx:1.27", want: "docker.io/library/nginx:1.27", apiHost: "registry-1.docker.io", cacheRepo: "docker.io/library/nginx"},
		{in: "index.docker.io/library/nginx:1.27", want: "docker.io/library/nginx:1.27", apiHost: "registry-1.docker.io", cacheRepo: "docker.io/library/nginx"},
		{in: "bitnami/redis:7", want: "docker.io/bitnami/redis:7", apiHost: "registry-1.docker.io", cacheRepo: "docker.io/bitnami/redis"},
		{in: "quay.io/org/app:v1", want: "quay.io/org/app:v1", apiHost: "quay.io", cacheRepo: "quay.io/org/app"},
		{in: "localhost:5000/a:b", want: "localhost:5000/a:b", apiHost: "localhost:5000", cacheRepo: "localhost_5000/a"},
		{in: "127.0.0.1:5000/team/app", want: "127.0.0.1:5000/team/app:latest", apiHost: "127.0.0.1:5000", cacheRepo: "127.0.0.1_5000/team/app"},
		{in: "ghcr.io/o/r/deep/path:V1.2_rc", want: "ghcr.io/o/r/deep/path:V1.2_rc", apiHost: "ghcr.io", cacheRepo: "ghcr.io/o/r/deep/path"},
		{in: "", wantErr: true},
		{in: "   ", wantErr: true},
		{in: "Nginx:1", wantErr: true},
		{in: "nginx:", wantErr: true},
		{in: "nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", wantErr: true, wantDigestE: true},
		{in: "nginx:1.27@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", wantErr: true, wantDigestE: true},
		{in: "../etc/passwd", wantErr: true},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			r, err := ParseReference(c.in)
			if c.wantErr {
				if err == nil {
					t.Fatalf("ParseReference(%q) = %v, want error", c.in, r)
				}
				if c.wantDigestE != errors.Is(err, ErrDigestReference) {
					t.Fatalf("ParseReference(%q) error %v: digest error = %v, want %v", c.in, err, !c.wantDigestE, c.wantDigestE)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseReference(%q): %v", c.in, err)
			}
			if got := r.String(); got != c.want {
				t.Errorf("String() = %q, want %q", got, c.want)
			}
			if got := r.APIHost(); got != c.apiHost {
				t.Errorf("APIHost() = %q, want %q", got, c.apiHost)
			}
			if got := r.CacheRepository(); got != c.cacheRepo {
				t.Errorf("CacheRepository() = %q, want %q", got, c.cacheRepo)
			}
			// Normalizing twice changes nothing.
			again, err := ParseReference(r.String())
			if err != nil || again != r {
				t.Errorf("re-parse of %q = %v, %v; want %v", r.String(), again, err, r)
			}
		})
	}
}

func TestRegistryFromNS(t *testing.T) {
	for ns, want := range map[string]string{
		"docker.io":            "docker.io",
		"registry-1.docker.io": "docker.io",
		"index.docker.io":      "docker.io",
		"quay.io":              "quay.io",
		"localhost:5000":       "localhost:5000",
	} {
		if got := RegistryFromNS(ns); got != want {
			t.Errorf("RegistryFromNS(%q) = %q, want %q", ns, got, want)
		}
	}
}

func TestHostMatcher(t *testing.T) {
	m, err := HostMatcher([]string{"127.0.0.1:*", "*.svc.cluster.local:5000", "registry.local"})
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]bool{
		"127.0.0.1:5000":                         true,
		"127.0.0.1":                              false,
		"tagger-registry.svc.cluster.local:5000": true,
		"registry.local":                         true,
		"registry.local:443":                     false,
		"docker.io":                              false,
	} {
		if got := m(host); got != want {
			t.Errorf("match %q = %v, want %v", host, got, want)
		}
	}
	if _, err := HostMatcher([]string{"[bad"}); err == nil {
		t.Error("bad pattern accepted")
	}
}
