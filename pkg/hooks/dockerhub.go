package hooks

import (
	"strings"

	"github.com/tagger-project/tagger/pkg/pins"
)

// dockerHubPayload is the part of a Docker Hub webhook tagger reads
// (https://docs.docker.com/docker-hub/repos/manage/webhooks/).
type dockerHubPayload struct {
	CallbackURL string `json:"callback_url"`
	PushData    *struct {
		Tag string `json:"tag"`
	} `json:"push_data"`
	Repository *struct {
		RepoName string `json:"repo_name"`
	} `json:"repository"`
}

// parseDockerHub maps push_data.tag and repository.repo_name
// ("svendowideit/testhook"; an official image may be named "nginx" or
// "library/nginx") to <registry>/<repo_name>:<tag>.
func parseDockerHub(body []byte, reg Registries) (event, error) {
	var p dockerHubPayload
	if err := decodeJSON(body, &p); err != nil {
		return event{}, err
	}
	if p.PushData == nil || p.PushData.Tag == "" {
		return event{}, badPayload("missing push_data.tag")
	}
	if p.Repository == nil || p.Repository.RepoName == "" {
		return event{}, badPayload("missing repository.repo_name")
	}
	repo := p.Repository.RepoName
	if !strings.Contains(repo, "/") {
		// Official images live under library/ whatever host Docker Hub maps to.
		repo = "library/" + repo
	}
	ref, err := compose(reg.DockerHub, repo, p.PushData.Tag)
	if err != nil {
		return event{}, err
	}
	return event{refs: []pins.Reference{ref}, callbackURL: p.CallbackURL}, nil
}
