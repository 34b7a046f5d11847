package charttest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/tagger-project/tagger/internal/rig"
)

// The chart's registry configuration and commands, run by the real
// distribution registry (v3.1.2, from hack/testbin.sh): the rendered
// config.yml parses and serves, the readiness probe path answers, and the gc
// CronJob's script collects, including on a store nothing was pushed to yet.

const configInPod = "/etc/distribution/config.yml"

// Stand-ins for the values the pod would read from Secrets.
var secretValues = map[string]string{
	"REGISTRY_STORAGE_S3_ACCESSKEY": "tagger-test-access",
	"REGISTRY_STORAGE_S3_SECRETKEY": "tagger-test-secret",
	"REGISTRY_HTTP_SECRET":          "tagger-test-http-secret",
}

func TestRegistryFilesystem(t *testing.T) {
	bin := rig.RequireBins(t, "registry")
	// ReadWriteMany: the render that has both the registry and the gc job on
	// filesystem storage.
	r := render(t, rwxValues+authOff)
	dir := t.TempDir()
	addr := rig.FreeAddr(t)
	cfg := writeRegistryConfig(t, r, dir, func(cfg map[string]any) {
		setPath(t, cfg, filepath.Join(dir, "data"), "storage", "filesystem", "rootdirectory")
		setPath(t, cfg, addr, "http", "addr")
	})

	gc := get[*batchv1.CronJob](t, r, "CronJob", "tagger-registry-gc")
	gcContainer := container(t, gc.Spec.JobTemplate.Spec.Template.Spec, "garbage-collect")

	// Before anything is pushed the store has no repositories directory:
	// the job must still succeed.
	out, err := runContainer(t, gcContainer, bin, cfg, dir)
	if err != nil {
		t.Fatalf("gc on an empty store: %v\n%s", err, out)
	}
	if !strings.Contains(out, "nothing to collect") {
		t.Errorf("gc on an empty store did not say it had nothing to collect:\n%s", out)
	}

	reg := get[*appsv1.Deployment](t, r, "Deployment", "tagger-registry")
	serve(t, container(t, reg.Spec.Template.Spec, "registry"), bin, cfg, dir, addr)
	base := "http://" + addr
	pushImage(t, base, "docker.io/library/nginx")

	out, err = runContainer(t, gcContainer, bin, cfg, dir)
	if err != nil {
		t.Fatalf("gc: %v\n%s", err, out)
	}
	if !strings.Contains(out, "3 blobs marked, 0 blobs and 0 manifests eligible for deletion") {
		t.Errorf("gc did not keep the pushed image's manifest and 2 blobs:\n%s", out)
	}
	// Still served after the collection (distribution answers an OCI
	// manifest only to a client that accepts it).
	req, _ := http.NewRequest(http.MethodGet, base+"/v2/docker.io/library/nginx/manifests/1.27", nil)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("manifest after gc: %s", resp.Status)
	}
}

func TestRegistryS3(t *testing.T) {
	bin := rig.RequireBins(t, "registry")
	r := render(t, s3Values+authOff)
	store := newFakeS3(t)
	dir := t.TempDir()
	addr := rig.FreeAddr(t)
	cfg := writeRegistryConfig(t, r, dir, func(cfg map[string]any) {
		setPath(t, cfg, store.URL, "storage", "s3", "regionendpoint")
		setPath(t, cfg, addr, "http", "addr")
	})

	gc := get[*batchv1.CronJob](t, r, "CronJob", "tagger-registry-gc")
	out, err := runContainer(t, container(t, gc.Spec.JobTemplate.Spec.Template.Spec, "garbage-collect"), bin, cfg, dir)
	if err != nil {
		t.Fatalf("gc against s3: %v\n%s", err, out)
	}
	if !store.listedWith("Credential=" + secretValues["REGISTRY_STORAGE_S3_ACCESSKEY"] + "/") {
		t.Errorf("gc did not list the bucket with the access key from REGISTRY_STORAGE_S3_ACCESSKEY; requests: %v", store.requests())
	}

	// The serving configuration parses and passes its storage health check.
	reg := get[*appsv1.Deployment](t, r, "Deployment", "tagger-registry")
	serve(t, container(t, reg.Spec.Template.Spec, "registry"), bin, cfg, dir, addr)
}

