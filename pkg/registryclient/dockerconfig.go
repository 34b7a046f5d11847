package registryclient

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// CredentialsFromDockerConfig finds the credentials for registry (a host as
// in a normalized reference: "docker.io", "quay.io", "localhost:5000") in a
// kubernetes.io/dockerconfigjson payload. Keys are matched the way kubelet
// and the Docker CLI write them: with or without scheme and path
// ("https://index.docker.io/v1/", "http://host:port"), and every Docker Hub
// alias meets "docker.io". An entry's "auth" (base64 user:password) wins
// over its "username"/"password". found is false when no key matches.
// Errors never quote the payload.
func CredentialsFromDockerConfig(data []byte, registry string) (creds Credentials, found bool, err error) {
	var cfg struct {
		Auths map[string]struct {
			Auth     string `json:"auth"`
			Username string `json:"username"`
			Password string `json:"password"`
		} `json:"auths"`
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		return Credentials{}, false, errors.New("parse docker config: not valid JSON with an \"auths\" object")
	}
	want := normalizeRegistryKey(registry)

	// Prefer a key written exactly as asked, then the others in a stable order.
	keys := make([]string, 0, len(cfg.Auths))
	for k := range cfg.Auths {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if (keys[i] == registry) != (keys[j] == registry) {
			return keys[i] == registry
		}
		return keys[i] < keys[j]
	})
	for _, k := range keys {
		if normalizeRegistryKey(k) != want {
			continue
		}
		e := cfg.Auths[k]
		if e.Auth != "" {
			raw, err := decodeBase64(e.Auth)
			if err != nil {
				return Credentials{}, false, fmt.Errorf("parse docker config entry %q: auth is not valid base64", k)
			}
			user, pass, ok := strings.Cut(string(raw), ":")
			if !ok {
				return Credentials{}, false, fmt.Errorf("parse docker config entry %q: auth is not user:password", k)
			}
			return Credentials{Username: user, Password: pass}, true, nil
		}
		if e.Username != "" || e.Password != "" {
			return Credentials{Username: e.Username, Password: e.Password}, true, nil
		}
		return Credentials{}, false, fmt.Errorf("parse docker config entry %q: no auth or username/password", k)
	}
	return Credentials{}, false, nil
}

// normalizeRegistryKey reduces a docker config key or registry name to a
// lower-case host[:port], folding Docker Hub's aliases into docker.io.
func normalizeRegistryKey(k string) string {
	k = strings.TrimSpace(k)
	if _, rest, ok := strings.Cut(k, "://"); ok {
		k = rest
	}
	k, _, _ = strings.Cut(k, "/")
	k = strings.ToLower(k)
	switch k {
	case "docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com":
		return "docker.io"
	}
	return k
}

// decodeBase64 accepts padded and unpadded standard base64, both seen in
// the wild.
func decodeBase64(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if b, err := base64.StdEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	return base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
}
