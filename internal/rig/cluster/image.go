package cluster

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/tagger-project/tagger/internal/rig"
)

// waiterSource is the one program in every image the rig makes: it prints
// its arguments as one line (if any), then waits for SIGTERM or SIGINT and
// exits 0. As a pod's entrypoint it proves which image ran (the marker in its
// log); without arguments it is the pause image. For network tests it also
// answers HTTP with that line when WAITER_SERVE names an address, fetches a
// URL with "-get URL" (retrying for a minute, exit 1 on failure), and
// creates a file with "-touch PATH".
const waiterSource = `package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	args := os.Args[1:]
	if len(args) == 2 && args[0] == "-get" {
		os.Exit(request(args[1], "", false))
	}
	if len(args) == 3 && args[0] == "-post" {
		os.Exit(request(args[1], args[2], true))
	}
	if len(args) == 2 && args[0] == "-touch" {
		if err := os.WriteFile(args[1], []byte("touched\n"), 0o644); err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		return
	}
	line := strings.Join(args, " ")
	if line != "" {
		fmt.Println(line)
	}
	if addr := os.Getenv("WAITER_SERVE"); addr != "" {
		go func() {
			fmt.Println(http.ListenAndServe(addr, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				fmt.Fprintln(w, line)
			})))
		}()
	}
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}

func request(url, body string, post bool) int {
	hc := &http.Client{Timeout: 5 * time.Second}
	var last error
	for end := time.Now().Add(time.Minute); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		var resp *http.Response
		var err error
		if post {
			resp, err = hc.Post(url, "application/json", strings.NewReader(body))
		} else {
			resp, err = hc.Get(url)
		}
		if err != nil {
			last = err
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if post && resp.StatusCode/100 != 2 {
			last = fmt.Errorf("%d %s", resp.StatusCode, b)
			continue
		}
		fmt.Printf("%d %s", resp.StatusCode, b)
		return 0
	}
	fmt.Println("request:", last)
	return 1
}
`

var waiter struct {
	once sync.Once
	bin  []byte
	err  error
}

// waiterBinary compiles waiterSource into a static binary for this machine's
// architecture, once per test process (the Go build cache makes later
// processes fast too).
func waiterBinary() ([]byte, error) {
	waiter.once.Do(func() {
		dir, err := os.MkdirTemp("", "clustertest-waiter-")
		if err != nil {
			waiter.err = fmt.Errorf("build waiter: %w", err)
			return
		}
		defer os.RemoveAll(dir)
		if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module waiter\n\ngo 1.22\n"), 0o644); err != nil {
			waiter.err = fmt.Errorf("build waiter: %w", err)
			return
		}
		if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(waiterSource), 0o644); err != nil {
			waiter.err = fmt.Errorf("build waiter: %w", err)
			return
		}
		cmd := exec.Command(rig.GoTool(), "build", "-trimpath", "-ldflags=-s -w", "-o", "waiter", ".")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH,
			"GOFLAGS=", "GOWORK=off", "GOTOOLCHAIN=local")
		if out, err := cmd.CombinedOutput(); err != nil {
			waiter.err = fmt.Errorf("build waiter: %v: %s", err, out)
			return
		}
		waiter.bin, waiter.err = os.ReadFile(filepath.Join(dir, "waiter"))
	})
	return waiter.bin, waiter.err
}

// ociImage is a single-layer image held in memory.
type ociImage struct {
	manifest     []byte
	manifestDesc ocispec.Descriptor
	config       []byte
	configDesc   ocispec.Descriptor
	layer        []byte
	layerDesc    ocispec.Descriptor
}

// buildImage packs the waiter binary as /<name> into a one-layer OCI image
// whose entrypoint runs it with args.
func buildImage(name string, args []string) (*ociImage, error) {
	bin, err := waiterBinary()
	if err != nil {
		return nil, err
	}
	return buildFilesImage([]File{{Path: name, Mode: 0o755, Data: bin}}, ocispec.ImageConfig{
		Entrypoint: []string{"/" + name},
		Cmd:        args,
		Env:        []string{"PATH=/"},
		StopSignal: "SIGTERM",
	})
}

// File is a regular file in an image's one layer.
type File struct {
	// Path is the file's path in the image, without the leading slash
	// ("usr/local/bin/node-agent"); missing parent directories are added.
	Path string
	Mode int64
	Data []byte
}

