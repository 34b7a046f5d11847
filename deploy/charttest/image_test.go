package charttest

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/tagger-project/tagger/pkg/registryclient"
)

// pulledImage is an image read back from a registry: its config and its
// file system with the layers applied in order.
type pulledImage struct {
	config ocispec.Image
	files  map[string]*imageFile // by path without leading slash
}

type imageFile struct {
	hdr  *tar.Header
	data []byte
}

// pullImage reads repo@d from the registry at base (plain HTTP) through
// pkg/registryclient, verifying every blob against its digest.
func pullImage(t *testing.T, base, repo string, d digest.Digest) *pulledImage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	e, err := registryclient.NewEndpoint(base, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, desc, err := e.FetchManifest(ctx, repo, d)
	if err != nil {
		t.Fatalf("fetch manifest: %v", err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("decode manifest %s (%s): %v", d, desc.MediaType, err)
	}
	if len(m.Layers) == 0 {
		t.Fatalf("manifest %s (%s) has no layers: an index? %s", d, desc.MediaType, body)
	}
	img := &pulledImage{files: map[string]*imageFile{}}
	cfg, err := fetchBlob(ctx, e, repo, m.Config.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(cfg, &img.config); err != nil {
		t.Fatalf("decode image config: %v", err)
	}
	for _, l := range m.Layers {
		b, err := fetchBlob(ctx, e, repo, l.Digest)
		if err != nil {
			t.Fatal(err)
		}
		if err := img.apply(b); err != nil {
			t.Fatalf("layer %s (%s): %v", l.Digest, l.MediaType, err)
		}
	}
	return img
}

func fetchBlob(ctx context.Context, e *registryclient.Endpoint, repo string, d digest.Digest) ([]byte, error) {
	resp, err := e.Open(ctx, http.MethodGet, repo, "blobs", d, nil, "", "")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, registryclient.ResponseError("fetch blob", repo+"@"+d.String(), resp)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("read blob %s: %w", d, err)
	}
	if got := digest.FromBytes(b); got != d {
		return nil, fmt.Errorf("blob %s has digest %s", d, got)
	}
	return b, nil
}

// apply unpacks one layer (gzip or plain tar) over the files, honouring
// whiteouts.
func (img *pulledImage) apply(blob []byte) error {
	var r io.Reader = bytes.NewReader(blob)
	if len(blob) > 2 && blob[0] == 0x1f && blob[1] == 0x8b {
		zr, err := gzip.NewReader(r)
		if err != nil {
			return err
		}
		r = zr
	}
	tr := tar.NewReader(bufio.NewReader(r))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := strings.Trim(path.Clean("/"+h.Name), "/")
		dir, base := path.Split(name)
		if strings.HasPrefix(base, ".wh.") {
			gone := path.Join(dir, strings.TrimPrefix(base, ".wh."))
			for p := range img.files {
				if p == gone || strings.HasPrefix(p, gone+"/") {
					delete(img.files, p)
				}
			}
			continue
		}
		f := &imageFile{hdr: h}
		if h.Typeflag == tar.TypeReg {
			if f.data, err = io.ReadAll(tr); err != nil {
				return err
			}
		}
		img.files[name] = f
	}
}

// lookup finds p, following symlinks (relative ones from their directory).
func (img *pulledImage) lookup(p string) (*imageFile, bool) {
	for range 10 {
		f, ok := img.files[strings.Trim(p, "/")]
		if !ok || f.hdr.Typeflag != tar.TypeSymlink {
			return f, ok
		}
		if strings.HasPrefix(f.hdr.Linkname, "/") {
			p = f.hdr.Linkname
		} else {
			p = path.Join(path.Dir(p), f.hdr.Linkname)
		}
	}
	return nil, false
}
