package hooks

import (
	"slices"
	"strconv"
	"strings"
	"testing"
)

// parseCase is one payload and what it must parse to: the images (normalized
// strings), or ignored, or a 400 whose message contains wantErr.
type parseCase struct {
	name     string
	body     string
	want     []string
	ignored  bool
	wantErr  string
	callback string
}

func checkParse(t *testing.T, c parseCase, ev event, err error) {
	t.Helper()
	if c.wantErr != "" {
		if err == nil {
			t.Fatalf("parsed to %+v, want error containing %q", ev, c.wantErr)
		}
		if !isPayloadError(err) {
			t.Fatalf("error %v is not a payload error (400)", err)
		}
		if !strings.Contains(err.Error(), c.wantErr) {
			t.Fatalf("error %q does not contain %q", err, c.wantErr)
		}
		return
	}
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if c.ignored != (ev.ignored != "") {
		t.Fatalf("ignored = %q, want ignored %v", ev.ignored, c.ignored)
	}
	got := make([]string, len(ev.refs))
	for i, r := range ev.refs {
		got[i] = r.String()
	}
	if !slices.Equal(got, c.want) {
		t.Fatalf("images = %v, want %v", got, c.want)
	}
	if ev.callbackURL != c.callback {
		t.Fatalf("callback = %q, want %q", ev.callbackURL, c.callback)
	}
}

var defaultRegistries = Registries{}.withDefaults()

func TestParseDockerHub(t *testing.T) {
	cases := []parseCase{
		{name: "docs sample", body: dockerHubSample("svendowideit/testhook", "latest", dockerHubCallbackURL),
			want: []string{"docker.io/svendowideit/testhook:latest"}, callback: dockerHubCallbackURL},
		{name: "official image without library/", body: dockerHubSample("nginx", "1.27", ""),
			want: []string{"docker.io/library/nginx:1.27"}},
		{name: "official image with library/", body: dockerHubSample("library/nginx", "1.27", ""),
			want: []string{"docker.io/library/nginx:1.27"}},
		{name: "no callback_url", body: `{"push_data":{"tag":"v1"},"repository":{"repo_name":"a/b"}}`,
			want: []string{"docker.io/a/b:v1"}},
		{name: "missing push_data", body: `{"repository":{"repo_name":"a/b"}}`, wantErr: "missing push_data.tag"},
		{name: "empty tag", body: dockerHubSample("a/b", "", ""), wantErr: "missing push_data.tag"},
		{name: "missing repository", body: `{"push_data":{"tag":"v1"}}`, wantErr: "missing repository.repo_name"},
		{name: "tag is a number", body: `{"push_data":{"tag":1},"repository":{"repo_name":"a/b"}}`, wantErr: "malformed JSON"},
		{name: "repository is a string", body: `{"push_data":{"tag":"v"},"repository":"a/b"}`, wantErr: "malformed JSON"},
		{name: "uppercase repository", body: dockerHubSample("Svendowideit/testhook", "v1", ""), wantErr: "invalid image"},
		{name: "digest smuggled into tag", body: dockerHubSample("a/b", "v1@sha256:"+strings.Repeat("0", 64), ""), wantErr: "invalid image"},
		{name: "tag smuggled into repository", body: dockerHubSample("a/b:v2", "v1", ""), wantErr: "invalid image"},
		{name: "host smuggled into repository", body: dockerHubSample("evil.example.com:5000/a", "v1", ""), wantErr: "invalid image"},
		{name: "truncated", body: `{"push_data":{"tag":"v1"`, wantErr: "malformed JSON"},
		{name: "trailing data", body: `{"push_data":{"tag":"v1"},"repository":{"repo_name":"a/b"}} {}`, wantErr: "data after"},
		{name: "array", body: `[]`, wantErr: "malformed JSON"},
		{name: "null", body: `null`, wantErr: "missing push_data.tag"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ev, err := parseDockerHub([]byte(c.body), defaultRegistries)
			checkParse(t, c, ev, err)
		})
	}
	t.Run("mapped registry", func(t *testing.T) {
		ev, err := parseDockerHub([]byte(dockerHubSample("nginx", "1.27", "")), Registries{DockerHub: "127.0.0.1:5000"}.withDefaults())
		checkParse(t, parseCase{want: []string{"127.0.0.1:5000/library/nginx:1.27"}}, ev, err)
	})
}