// writeRegistryConfig writes the rendered config.yml, adjusted by edit for a
// local run, and returns its path.
func writeRegistryConfig(t *testing.T, r *rendered, dir string, edit func(map[string]any)) string {
	t.Helper()
	cfg := registryConfig(t, r)
	edit(cfg)
	data, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func setPath(t *testing.T, tree map[string]any, value any, path ...string) {
	t.Helper()
	parent, ok := lookup(tree, path[:len(path)-1]...)
	m, isMap := parent.(map[string]any)
	if !ok || !isMap {
		t.Fatalf("registry config has no %s", strings.Join(path[:len(path)-1], "."))
	}
	if _, ok := m[path[len(path)-1]]; !ok {
		t.Fatalf("registry config has no %s", strings.Join(path, "."))
	}
	m[path[len(path)-1]] = value
}

// command is a container's command line as the pod runs it, with the
// config path moved to cfg and a bare "registry" resolved to the rig's.
func command(c corev1.Container, binDir, cfg string) []string {
	var argv []string
	for _, a := range append(append([]string{}, c.Command...), c.Args...) {
		argv = append(argv, strings.ReplaceAll(a, configInPod, cfg))
	}
	if len(argv) > 0 && argv[0] == "registry" {
		argv[0] = filepath.Join(binDir, "registry")
	}
	return argv
}

// containerEnv is the container's environment, Secret values replaced by
// stand-ins, on a clean base: PATH finds the registry binary first.
func containerEnv(t *testing.T, c corev1.Container, binDir, tmp string) []string {
	t.Helper()
	env := []string{"PATH=" + binDir + string(os.PathListSeparator) + os.Getenv("PATH"), "HOME=" + tmp, "TMPDIR=" + tmp}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env = append(env, e.Name+"="+e.Value)
		case e.ValueFrom.SecretKeyRef != nil && secretValues[e.Name] != "":
			env = append(env, e.Name+"="+secretValues[e.Name])
		default:
			t.Fatalf("container %s env %s: no stand-in for %+v", c.Name, e.Name, e.ValueFrom)
		}
	}
	return env
}

// runContainer runs a container's command to completion.
func runContainer(t *testing.T, c corev1.Container, binDir, cfg, tmp string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	argv := command(c, binDir, cfg)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = containerEnv(t, c, binDir, tmp)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// serve starts a container's long-running command and waits until its
// readiness probe path answers 200.
func serve(t *testing.T, c corev1.Container, binDir, cfg, tmp, addr string) {
	t.Helper()
	argv := command(c, binDir, cfg)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = containerEnv(t, c, binDir, tmp)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("%s output:\n%s", c.Name, out.String())
		}
	})
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil {
		t.Fatalf("%s has no HTTP readiness probe", c.Name)
	}
	probe := "http://" + addr + c.ReadinessProbe.HTTPGet.Path
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("%s exited before it was ready: %v\n%s", argv, err, out.String())
		default:
		}
		resp, err := http.Get(probe)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: readiness probe %s never answered 200 (last: %v %v)\n%s", argv, probe, resp, err, out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// pushImage pushes a one-layer OCI image as <repo>:1.27.
func pushImage(t *testing.T, base, repo string) {
	t.Helper()
	blob := func(data []byte) map[string]any {
		digest := fmt.Sprintf("sha256:%x", sha256.Sum256(data))
		resp, err := http.Post(base+"/v2/"+repo+"/blobs/uploads/", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("start upload: %s", resp.Status)
		}
		loc, err := resp.Location()
		if err != nil {
			t.Fatal(err)
		}
		q := loc.Query()
		q.Set("digest", digest)
		loc.RawQuery = q.Encode()
		req, _ := http.NewRequest(http.MethodPut, loc.String(), bytes.NewReader(data))
		req.Header.Set("Content-Type", "application/octet-stream")
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("finish upload: %s", resp.Status)
		}
		return map[string]any{"digest": digest, "size": len(data)}
	}
	config := blob([]byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`))
	config["mediaType"] = "application/vnd.oci.image.config.v1+json"
	layer := blob([]byte("tagger chart test layer"))
	layer["mediaType"] = "application/vnd.oci.image.layer.v1.tar"
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        config,
		"layers":        []any{layer},
	})
	req, _ := http.NewRequest(http.MethodPut, base+"/v2/"+repo+"/manifests/1.27", bytes.NewReader(manifest))
	req.Header.Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("push manifest: %s", resp.Status)
	}
}

// fakeS3 is an empty bucket: ListObjectsV2 answers no keys, everything else
// 404. Enough for the registry to start and garbage-collect; it records who
// asked.
type fakeS3 struct {
	*httptest.Server
	mu   sync.Mutex
	seen []string // "METHOD path authorization"
}

func newFakeS3(t *testing.T) *fakeS3 {
	f := &fakeS3{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.seen = append(f.seen, r.Method+" "+r.URL.RequestURI()+" "+r.Header.Get("Authorization"))
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/xml")
		if r.Method == http.MethodGet && r.URL.Query().Get("list-type") == "2" {
			fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>tagger-cache</Name><Prefix>%s</Prefix><KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated></ListBucketResult>`, r.URL.Query().Get("prefix"))
			return
		}
		w.WriteHeader(http.StatusNotFound)
		if r.Method != http.MethodHead {
			fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>`)
		}
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeS3) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.seen...)
}

// listedWith reports whether a bucket listing carried auth containing s.
func (f *fakeS3) listedWith(s string) bool {
	for _, r := range f.requests() {
		if strings.Contains(r, "list-type=2") && strings.Contains(r, s) {
			return true
		}
	}
	return false
}

// syncBuffer is a bytes.Buffer safe for a process's concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
