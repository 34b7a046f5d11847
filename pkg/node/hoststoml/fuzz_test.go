package hoststoml

import (
	"strings"
	"testing"
	"time"
)

// FuzzParseBase: the hosts.toml reader never panics on any file, and a file
// it accepts renders into a hosts.toml that it (and so containerd, whose
// decoding it mirrors) reads back, with the mirror as the first host and
// the previous hosts after it.
func FuzzParseBase(f *testing.F) {
	for _, s := range []string{
		"",
		`server = "https://registry-1.docker.io"`,
		"server = \"https://r.example\"\nca = \"/etc/ca.crt\"\n\n[host.\"https://m.example\"]\n  capabilities = [\"pull\"]\n  skip_verify = true\n",
		"[host.\"http://a\"]\n[host.\"http://b\"]\n  header = {X = [\"1\"]}\n",
		"[host.\"http://a\"]\n  client = [[\"/c.cert\", \"/c.key\"]]\n  dial_timeout = \"1s\"\n",
		"server = 1",
		"[host]\nx = 1\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		bs, err := parseBase(b)
		if err != nil {
			return
		}
		const mirror = "http://127.0.0.1:5050"
		out, err := render(entry{registry: "docker.io", mirror: mirror, dialTimeout: 200 * time.Millisecond, base: bs})
		if err != nil {
			return // a value the encoder cannot write: refused, not written
		}
		back, err := parseBase(out)
		if err != nil {
			t.Fatalf("rendered file does not parse: %v\n%s", err, out)
		}
		if len(back.hosts) == 0 || back.hosts[0].name != mirror {
			t.Fatalf("mirror is not the first host:\n%s", out)
		}
		for i, h := range bs.hosts {
			if h.name == mirror {
				continue
			}
			found := false
			for _, bh := range back.hosts[1:] {
				found = found || bh.name == h.name
			}
			if !found {
				t.Fatalf("previous host %d %q lost:\n%s", i, h.name, out)
			}
		}
		if !strings.HasPrefix(string(out), marker) {
			t.Fatal("no marker")
		}
	})
}