func TestParseQuay(t *testing.T) {
	cases := []parseCase{
		{name: "docs sample", body: quaySample("quay.io/mynamespace/repository", `["latest"]`),
			want: []string{"quay.io/mynamespace/repository:latest"}},
		{name: "several tags, sorted and deduplicated", body: quaySample("quay.io/ns/app", `["v2","v1","v2"]`),
			want: []string{"quay.io/ns/app:v1", "quay.io/ns/app:v2"}},
		{name: "legacy object form", body: quayLegacySample, want: []string{"quay.io/devtable/ubuntu:latest"}},
		{name: "self-hosted Quay keeps its host", body: quaySample("quay.example.com/team/app", `["v1"]`),
			want: []string{"quay.example.com/team/app:v1"}},
		{name: "repository without docker_url", body: `{"repository":"ns/app","updated_tags":["v1"]}`,
			want: []string{"quay.io/ns/app:v1"}},
		{name: "missing updated_tags", body: `{"docker_url":"quay.io/ns/app"}`, wantErr: "missing updated_tags"},
		{name: "null updated_tags", body: `{"docker_url":"quay.io/ns/app","updated_tags":null}`, wantErr: "missing updated_tags"},
		{name: "empty updated_tags", body: quaySample("quay.io/ns/app", `[]`), wantErr: "updated_tags is empty"},
		{name: "updated_tags of numbers", body: quaySample("quay.io/ns/app", `[1,2]`), wantErr: "updated_tags: want"},
		{name: "updated_tags a string", body: quaySample("quay.io/ns/app", `"latest"`), wantErr: "updated_tags: want"},
		{name: "empty tag name", body: quaySample("quay.io/ns/app", `[""]`), wantErr: "no tag"},
		{name: "missing docker_url and repository", body: `{"updated_tags":["v1"]}`, wantErr: "missing docker_url and repository"},
		{name: "docker_url without repository", body: quaySample("quay.io", `["v1"]`), wantErr: "is not <host>/<repository>"},
		// A scheme makes the host "https:", which is not a registry.
		{name: "docker_url with scheme", body: quaySample("https://quay.io/ns/app", `["v1"]`), wantErr: "invalid image"},
		{name: "malformed", body: `{"docker_url":`, wantErr: "malformed JSON"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ev, err := parseQuay([]byte(c.body), defaultRegistries)
			checkParse(t, c, ev, err)
		})
	}
	t.Run("too many tags", func(t *testing.T) {
		tags := make([]string, maxRefsPerDelivery+1)
		for i := range tags {
			tags[i] = `"t` + strconv.Itoa(i) + `"`
		}
		_, err := parseQuay([]byte(quaySample("quay.io/ns/app", "["+strings.Join(tags, ",")+"]")), defaultRegistries)
		checkParse(t, parseCase{wantErr: "at most"}, event{}, err)
	})
	t.Run("quay.io mapped", func(t *testing.T) {
		ev, err := parseQuay([]byte(quaySample("quay.io/ns/app", `["v1"]`)), Registries{Quay: "127.0.0.1:5000"}.withDefaults())
		checkParse(t, parseCase{want: []string{"127.0.0.1:5000/ns/app:v1"}}, ev, err)
	})
}

