package release

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"
)

// PluginName is the kubectl plugin's command, and its krew name without
// the kubectl- prefix.
const PluginName = "kubectl-tag"

// archiveEntry is one file in a plugin archive.
type archiveEntry struct {
	name string
	mode fs.FileMode
	data []byte
}

// ArchiveFile is the published name of the plugin archive for p.
func ArchiveFile(version string, p Platform) string {
	ext := ".tar.gz"
	if p.OS == "windows" {
		ext = ".zip"
	}
	return fmt.Sprintf("%s_%s_%s_%s%s", PluginName, version, p.OS, p.Arch, ext)
}

// buildPluginArchives builds kubectl-tag for every plugin platform and
// archives it with LICENSE (krew's validator wants a license in each).
func buildPluginArchives(ctx context.Context, c *Config, r *Result) error {
	license, err := os.ReadFile(filepath.Join(c.Root, "LICENSE"))
	if err != nil {
		return fmt.Errorf("read LICENSE: %w", err)
	}
	tmp, err := os.MkdirTemp("", "tagger-release-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	for _, p := range c.PluginPlatforms {
		data, err := pluginBinary(ctx, c, p, tmp)
		if err != nil {
			return err
		}
		entries := []archiveEntry{
			{name: exeName(PluginName, p), mode: 0o755, data: data},
			{name: "LICENSE", mode: 0o644, data: license},
		}
		name := ArchiveFile(c.Version, p)
		if err := writeArchive(filepath.Join(c.Out, name), entries, c.Date); err != nil {
			return fmt.Errorf("archive %s: %w", name, err)
		}
		r.Archives[p] = name
		r.Files = append(r.Files, name)
	}
	return nil
}

// pluginBinary is kubectl-tag for p: the bare binary the release already
// built, or a fresh build in tmp.
func pluginBinary(ctx context.Context, c *Config, p Platform, tmp string) ([]byte, error) {
	if slices.Contains(c.Binaries, PluginName) && slices.Contains(c.BinaryPlatforms, p) {
		return os.ReadFile(filepath.Join(c.Out, binaryFile(PluginName, p)))
	}
	bin := filepath.Join(tmp, binaryFile(PluginName, p))
	if err := goBuild(ctx, c, PluginName, p, bin); err != nil {
		return nil, err
	}
	return os.ReadFile(bin)
}

// writeArchive writes a zip (for .zip) or gzipped tar with the entries
// sorted by name, every one dated mtime and owned by root: the bytes depend
// on the contents alone.
func writeArchive(path string, entries []archiveEntry, mtime time.Time) error {
	sort.Slice(entries, func(i, j int) bool { return entries[i].name < entries[j].name })
	var buf bytes.Buffer
	var err error
	if filepath.Ext(path) == ".zip" {
		err = writeZip(&buf, entries, mtime)
	} else {
		err = writeTarGz(&buf, entries, mtime)
	}
	if err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

func writeTarGz(buf *bytes.Buffer, entries []archiveEntry, mtime time.Time) error {
	// A zero gzip header: no name, no modification time.
	gz, err := gzip.NewWriterLevel(buf, gzip.BestCompression)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: int64(e.mode), Size: int64(len(e.data)),
			ModTime: mtime.UTC().Truncate(time.Second), Typeflag: tar.TypeReg, Format: tar.FormatUSTAR}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := tw.Write(e.data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gz.Close()
}

func writeZip(buf *bytes.Buffer, entries []archiveEntry, mtime time.Time) error {
	zw := zip.NewWriter(buf)
	for _, e := range entries {
		h := &zip.FileHeader{Name: e.name, Method: zip.Deflate, Modified: mtime.UTC()}
		h.SetMode(e.mode)
		w, err := zw.CreateHeader(h)
		if err != nil {
			return err
		}
		if _, err := w.Write(e.data); err != nil {
			return err
		}
	}
	return zw.Close()
}