// buildFilesImage packs files into a one-layer linux OCI image for this
// machine's architecture with the runtime config cfg.
func buildFilesImage(files []File, cfg ocispec.ImageConfig) (*ociImage, error) {
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	dirs := map[string]bool{}
	for _, f := range files {
		var parents []string
		for d := filepath.Dir(f.Path); d != "." && d != "/" && !dirs[d]; d = filepath.Dir(d) {
			parents = append([]string{d}, parents...)
			dirs[d] = true
		}
		for _, d := range parents {
			if err := tw.WriteHeader(&tar.Header{Name: d + "/", Mode: 0o755, ModTime: time.Unix(0, 0),
				Typeflag: tar.TypeDir, Format: tar.FormatPAX}); err != nil {
				return nil, fmt.Errorf("write layer: %w", err)
			}
		}
		if err := tw.WriteHeader(&tar.Header{
			Name: f.Path, Mode: f.Mode, Size: int64(len(f.Data)), ModTime: time.Unix(0, 0),
			Typeflag: tar.TypeReg, Format: tar.FormatPAX,
		}); err != nil {
			return nil, fmt.Errorf("write layer: %w", err)
		}
		if _, err := tw.Write(f.Data); err != nil {
			return nil, fmt.Errorf("write layer: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("write layer: %w", err)
	}
	var gb bytes.Buffer
	zw := gzip.NewWriter(&gb)
	if _, err := zw.Write(tb.Bytes()); err != nil {
		return nil, fmt.Errorf("compress layer: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("compress layer: %w", err)
	}

	img := &ociImage{layer: gb.Bytes()}
	img.layerDesc = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(img.layer), Size: int64(len(img.layer))}
	created := time.Unix(0, 0).UTC()
	var err error
	img.config, err = json.Marshal(ocispec.Image{
		Created:  &created,
		Platform: ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH},
		Config:   cfg,
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{digest.FromBytes(tb.Bytes())}},
	})
	if err != nil {
		return nil, fmt.Errorf("encode image config: %w", err)
	}
	img.configDesc = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(img.config), Size: int64(len(img.config))}
	img.manifest, err = json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    img.configDesc,
		Layers:    []ocispec.Descriptor{img.layerDesc},
	})
	if err != nil {
		return nil, fmt.Errorf("encode image manifest: %w", err)
	}
	img.manifestDesc = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(img.manifest), Size: int64(len(img.manifest))}
	return img, nil
}

// PushImage builds a one-layer linux image for this machine's architecture
// from files with the runtime config cfg, pushes it to reg as repo:tag, and
// returns the manifest digest. It is how tests build tagger's own image
// without a Docker engine.
func PushImage(t testing.TB, reg *rig.Registry, repo, tag string, files []File, cfg ocispec.ImageConfig) string {
	t.Helper()
	img, err := buildFilesImage(files, cfg)
	if err != nil {
		t.Fatalf("clustertest: PushImage %s:%s: %v", repo, tag, err)
	}
	return push(t, reg, repo, tag, img)
}

func push(t testing.TB, reg *rig.Registry, repo, tag string, img *ociImage) string {
	t.Helper()
	reg.PushBlob(t, repo, img.layerDesc.MediaType, img.layer)
	reg.PushBlob(t, repo, img.configDesc.MediaType, img.config)
	return reg.PushManifest(t, repo, tag, img.manifestDesc.MediaType, img.manifest).String()
}

// PushRunnableImage builds a one-layer linux image for this machine's
// architecture whose entrypoint is a static Go program that prints marker as
// one line to stdout and then waits for SIGTERM, pushes it to reg as
// repo:tag, and returns the manifest digest. A different marker makes a
// different image (the marker is in the config), so tests can tell from a
// container's log which image it runs.
func PushRunnableImage(t testing.TB, reg *rig.Registry, repo, tag, marker string) string {
	t.Helper()
	if strings.TrimSpace(marker) == "" {
		t.Fatalf("clustertest: PushRunnableImage %s:%s: empty marker", repo, tag)
	}
	img, err := buildImage("app", []string{marker})
	if err != nil {
		t.Fatalf("clustertest: PushRunnableImage %s:%s: %v", repo, tag, err)
	}
	return push(t, reg, repo, tag, img)
}

// writeOCIArchive writes img as an OCI image layout tar, named ref, for
// `ctr images import`.
func writeOCIArchive(path, ref string, img *ociImage) error {
	tag := ref[strings.LastIndex(ref, ":")+1:]
	desc := img.manifestDesc
	desc.Annotations = map[string]string{
		// ctr takes the full name from containerd's annotation, the OCI one
		// alone would only be a tag.
		"io.containerd.image.name": ref,
		ocispec.AnnotationRefName:  tag,
	}
	desc.Platform = &ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH}
	index, err := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{desc},
	})
	if err != nil {
		return fmt.Errorf("encode index.json: %w", err)
	}
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	add := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	blob := func(d digest.Digest) string { return "blobs/" + d.Algorithm().String() + "/" + d.Encoded() }
	for _, f := range []struct {
		name string
		data []byte
	}{
		{ocispec.ImageLayoutFile, []byte(`{"imageLayoutVersion":"` + ocispec.ImageLayoutVersion + `"}`)},
		{ocispec.ImageIndexFile, index},
		{blob(img.manifestDesc.Digest), img.manifest},
		{blob(img.configDesc.Digest), img.config},
		{blob(img.layerDesc.Digest), img.layer},
	} {
		if err := add(f.name, f.data); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