func TestParseGitHub(t *testing.T) {
	type ghCase struct {
		parseCase
		event string
	}
	cases := []ghCase{
		{event: "package", parseCase: parseCase{name: "package published", body: githubSample("package", "published", "Codertocat", "hello-world", "latest"),
			want: []string{"ghcr.io/codertocat/hello-world:latest"}}},
		{event: "registry_package", parseCase: parseCase{name: "registry_package published", body: githubSample("registry_package", "published", "Codertocat", "hello-world", "v1.2"),
			want: []string{"ghcr.io/codertocat/hello-world:v1.2"}}},
		{event: "package", parseCase: parseCase{name: "nested package name, escaped", body: githubSample("package", "published", "octo-org", "app%2Fworker", "v1"),
			want: []string{"ghcr.io/octo-org/app/worker:v1"}}},
		{event: "package", parseCase: parseCase{name: "untagged version (the sample as published)", body: githubSample("package", "published", "Codertocat", "hello-world", ""),
			ignored: true}},
		{event: "package", parseCase: parseCase{name: "tag that is a digest", body: githubSample("package", "published", "Codertocat", "hello-world", "sha256:abc"),
			ignored: true}},
		{event: "package", parseCase: parseCase{name: "updated action", body: githubSample("package", "updated", "Codertocat", "hello-world", "latest"),
			ignored: true}},
		{event: "package", parseCase: parseCase{name: "npm package", body: githubNPMSample, ignored: true}},
		{event: "ping", parseCase: parseCase{name: "ping", body: githubPingSample, ignored: true}},
		{event: "push", parseCase: parseCase{name: "other event", body: `{}`, wantErr: "unsupported GitHub event"}},
		{event: "", parseCase: parseCase{name: "no event header", body: `{}`, wantErr: "missing X-GitHub-Event"}},
		{event: "package", parseCase: parseCase{name: "registry_package body under package event", body: githubSample("registry_package", "published", "o", "n", "v1"),
			wantErr: "missing package"}},
		{event: "package", parseCase: parseCase{name: "missing action", body: `{"package":{"name":"n","package_type":"container","owner":{"login":"o"}}}`,
			wantErr: "missing action"}},
		{event: "package", parseCase: parseCase{name: "missing container_metadata", body: `{"action":"published","package":{"name":"n","package_type":"CONTAINER","owner":{"login":"o"},"package_version":{}}}`,
			wantErr: "missing package.package_version.container_metadata"}},
		{event: "package", parseCase: parseCase{name: "missing name", body: `{"action":"published","package":{"package_type":"container","owner":{"login":"o"}}}`,
			wantErr: "missing package.name"}},
		{event: "package", parseCase: parseCase{name: "owner from namespace", body: `{"action":"published","package":{"name":"n","namespace":"Org","package_type":"container","package_version":{"container_metadata":{"tag":{"name":"v1"}}}}}`,
			want: []string{"ghcr.io/org/n:v1"}}},
		{event: "package", parseCase: parseCase{name: "no owner at all", body: `{"action":"published","package":{"name":"n","package_type":"container","package_version":{"container_metadata":{"tag":{"name":"v1"}}}}}`,
			wantErr: "missing package.owner.login"}},
		{event: "package", parseCase: parseCase{name: "malformed", body: `{"action":"published",`, wantErr: "malformed JSON"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ev, err := parseGitHub(c.event, []byte(c.body), defaultRegistries)
			checkParse(t, c.parseCase, ev, err)
		})
	}
}

func TestParseHarbor(t *testing.T) {
	res := func(tag, url string) string { return "[" + harborResourceJSON(harborDigest, tag, url) + "]" }
	cases := []parseCase{
		{name: "docs sample", body: harborSample("PUSH_ARTIFACT", res("latest", "hub.harbor.com/test-webhook/debian:latest"), "test-webhook/debian"),
			want: []string{"hub.harbor.com/test-webhook/debian:latest"}},
		{name: "Harbor 1.x pushImage", body: harborSample("pushImage", res("v1.0", "harbor.example.com/library/busybox:v1.0"), "library/busybox"),
			want: []string{"harbor.example.com/library/busybox:v1.0"}},
		{name: "host with port", body: harborSample("PUSH_ARTIFACT", res("1.27", "harbor.example.com:8443/library/nginx:1.27"), "library/nginx"),
			want: []string{"harbor.example.com:8443/library/nginx:1.27"}},
		{name: "resource_url without tag", body: harborSample("PUSH_ARTIFACT", res("1.27", "harbor.example.com/library/nginx"), "library/nginx"),
			want: []string{"harbor.example.com/library/nginx:1.27"}},
		{name: "several resources", body: harborSample("PUSH_ARTIFACT", "["+harborResourceJSON(harborDigest, "a", "h.example.com/p/r:a")+","+harborResourceJSON(harborDigest, "b", "h.example.com/p/r:b")+"]", "p/r"),
			want: []string{"h.example.com/p/r:a", "h.example.com/p/r:b"}},
		{name: "pushed by digest (docs sample)", body: harborSample("PUSH_ARTIFACT", res(harborDigest, "localhost/harbor/alpine@"+harborDigest), "harbor/alpine"),
			ignored: true},
		{name: "other event type", body: harborSample("DELETE_ARTIFACT", res("latest", "hub.harbor.com/test-webhook/debian:latest"), "test-webhook/debian"),
			ignored: true},
		{name: "tag without resource_url and no Harbor host", body: harborSample("PUSH_ARTIFACT", res("v1", ""), "p/r"),
			wantErr: "no Harbor registry host configured"},
		{name: "tags disagree", body: harborSample("PUSH_ARTIFACT", res("v2", "h.example.com/p/r:v1"), "p/r"), wantErr: "disagrees"},
		{name: "missing type", body: `{"event_data":{"resources":[{"tag":"v1","resource_url":"h.example.com/p/r:v1"}]}}`, wantErr: "missing type"},
		{name: "missing event_data", body: `{"type":"PUSH_ARTIFACT"}`, wantErr: "missing event_data"},
		{name: "no resources", body: harborSample("PUSH_ARTIFACT", `[]`, "p/r"), wantErr: "missing event_data.resources"},
		{name: "resource_url without host", body: harborSample("PUSH_ARTIFACT", res("v1", "nginx:v1"), "p/r"), wantErr: "is not <host>"},
		{name: "resource_url host not a registry", body: harborSample("PUSH_ARTIFACT", res("v1", "harbor/p/r:v1"), "p/r"), wantErr: "invalid image"},
		{name: "resources not a list", body: harborSample("PUSH_ARTIFACT", `{}`, "p/r"), wantErr: "malformed JSON"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ev, err := parseHarbor([]byte(c.body), defaultRegistries)
			checkParse(t, c, ev, err)
		})
	}
	t.Run("tag and repo_full_name with a configured host", func(t *testing.T) {
		body := harborSample("PUSH_ARTIFACT", res("v1", ""), "library/nginx")
		ev, err := parseHarbor([]byte(body), Registries{Harbor: "harbor.example.com"}.withDefaults())
		checkParse(t, parseCase{want: []string{"harbor.example.com/library/nginx:v1"}}, ev, err)
	})
}

