package imagebuild

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// epoch is every entry's modification time: the same inputs make the same
// layer bytes, so the synthesized bases keep their digests from run to run
// and BuildKit's cache (keyed by them) stays warm.
var epoch = time.Unix(0, 0).UTC()

// entry is one file, directory or symlink of a layer. A regular file's
// content is data, or the host file src when data is nil.
type entry struct {
	name     string // without leading slash: "usr/local/go/bin/go"
	mode     int64  // permission bits (and sticky)
	typ      byte   // tar.TypeReg, tar.TypeDir or tar.TypeSymlink
	uid, gid int
	data     []byte
	src      string
	link     string // symlink target
}

func dir(name string, mode int64, owner int) entry {
	return entry{name: name, mode: mode, typ: tar.TypeDir, uid: owner, gid: owner}
}

func file(name string, mode int64, data []byte) entry {
	return entry{name: name, mode: mode, typ: tar.TypeReg, data: data}
}

func hostFile(name string, mode int64, src string) entry {
	return entry{name: name, mode: mode, typ: tar.TypeReg, src: src}
}

func symlink(name, target string) entry {
	return entry{name: name, mode: 0o777, typ: tar.TypeSymlink, link: target}
}

// hostTree lists the host directory src as entries under name, owned by
// root: directories, regular files and symlinks (kept as they are, relative
// targets stay valid inside the image). skip drops a path (relative to src)
// and everything below it.
func hostTree(name, src string, skip func(rel string) bool) ([]entry, error) {
	var out []entry
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		if skip != nil && rel != "." && skip(filepath.ToSlash(rel)) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		target := path.Join(name, filepath.ToSlash(rel))
		info, err := d.Info()
		if err != nil {
			return err
		}
		mode := int64(info.Mode().Perm())
		switch {
		case d.IsDir():
			out = append(out, entry{name: target, mode: mode, typ: tar.TypeDir})
		case d.Type()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out = append(out, symlink(target, l))
		case d.Type().IsRegular():
			out = append(out, hostFile(target, mode, p))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", src, err)
	}
	return out, nil
}

// layer is a written layer blob: its descriptor, its diff ID (the digest of
// the uncompressed tar) and the file holding it.
type layer struct {
	desc   ocispec.Descriptor
	diffID digest.Digest
	path   string
}

// writeLayer writes entries, sorted by name with missing parent
// directories added, as a tar (gzip-compressed when compress) into a new
// file in dir.
func writeLayer(dir string, entries []entry, compress bool) (layer, error) {
	entries = withParents(entries)
	f, err := os.CreateTemp(dir, "layer-*")
	if err != nil {
		return layer{}, fmt.Errorf("create layer file: %w", err)
	}
	defer f.Close()
	blobHash, tarHash := sha256.New(), sha256.New()
	counter := &countWriter{w: io.MultiWriter(f, blobHash)}
	var tarOut io.Writer = counter
	var zw *gzip.Writer
	if compress {
		zw = gzip.NewWriter(counter)
		tarOut = zw
	}
	tw := tar.NewWriter(io.MultiWriter(tarOut, tarHash))
	for _, e := range entries {
		if err := writeEntry(tw, e); err != nil {
			return layer{}, fmt.Errorf("write layer entry %s: %w", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return layer{}, fmt.Errorf("close layer tar: %w", err)
	}
	mediaType := ocispec.MediaTypeImageLayer
	if zw != nil {
		if err := zw.Close(); err != nil {
			return layer{}, fmt.Errorf("close layer gzip: %w", err)
		}
		mediaType = ocispec.MediaTypeImageLayerGzip
	}
	if err := f.Close(); err != nil {
		return layer{}, fmt.Errorf("write layer file: %w", err)
	}
	return layer{
		desc:   ocispec.Descriptor{MediaType: mediaType, Digest: sum(blobHash), Size: counter.n},
		diffID: sum(tarHash),
		path:   f.Name(),
	}, nil
}

func sum(h hash.Hash) digest.Digest { return digest.NewDigest(digest.SHA256, h) }

func writeEntry(tw *tar.Writer, e entry) error {
	hdr := &tar.Header{
		Name: e.name, Mode: e.mode, Typeflag: e.typ, Uid: e.uid, Gid: e.gid,
		ModTime: epoch, Format: tar.FormatPAX, Linkname: e.link,
	}
	if e.typ == tar.TypeDir {
		hdr.Name += "/"
	}
	if e.typ != tar.TypeReg {
		return tw.WriteHeader(hdr)
	}
	if e.data != nil {
		hdr.Size = int64(len(e.data))
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err := tw.Write(e.data)
		return err
	}
	src, err := os.Open(e.src)
	if err != nil {
		return err
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return err
	}
	hdr.Size = fi.Size()
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	_, err = io.Copy(tw, src)
	return err
}

// withParents sorts entries by name (later duplicates win) and adds each
// missing parent directory as root-owned 0755, so the tar never names a
// file before its directory.
func withParents(entries []entry) []entry {
	byName := map[string]entry{}
	for _, e := range entries {
		byName[strings.Trim(e.name, "/")] = e
	}
	for name := range byName {
		for d := path.Dir(name); d != "." && d != "/"; d = path.Dir(d) {
			if _, ok := byName[d]; !ok {
				byName[d] = dir(d, 0o755, 0)
			}
		}
	}
	out := make([]entry, 0, len(byName))
	for name, e := range byName {
		e.name = name
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
