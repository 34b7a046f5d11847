package hooks

import (
	"fmt"
	"strings"
)

// Payload fixtures, built from the providers' documentation samples. Fields
// tagger does not read are kept where they make the sample recognisable and
// dropped where they are only bulk (GitHub's 60 *_url fields).

// dockerHubSample is docs.docker.com's "Example webhook payload".
func dockerHubSample(repoName, tag, callbackURL string) string {
	return fmt.Sprintf(`{
  "callback_url": %q,
  "push_data": {
    "pushed_at": 1417566161,
    "pusher": "trustedbuilder",
    "tag": %q
  },
  "repository": {
    "comment_count": 0,
    "date_created": 1417494799,
    "description": "",
    "dockerfile": "#\n# BUILD\u0009\u0009docker build -t svendowideit/apt-cacher .\n#",
    "full_description": "Docker Hub based automated build from a GitHub repo",
    "is_official": false,
    "is_private": true,
    "is_trusted": true,
    "name": "testhook",
    "namespace": "svendowideit",
    "owner": "svendowideit",
    "repo_name": %q,
    "repo_url": "https://registry.hub.docker.com/u/svendowideit/testhook/",
    "star_count": 0,
    "status": "Active"
  }
}`, callbackURL, tag, repoName)
}

const dockerHubCallbackURL = "https://registry.hub.docker.com/u/svendowideit/testhook/hook/2141b5bi5i5b02bec211i4eeih0242eg11000a/"

// quaySample is Quay's "Repository Push" notification (Red Hat Quay docs,
// "Repository Notifications"); updatedTags is spliced in raw so the old
// object form can be tested too.
func quaySample(dockerURL, updatedTags string) string {
	return fmt.Sprintf(`{
  "name": "repository",
  "repository": "mynamespace/repository",
  "namespace": "mynamespace",
  "docker_url": %q,
  "homepage": "https://quay.io/repository/mynamespace/repository",
  "updated_tags": %s
}`, dockerURL, updatedTags)
}

// quayLegacySample is the older Quay push payload (quay.io's 2013 example),
// with updated_tags mapping tag names to image ids.
const quayLegacySample = `{
  "pushed_image_count": 2,
  "name": "ubuntu",
  "repository": "devtable/ubuntu",
  "docker_url": "quay.io/devtable/ubuntu",
  "updated_tags": {
    "latest": "b750fe79269d2ec9a3c593ef05b4332b1d1a02a62b4accb2c21d589ff2f5f2dc"
  },
  "namespace": "devtable",
  "visibility": "private",
  "homepage": "https://quay.io/repository/devtable/ubuntu"
}`

// githubSample is GitHub's "package published" container example
// (octokit/webhooks payload-examples, package/published.docker.payload.json)
// with its quirks kept: "namespace" is owner/repository, "package_type" says
// npm while registry.type says CONTAINER. key is "package" or
// "registry_package"; tag "" is the sample as published (untagged).
func githubSample(key, action, owner, name, tag string) string {
	return fmt.Sprintf(`{
  "action": %q,
  %q: {
    "id": 10696,
    "name": %q,
    "namespace": "%s/hello-world",
    "description": null,
    "ecosystem": "docker",
    "package_type": "npm",
    "html_url": "https://github.com/Codertocat/hello-world/packages/10696",
    "created_at": "2019-05-09T23:28:29Z",
    "updated_at": "2019-05-09T23:28:29Z",
    "owner": {"login": %q, "id": 21031067, "type": "User", "site_admin": false},
    "package_version": {
      "id": 57755790,
      "version": "sha256:3da1996a8115d7616457760d9920b815241d0a03b34cf5f04e9a0e9d8de37498",
      "name": "sha256:3da1996a8115d7616457760d9920b815241d0a03b34cf5f04e9a0e9d8de37498",
      "description": "Hello-World in a docker container",
      "summary": "Hello-World in a docker container",
      "manifest": "",
      "html_url": "https://github.com/Codertocat/container/hello-world/10696",
      "target_commitish": "master",
      "target_oid": "6c62fb45fe66bfb1ea9a66abc38f6a0cc974292b",
      "created_at": "0001-01-01T00:00:00Z",
      "updated_at": "0001-01-01T00:00:00Z",
      "metadata": [],
      "container_metadata": {
        "tag": {"name": %q, "digest": "sha256:6c62fb45fe66bfb1ea9a66abc38f6a0cc974292b"},
        "labels": {"description": "Hello-World in a docker container", "source": "https://github.com/Codertocat/hello-world"},
        "manifest": {
          "digest": "sha256:6c62fb45fe66bfb1ea9a66abc38f6a0cc974292b",
          "media_type": "application/vnd.docker.distribution.manifest.v2+json",
          "size": 1782
        }
      },
      "package_files": [],
      "installation_command": "docker pull ghcr.io/Codertocat/hello-world:",
      "package_url": "ghcr.io/Codertocat/hello-world:"
    },
    "registry": {
      "about_url": "https://docs.github.com/packages/learn-github-packages/introduction-to-github-packages",
      "name": "GitHub CONTAINER registry",
      "type": "CONTAINER",
      "url": "https://CONTAINER.pkg.github.com/Codertocat",
      "vendor": "GitHub Inc"
    }
  },
  "repository": {"id": 185882436, "name": "hello-world", "full_name": "Codertocat/hello-world", "private": true},
  "sender": {"login": "Codertocat", "id": 21031067, "type": "User"}
}`, action, key, name, owner, owner, tag)
}

// githubNPMSample is GitHub's npm "package published" example, trimmed: no
// container_metadata, registry.type npm.
const githubNPMSample = `{
  "action": "published",
  "package": {
    "id": 10696,
    "name": "hello-world-npm",
    "namespace": "Codertocaat/hello-world-npm",
    "ecosystem": "docker",
    "package_type": "npm",
    "owner": {"login": "Codertocat"},
    "package_version": {"id": 24147, "version": "1.0.0", "metadata": [], "docker_metadata": []},
    "registry": {"about_url": "https://help.github.com/about-github-packages", "name": "GitHub npm registry", "type": "npm", "url": "https://npm.pkg.github.com/@Codertocat", "vendor": "GitHub Inc"}
  }
}`

// githubPingSample is the start of GitHub's ping event.
const githubPingSample = `{"zen": "Keep it logically awesome.", "hook_id": 123, "hook": {"type": "Repository", "id": 123, "events": ["package"]}}`

// harborSample is Harbor's "Default" PUSH_ARTIFACT payload (goharbor.io,
// "Configure Webhook Notifications"); resources is spliced in raw.
func harborSample(typ, resources, repoFullName string) string {
	ns, name, _ := strings.Cut(repoFullName, "/")
	return fmt.Sprintf(`{
  "type": %q,
  "occur_at": 1586922308,
  "operator": "admin",
  "event_data": {
    "resources": %s,
    "repository": {
      "date_created": 1586922308,
      "name": %q,
      "namespace": %q,
      "repo_full_name": %q,
      "repo_type": "private"
    }
  }
}`, typ, resources, name, ns, repoFullName)
}

// harborResourceJSON is one entry of event_data.resources.
func harborResourceJSON(digest, tag, resourceURL string) string {
	return fmt.Sprintf(`{"digest": %q, "tag": %q, "resource_url": %q}`, digest, tag, resourceURL)
}

const harborDigest = "sha256:8a9e9863dbb6e10edb5adfe917c00da84e1700fa76e7ed02476aa6e6fb8ee0d8"

// genericSample is what a CI step posts.
func genericSample(image string) string { return fmt.Sprintf(`{"image": %q}`, image) }
