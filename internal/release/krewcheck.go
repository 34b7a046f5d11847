package release

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// ValidateKrewManifest runs krew's own validator (validate-krew-manifest
// from sigs.k8s.io/krew) on a manifest: its structure, that every platform
// selector matches a platform krew supports, and that no two overlap. The
// validator's install step downloads every uri; KrewInstall does that part
// from the local archives instead.
func ValidateKrewManifest(ctx context.Context, validator, manifest string) error {
	cmd := exec.CommandContext(ctx, validator, "-manifest", manifest, "-skip-install")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("validate-krew-manifest %s: %w\n%s", manifest, err, out.String())
	}
	return nil
}

// KrewInstall installs the plugin with krew (the krew binary, run as
// `kubectl krew` would run it) from the manifest and a local archive, as
// if on platform p, in a fresh KREW_ROOT under dir: krew checks the
// archive's sha256 against the manifest and unpacks the files it names.
// It returns the installed plugin's binary.
func KrewInstall(ctx context.Context, krew, manifest, archive string, p Platform, dir string) (string, error) {
	root := filepath.Join(dir, "krew-"+p.OS+"-"+p.Arch)
	cmd := exec.CommandContext(ctx, krew, "install", "--manifest="+manifest, "--archive="+archive)
	cmd.Env = append(os.Environ(), "KREW_ROOT="+root, "KREW_OS="+p.OS, "KREW_ARCH="+p.Arch,
		"KREW_NO_UPGRADE_CHECK=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("krew install %s for %s: %w\n%s", filepath.Base(archive), p, err, out.String())
	}
	bin := filepath.Join(root, "bin", exeName(PluginName, p))
	if _, err := os.Lstat(bin); err != nil {
		return "", fmt.Errorf("krew install for %s left no %s: %w\n%s", p, bin, err, out.String())
	}
	return bin, nil
}
