package webhooks

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/pkg/hooks"
	"github.com/tagger-project/tagger/pkg/pins"
)

const waitTimeout = 30 * time.Second

// waitIndexed waits until the webhook manager's cache finds the Tag by image.
func waitIndexed(t *testing.T, name, image string) {
	t.Helper()
	ref, err := pins.ParseReference(image)
	if err != nil {
		t.Fatal(err)
	}
	rig.WaitFor(t, waitTimeout, "Tag "+name+" in the webhook cache", func() (bool, string) {
		var list v1alpha1.TagList
		if err := cluster.cached.List(context.Background(), &list, client.MatchingFields{hooks.ImageIndex: ref.String()}); err != nil {
			return false, err.Error()
		}
		for _, tag := range list.Items {
			if tag.Name == name {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d Tags for %s", len(list.Items), ref)
	})
}

// delivery is one webhook request.
type delivery struct {
	method      string // default POST
	path        string
	contentType string // default application/json
	header      map[string]string
	body        string
}

type answer struct {
	status int
	raw    string
	body   map[string]any
}

func post(t *testing.T, base string, d delivery) answer {
	t.Helper()
	method := d.method
	if method == "" {
		method = http.MethodPost
	}
	req, err := http.NewRequest(method, base+d.path, strings.NewReader(d.body))
	if err != nil {
		t.Fatal(err)
	}
	ct := d.contentType
	if ct == "" {
		ct = "application/json"
	}
	req.Header.Set("Content-Type", ct)
	for k, v := range d.header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, d.path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, raw: string(raw)}
	if err := json.Unmarshal(raw, &a.body); err != nil {
		t.Fatalf("%s: answer %d %q is not JSON: %v", d.path, a.status, raw, err)
	}
	return a
}

// Payloads, after the providers' documentation samples (Docker Hub webhooks
// page, Red Hat Quay "Repository Notifications", octokit/webhooks
// package/published.docker.payload.json, goharbor.io "Configure Webhook
// Notifications"), trimmed to what identifies them.

func dockerHubPayload(repoName, tag string) string {
	return fmt.Sprintf(`{
  "callback_url": "https://registry.hub.docker.com/u/svendowideit/testhook/hook/2141b5bi5i5b02bec211i4eeih0242eg11000a/",
  "push_data": {"pushed_at": 1417566161, "pusher": "trustedbuilder", "tag": %q},
  "repository": {
    "comment_count": 0, "date_created": 1417494799, "description": "", "is_official": false,
    "is_private": true, "is_trusted": true, "name": "testhook", "namespace": "svendowideit",
    "owner": "svendowideit", "repo_name": %q,
    "repo_url": "https://registry.hub.docker.com/u/svendowideit/testhook/", "star_count": 0, "status": "Active"
  }
}`, tag, repoName)
}

func quayPayload(dockerURL, tag string) string {
	return fmt.Sprintf(`{
  "name": "repository",
  "repository": "mynamespace/repository",
  "namespace": "mynamespace",
  "docker_url": %q,
  "homepage": "https://quay.io/repository/mynamespace/repository",
  "updated_tags": [%q]
}`, dockerURL, tag)
}

func githubPayload(owner, name, tag string) string {
	return fmt.Sprintf(`{
  "action": "published",
  "package": {
    "id": 10696, "name": %q, "namespace": "%s/hello-world", "description": null,
    "ecosystem": "docker", "package_type": "npm",
    "html_url": "https://github.com/Codertocat/hello-world/packages/10696",
    "owner": {"login": %q, "id": 21031067, "type": "User", "site_admin": false},
    "package_version": {
      "id": 57755790,
      "version": "sha256:3da1996a8115d7616457760d9920b815241d0a03b34cf5f04e9a0e9d8de37498",
      "name": "sha256:3da1996a8115d7616457760d9920b815241d0a03b34cf5f04e9a0e9d8de37498",
      "metadata": [],
      "container_metadata": {
        "tag": {"name": %q, "digest": "sha256:6c62fb45fe66bfb1ea9a66abc38f6a0cc974292b"},
        "labels": {"description": "Hello-World in a docker container"},
        "manifest": {"digest": "sha256:6c62fb45fe66bfb1ea9a66abc38f6a0cc974292b", "media_type": "application/vnd.docker.distribution.manifest.v2+json", "size": 1782}
      },
      "package_files": [],
      "package_url": "ghcr.io/Codertocat/hello-world:"
    },
    "registry": {"about_url": "https://docs.github.com/packages", "name": "GitHub CONTAINER registry", "type": "CONTAINER", "url": "https://CONTAINER.pkg.github.com/Codertocat", "vendor": "GitHub Inc"}
  },
  "sender": {"login": "Codertocat", "id": 21031067, "type": "User"}
}`, name, owner, owner, tag)
}

func harborPayload(resourceURL, tag, digest, repoFullName string) string {
	ns, name, _ := strings.Cut(repoFullName, "/")
	return fmt.Sprintf(`{
  "type": "PUSH_ARTIFACT",
  "occur_at": 1586922308,
  "operator": "admin",
  "event_data": {
    "resources": [{"digest": %q, "tag": %q, "resource_url": %q}],
    "repository": {"date_created": 1586922308, "name": %q, "namespace": %q, "repo_full_name": %q, "repo_type": "private"}
  }
}`, digest, tag, resourceURL, name, ns, repoFullName)
}

func genericPayload(image string) string { return fmt.Sprintf(`{"image": %q}`, image) }