func TestParseGeneric(t *testing.T) {
	cases := []parseCase{
		{name: "full reference", body: genericSample("registry.example.com/team/app:v1"), want: []string{"registry.example.com/team/app:v1"}},
		{name: "short name normalized", body: genericSample("nginx"), want: []string{"docker.io/library/nginx:latest"}},
		{name: "digest refused", body: genericSample("nginx@sha256:" + strings.Repeat("a", 64)), wantErr: "names a digest"},
		{name: "invalid", body: genericSample("Not A Ref"), wantErr: "invalid image"},
		{name: "missing image", body: `{"ref":"nginx"}`, wantErr: "missing image"},
		{name: "image not a string", body: `{"image":["nginx"]}`, wantErr: "malformed JSON"},
		{name: "with a push id", body: `{"image":"nginx:1.27","id":"run-4711"}`, want: []string{"docker.io/library/nginx:1.27"}},
		{name: "id not a string", body: `{"image":"nginx","id":4711}`, wantErr: "malformed JSON"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ev, err := parseGeneric([]byte(c.body))
			checkParse(t, c, ev, err)
		})
	}
}

func TestCompose(t *testing.T) {
	cases := []struct {
		reg, repo, tag string
		want           string // "" = error
	}{
		{"docker.io", "library/nginx", "1", "docker.io/library/nginx:1"},
		{"index.docker.io", "nginx", "1", "docker.io/library/nginx:1"},
		{"127.0.0.1:5000", "a/b", "v", "127.0.0.1:5000/a/b:v"},
		{"localhost", "a", "v", "localhost/a:v"},
		{"harbor", "p/r", "v", ""},      // not a registry host: would mean docker.io/harbor/p/r
		{"docker.io", "a/b", "v:w", ""}, // tag with a colon
		{"docker.io", "a/b@x", "v", ""}, // digest marker
		{"docker.io", "a//b", "v", ""},  // empty path component
		{"docker.io", "a/b", "", ""},    // no tag
		{"", "a/b", "v", ""},            // no host
		{"q.io", "A/b", "v", ""},        // upper case repository
		{"q.io", "a/b", "-v", ""},       // tag must not start with '-'
		{"q.io", "a/b", strings.Repeat("v", 129), ""},
	}
	for _, c := range cases {
		ref, err := compose(c.reg, c.repo, c.tag)
		if c.want == "" {
			if err == nil {
				t.Errorf("compose(%q, %q, %q) = %s, want error", c.reg, c.repo, c.tag, ref)
			}
			continue
		}
		if err != nil || ref.String() != c.want {
			t.Errorf("compose(%q, %q, %q) = %s, %v; want %s", c.reg, c.repo, c.tag, ref, err, c.want)
		}
	}
}
