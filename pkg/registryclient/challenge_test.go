package registryclient

import (
	"net/http"
	"reflect"
	"testing"

	"github.com/containerd/containerd/v2/core/remotes/docker/auth"
)

// TestChallenges checks the challenges the client acts on, as containerd's
// parser reads them after splitChallenges: Bearer sorts before Basic, and
// unknown schemes are dropped.
func TestChallenges(t *testing.T) {
	bearer := func(p map[string]string) auth.Challenge {
		return auth.Challenge{Scheme: auth.BearerAuth, Parameters: p}
	}
	basic := func(p map[string]string) auth.Challenge { return auth.Challenge{Scheme: auth.BasicAuth, Parameters: p} }
	tests := []struct {
		name    string
		headers []string
		want    []auth.Challenge
	}{
		{
			name:    "docker hub bearer",
			headers: []string{`Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"`},
			want: []auth.Challenge{bearer(map[string]string{
				"realm": "https://auth.docker.io/token", "service": "registry.docker.io", "scope": "repository:library/nginx:pull",
			})},
		},
		{
			name:    "comma inside quotes, spaces, error param",
			headers: []string{`Bearer realm="https://r.example/token" , service="svc", scope="repository:a/b:pull,push", error="insufficient_scope"`},
			want: []auth.Challenge{bearer(map[string]string{
				"realm": "https://r.example/token", "service": "svc", "scope": "repository:a/b:pull,push", "error": "insufficient_scope",
			})},
		},
		{
			name:    "basic",
			headers: []string{`Basic realm="Registry Realm"`},
			want:    []auth.Challenge{basic(map[string]string{"realm": "Registry Realm"})},
		},
		{
			name:    "two challenges in one header, case and tokens",
			headers: []string{`BASIC Realm=simple, Bearer realm="https://t/x",service=reg`},
			want: []auth.Challenge{
				bearer(map[string]string{"realm": "https://t/x", "service": "reg"}),
				basic(map[string]string{"realm": "simple"}),
			},
		},
		{
			name:    "bearer first in one header, quoted comma before basic",
			headers: []string{`Bearer realm="https://t/x",scope="repository:a:pull,push", Basic realm="r"`},
			want: []auth.Challenge{
				bearer(map[string]string{"realm": "https://t/x", "scope": "repository:a:pull,push"}),
				basic(map[string]string{"realm": "r"}),
			},
		},
		{
			name:    "two headers",
			headers: []string{`Basic realm="a"`, `Bearer realm="b"`},
			want: []auth.Challenge{
				bearer(map[string]string{"realm": "b"}),
				basic(map[string]string{"realm": "a"}),
			},
		},
		{
			name:    "escaped quote",
			headers: []string{`Bearer realm="https://t/x",service="say \"hi\", ok"`},
			want:    []auth.Challenge{bearer(map[string]string{"realm": "https://t/x", "service": `say "hi", ok`})},
		},
		{
			name:    "unknown scheme dropped, the next one kept",
			headers: []string{`Negotiate, Basic realm="r"`},
			want:    []auth.Challenge{basic(map[string]string{"realm": "r"})},
		},
		{
			// An empty realm, which authorize skips.
			name:    "unterminated quote",
			headers: []string{`Bearer realm="https://t/x`},
			want:    []auth.Challenge{bearer(map[string]string{"realm": ""})},
		},
		{name: "empty", headers: []string{"", " , "}},
		{name: "garbage", headers: []string{`=== "x" Bearer realm="r"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{"Www-Authenticate": tt.headers}
			got := challenges(h)
			if len(got) == 0 && len(tt.want) == 0 {
				return
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("challenges(%q)\n got %#v\nwant %#v", tt.headers, got, tt.want)
			}
		})
	}
}
