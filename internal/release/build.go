package release

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

const versionPkg = "github.com/tagger-project/tagger/pkg/version"

// ldflags are the Dockerfile's: stripped, version-stamped.
func (c *Config) ldflags() string {
	return fmt.Sprintf("-s -w -X %s.Version=%s -X %s.Commit=%s -X %s.Date=%s",
		versionPkg, c.Version, versionPkg, c.Commit, versionPkg, c.Date.UTC().Format(time.RFC3339))
}

// exeName is a command's file name on p.
func exeName(name string, p Platform) string {
	if p.OS == "windows" {
		return name + ".exe"
	}
	return name
}

// goBuild builds ./cmd/<name> for p into out: static (CGO_ENABLED=0),
// -trimpath and -buildvcs=false so the bytes depend on the sources alone.
func goBuild(ctx context.Context, c *Config, name string, p Platform, out string) error {
	c.logf("build %s %s", name, p)
	cmd := exec.CommandContext(ctx, c.Go, "build", "-trimpath", "-buildvcs=false",
		"-ldflags", c.ldflags(), "-o", out, "./cmd/"+name)
	cmd.Dir = c.Root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.OS, "GOARCH="+p.Arch, "GOFLAGS=-mod=readonly")
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s for %s: %w\n%s", name, p, err, stderr.String())
	}
	return nil
}

// binaryFile is the published name of a bare binary.
func binaryFile(name string, p Platform) string {
	return exeName(fmt.Sprintf("%s-%s-%s", name, p.OS, p.Arch), p)
}

func buildBinaries(ctx context.Context, c *Config, r *Result) error {
	for _, p := range c.BinaryPlatforms {
		for _, name := range c.Binaries {
			f := binaryFile(name, p)
			if err := goBuild(ctx, c, name, p, filepath.Join(c.Out, f)); err != nil {
				return err
			}
			r.Files = append(r.Files, f)
		}
	}
	return nil
}
