package registryclient

import (
	"encoding/base64"
	"strings"
	"testing"
)

func TestCredentialsFromDockerConfig(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	cfg := `{"auths":{
		"https://index.docker.io/v1/": {"auth": "` + b64("hubuser:hubpass") + `"},
		"quay.io": {"username": "robot+x", "password": "quaypass"},
		"localhost:5000": {"auth": "` + b64("local:pa:ss") + `"},
		"http://10.0.0.1:8080/some/path": {"auth": "` + strings.TrimRight(b64("plain:p1"), "=") + `"},
		"GHCR.IO": {"auth": "` + b64("gh:tok") + `", "username": "ignored", "password": "ignored"}
	}}`
	tests := []struct {
		name     string
		data     string
		registry string
		want     Credentials
		found    bool
		wantErr  string
	}{
		{name: "docker.io via v1 url", data: cfg, registry: "docker.io", want: Credentials{"hubuser", "hubpass"}, found: true},
		{name: "hub api host alias", data: cfg, registry: "registry-1.docker.io", want: Credentials{"hubuser", "hubpass"}, found: true},
		{name: "username/password fields", data: cfg, registry: "quay.io", want: Credentials{"robot+x", "quaypass"}, found: true},
		{name: "host:port, colon in password", data: cfg, registry: "localhost:5000", want: Credentials{"local", "pa:ss"}, found: true},
		{name: "scheme and path stripped, unpadded base64", data: cfg, registry: "10.0.0.1:8080", want: Credentials{"plain", "p1"}, found: true},
		{name: "auth wins, case-insensitive", data: cfg, registry: "ghcr.io", want: Credentials{"gh", "tok"}, found: true},
		{name: "no match", data: cfg, registry: "gcr.io"},
		{name: "port matters", data: cfg, registry: "localhost:5001"},
		{name: "no auths", data: `{}`, registry: "docker.io"},
		{name: "exact key preferred", registry: "docker.io", found: true, want: Credentials{"exact", "1"},
			data: `{"auths":{"https://index.docker.io/v1/":{"auth":"` + b64("alias:2") + `"},"docker.io":{"auth":"` + b64("exact:1") + `"}}}`},
		{name: "bad json", data: `{"auths":`, registry: "docker.io", wantErr: "parse docker config"},
		{name: "bad base64", data: `{"auths":{"quay.io":{"auth":"!!!secret!!!"}}}`, registry: "quay.io", wantErr: "not valid base64"},
		{name: "no colon", data: `{"auths":{"quay.io":{"auth":"` + b64("justuser") + `"}}}`, registry: "quay.io", wantErr: "not user:password"},
		{name: "empty entry", data: `{"auths":{"quay.io":{}}}`, registry: "quay.io", wantErr: "no auth"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, found, err := CredentialsFromDockerConfig([]byte(tt.data), tt.registry)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), "justuser") {
					t.Errorf("error leaks the payload: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want || found != tt.found {
				t.Errorf("got %+v, %v; want %+v, %v", got, found, tt.want, tt.found)
			}
		})
	}
}
