package registryclient

import (
	"reflect"
	"testing"
)

func TestParseChallenges(t *testing.T) {
	tests := []struct {
		name    string
		headers []string
		want    []challenge
	}{
		{
			name:    "docker hub bearer",
			headers: []string{`Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"`},
			want: []challenge{{Scheme: "bearer", Params: map[string]string{
				"realm": "https://auth.docker.io/token", "service": "registry.docker.io", "scope": "repository:library/nginx:pull",
			}}},
		},
		{
			name:    "comma inside quotes, spaces, error param",
			headers: []string{`Bearer realm="https://r.example/token" , service="svc", scope="repository:a/b:pull,push", error="insufficient_scope"`},
			want: []challenge{{Scheme: "bearer", Params: map[string]string{
				"realm": "https://r.example/token", "service": "svc", "scope": "repository:a/b:pull,push", "error": "insufficient_scope",
			}}},
		},
		{
			name:    "basic",
			headers: []string{`Basic realm="Registry Realm"`},
			want:    []challenge{{Scheme: "basic", Params: map[string]string{"realm": "Registry Realm"}}},
		},
		{
			name:    "two challenges in one header, case and tokens",
			headers: []string{`BASIC Realm=simple, Bearer realm="https://t/x",service=reg`},
			want: []challenge{
				{Scheme: "basic", Params: map[string]string{"realm": "simple"}},
				{Scheme: "bearer", Params: map[string]string{"realm": "https://t/x", "service": "reg"}},
			},
		},
		{
			name:    "two headers",
			headers: []string{`Basic realm="a"`, `Bearer realm="b"`},
			want: []challenge{
				{Scheme: "basic", Params: map[string]string{"realm": "a"}},
				{Scheme: "bearer", Params: map[string]string{"realm": "b"}},
			},
		},
		{
			name:    "escaped quote",
			headers: []string{`Bearer realm="https://t/x",service="say \"hi\", ok"`},
			want:    []challenge{{Scheme: "bearer", Params: map[string]string{"realm": "https://t/x", "service": `say "hi", ok`}}},
		},
		{
			name:    "scheme without params",
			headers: []string{`Negotiate`},
			want:    []challenge{{Scheme: "negotiate", Params: map[string]string{}}},
		},
		{
			name:    "unterminated quote",
			headers: []string{`Bearer realm="https://t/x`},
			want:    []challenge{{Scheme: "bearer", Params: map[string]string{"realm": "https://t/x"}}},
		},
		{name: "empty", headers: []string{"", " , "}, want: nil},
		{
			name:    "garbage does not loop",
			headers: []string{`=== "x" Bearer realm="r"`},
			want: []challenge{
				{Scheme: "x", Params: map[string]string{}},
				{Scheme: "bearer", Params: map[string]string{"realm": "r"}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := parseChallenges(tt.headers)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("parseChallenges(%q)\n got %#v\nwant %#v", tt.headers, got, tt.want)
			}
		})
	}
}
