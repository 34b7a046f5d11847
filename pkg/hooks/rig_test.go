package hooks

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sirupsen/logrus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/pkg/controller/tagindex"
)

// Test secrets, distinctive so that a leak into logs or metrics is found by
// a plain substring search.
var testSecrets = Secrets{
	DockerHub: "dh-Secret-7f3a9c",
	Quay:      "quay-Secret-81be2d",
	GitHub:    "gh-Secret-c0ffee",
	Harbor:    "Bearer harbor-Secret-5e5e5e",
	Generic:   "generic-Secret-424242",
}

func allSecrets(s Secrets) []string {
	return []string{s.DockerHub, s.Quay, s.GitHub, s.Harbor, s.Generic}
}

// rig is a Server on a fake client with the image index, served by a real
// loopback HTTP server, its worker running.
type rig struct {
	t      *testing.T
	c      client.WithWatch
	srv    *Server
	url    string
	reg    *prometheus.Registry
	logBuf *syncBuffer

	mu     sync.Mutex
	checks []CheckRequest
	seen   chan CheckRequest
}

type rigOptions struct {
	opts        Options
	tags        []*v1alpha1.Tag
	interceptor *interceptor.Funcs
	noRun       bool
}

func newTag(name, image string) *v1alpha1.Tag {
	return &v1alpha1.Tag{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.TagSpec{Image: image}}
}

func newRig(t *testing.T, ro rigOptions) *rig {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	b := fake.NewClientBuilder().WithScheme(scheme).WithIndex(&v1alpha1.Tag{}, ImageIndex, tagindex.ImageValue)
	for _, tag := range ro.tags {
		b = b.WithObjects(tag)
	}
	if ro.interceptor != nil {
		b = b.WithInterceptorFuncs(*ro.interceptor)
	}
	r := &rig{t: t, c: b.Build(), reg: prometheus.NewRegistry(), logBuf: &syncBuffer{}, seen: make(chan CheckRequest, 1000)}
	log := logrus.New()
	log.SetOutput(r.logBuf)
	log.SetFormatter(&logrus.JSONFormatter{})
	log.SetLevel(logrus.DebugLevel)

	o := ro.opts
	o.Client = r.c
	o.Log = log
	o.Metrics = r.reg
	if o.Secrets == (Secrets{}) {
		o.Secrets = testSecrets
	}
	if o.Coalesce == 0 {
		o.Coalesce = 20 * time.Millisecond
	}
	o.OnCheckRequested = func(cr CheckRequest) {
		r.mu.Lock()
		r.checks = append(r.checks, cr)
		r.mu.Unlock()
		r.seen <- cr
	}
	srv, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	r.srv = srv
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	r.url = hs.URL
	if !ro.noRun {
		r.run()
	}
	return r
}

// run starts the worker until the test ends.
func (r *rig) run() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.srv.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					r.t.Errorf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				r.t.Errorf("Run did not return after cancel")
			}
		})
	}
	r.t.Cleanup(stop)
	return stop
}

// request is one HTTP request to the server.
type request struct {
	method      string
	path        string
	contentType string // "-" for none; "" means application/json
	header      map[string]string
	body        string
	chunked     bool // send without Content-Length
}

type response struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (r *rig) do(req request) response {
	r.t.Helper()
	method := req.method
	if method == "" {
		method = http.MethodPost
	}
	var body io.Reader = strings.NewReader(req.body)
	if req.chunked {
		body = io.MultiReader(strings.NewReader(req.body)) // hides the length
	}
	hr, err := http.NewRequest(method, r.url+req.path, body)
	if err != nil {
		r.t.Fatal(err)
	}
	switch req.contentType {
	case "":
		hr.Header.Set("Content-Type", "application/json")
	case "-":
	default:
		hr.Header.Set("Content-Type", req.contentType)
	}
	for k, v := range req.header {
		hr.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		r.t.Fatalf("%s %s: %v", method, req.path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := response{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		r.t.Fatalf("%s %s: Content-Type %q, want application/json", method, req.path, ct)
	}
	if err := json.Unmarshal(raw, &out.body); err != nil {
		r.t.Fatalf("%s %s: answer %q is not a JSON object: %v", method, req.path, raw, err)
	}
	return out
}

// waitCheck waits for the next requested check.
func (r *rig) waitCheck(timeout time.Duration) CheckRequest {
	r.t.Helper()
	select {
	case cr := <-r.seen:
		return cr
	case <-time.After(timeout):
		r.t.Fatalf("no check requested within %v", timeout)
		return CheckRequest{}
	}
}

func (r *rig) checkCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.checks)
}

func (r *rig) tag(name string) *v1alpha1.Tag {
	r.t.Helper()
	var tag v1alpha1.Tag
	if err := r.c.Get(context.Background(), client.ObjectKey{Name: name}, &tag); err != nil {
		r.t.Fatalf("get Tag %s: %v", name, err)
	}
	return &tag
}

// versions maps every Tag to its resourceVersion.
func (r *rig) versions() map[string]string {
	r.t.Helper()
	var list v1alpha1.TagList
	if err := r.c.List(context.Background(), &list); err != nil {
		r.t.Fatal(err)
	}
	out := map[string]string{}
	for _, t := range list.Items {
		out[t.Name] = t.ResourceVersion
	}
	return out
}

func (r *rig) webhooks(provider string, res result) int {
	return int(testutil.ToFloat64(r.srv.metrics.webhooks.WithLabelValues(provider, string(res))))
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Requests that succeed against the rig's default Tags, one per provider.
func goodRequests() map[string]request {
	gh := githubSample("package", "published", "Octo-Org", "app", "v1")
	return map[string]request{
		ProviderDockerHub: {path: "/hooks/dockerhub/" + testSecrets.DockerHub, body: dockerHubSample("library/nginx", "1.27", "")},
		ProviderQuay:      {path: "/hooks/quay/" + testSecrets.Quay, body: quaySample("quay.io/team/api", `["v2"]`)},
		ProviderGitHub: {path: "/hooks/github", body: gh, header: map[string]string{
			"X-GitHub-Event": "package", "X-Hub-Signature-256": Signature([]byte(gh), testSecrets.GitHub)}},
		ProviderHarbor: {path: "/hooks/harbor", header: map[string]string{"Authorization": testSecrets.Harbor},
			body: harborSample("PUSH_ARTIFACT", "["+harborResourceJSON(harborDigest, "1.0", "harbor.example.com/proj/svc:1.0")+"]", "proj/svc")},
		ProviderGeneric: {path: "/hooks/generic/" + testSecrets.Generic, body: genericSample("registry.example.com/ci/tool:main")},
	}
}

// defaultTags are one Tag per provider, plus a bystander.
func defaultTags() []*v1alpha1.Tag {
	return []*v1alpha1.Tag{
		newTag("nginx", "nginx:1.27"), // matched by the Docker Hub hook once normalized
		newTag("api", "quay.io/team/api:v2"),
		newTag("app", "ghcr.io/octo-org/app:v1"),
		newTag("svc", "harbor.example.com/proj/svc:1.0"),
		newTag("tool", "registry.example.com/ci/tool:main"),
		newTag("bystander", "docker.io/library/redis:7"),
	}
}

var tagFor = map[string]string{
	ProviderDockerHub: "nginx", ProviderQuay: "api", ProviderGitHub: "app", ProviderHarbor: "svc", ProviderGeneric: "tool",
}
