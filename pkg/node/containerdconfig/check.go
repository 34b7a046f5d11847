// Package containerdconfig tells whether containerd will read the hosts.toml
// files the node agent writes, from the node's containerd config file.
//
// containerd reads hosts.toml only from the CRI registry config_path, and
// not always: containerd 1.x has no default config_path; containerd 2.x
// defaults it to "/etc/containerd/certs.d:/etc/docker/certs.d", a
// colon-separated list that only its local image pull splits
// (internal/cri/server/images/image_pull.go registryHosts:
// filepath.SplitList). Its default pull path, the transfer service, passes
// config_path whole to config.HostDirFromRoot
// (pullImageWithTransferService -> registry.WithHostDir ->
// core/transfer/registry NewOCIRegistry), which then looks for
// "/etc/containerd/certs.d:/etc/docker/certs.d/<registry>": a directory that
// does not exist, so every hosts.toml is silently ignored. containerd 2.x
// uses local image pull when use_local_image_pull = true or when a setting
// the transfer service does not support is present
// (internal/cri/config CheckLocalImagePullConfigs).
//
// Check loads the config with containerd's own loader
// (cmd/containerd/server/config LoadConfigWithPlugins, with the CRI image
// service's migration registered), so imports, merging and the migration of
// version 1-3 files are containerd's. By hand it keeps only what that loader
// does not tell: the colon-list trap of the transfer service, the missing
// default config_path of containerd 1.x (checked for version 1 and 2 files,
// as 1.7 reads them) and which settings make containerd 2.x use local image
// pull.
package containerdconfig

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Report is the outcome of Check.
type Report struct {
	// OK is true when containerd will read hosts.toml from the hosts dir.
	OK bool
	// Version is the containerd release line the config file is written
	// for: "2.x" (config version 3 or 4), "1.x" (version 1 or 2; containerd
	// 2.x also reads these, after migrating them, and Problems covers both)
	// or "unknown" (no file, or a file containerd cannot read).
	Version string
	// ConfigPath is the CRI registry config_path containerd uses: as written,
	// or containerd 2.x's default when a version 3+ file leaves it unset.
	ConfigPath string
	// Problems say why containerd would not read the node agent's
	// hosts.toml files. OK is false when there is any.
	Problems []string
	// Warnings are findings that do not stop hosts.toml from being read
	// (deprecated sections, settings the result depends on).
	Warnings []string
	// Fix is the change to make to the config file, empty when OK.
	Fix string
}

// Check loads the containerd config at path (with its imports) with
// containerd's own loader and reports whether containerd will read hosts.toml
// files from hostsDir.
func Check(path, hostsDir string) Report {
	hostsDir = filepath.Clean(hostsDir)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return checkMissing(path, hostsDir)
	}
	l, err := load(path)
	if err != nil {
		return Report{
			Version:  "unknown",
			Problems: []string{fmt.Sprintf("%v: containerd cannot load this config and does not start", err)},
			Fix:      fmt.Sprintf("make %s and the files it imports readable, valid TOML", path),
		}
	}
	r := Report{Version: "1.x"}
	if l.version >= 3 {
		r.Version = "2.x"
	}
	fx := fixer{path: path, hostsDir: hostsDir, table: registryTable(l.version), shortNames: l.version <= 1}
	img, imgErr := images(&l.cfg)
	v2 := check2x(img, imgErr, l.cfg.DisabledPlugins, hostsDir, &fx)
	if l.version >= 3 {
		r.ConfigPath = v2.configPath
		r.Problems, r.Warnings = v2.problems, v2.warnings
	} else {
		reg, regErr := criRegistry(&l.cfg)
		v1 := check1x(reg, regErr, l.cfg.DisabledPlugins, hostsDir, &fx)
		r.ConfigPath = v1.configPath
		mig := fmt.Sprintf("containerd 2.x (which migrates this version %d file): ", l.version)
		r.Problems = combine(v1.problems, v2.problems, "containerd 1.x: ", mig)
		r.Warnings = combine(v1.warnings, v2.warnings, "containerd 1.x: ", mig)
	}
	return finish(r, &fx)
}

// checkMissing reports on containerd's built-in defaults.
func checkMissing(path, hostsDir string) Report {
	fx := fixer{path: path, hostsDir: hostsDir, table: registryTable(2), create: true}
	v1 := check1x(registrySettings{}, nil, nil, hostsDir, &fx)
	img, err := images(nil)
	v2 := check2x(img, err, nil, hostsDir, &fx)
	r := Report{
		Version:  "unknown",
		Problems: combine(v1.problems, v2.problems, "containerd 1.x: ", "containerd 2.x: "),
		Warnings: append([]string{fmt.Sprintf("no containerd config at %s: containerd runs on its defaults", path)},
			combine(v1.warnings, v2.warnings, "containerd 1.x: ", "containerd 2.x: ")...),
	}
	return finish(r, &fx)
}

// finish sets OK and Fix from the problems found.
func finish(r Report, fx *fixer) Report {
	r.OK = len(r.Problems) == 0
	if !r.OK {
		r.Fix = fx.String()
	}
	return r
}

// registryTable is the header of the CRI registry table in a file of the
// given config version.
func registryTable(version int) string {
	switch {
	case version >= 3:
		return `plugins."io.containerd.cri.v1.images".registry`
	case version == 2:
		return `plugins."io.containerd.grpc.v1.cri".registry`
	default:
		return `plugins.cri.registry`
	}
}

// view is what one containerd release line makes of the config.
type view struct {
	configPath string
	problems   []string
	warnings   []string
}

func (v *view) problem(format string, a ...any) {
	v.problems = append(v.problems, fmt.Sprintf(format, a...))
}

func (v *view) warn(format string, a ...any) {
	v.warnings = append(v.warnings, fmt.Sprintf(format, a...))
}

// disabledPlugins reports the CRI plugins among disabled (full IDs: the
// loader migrates version 1 short names).
func disabledPlugins(v *view, disabled []string, fx *fixer, ids ...string) {
	for _, p := range ids {
		if slices.Contains(disabled, p) {
			v.problem("plugin %s is in disabled_plugins: kubelet cannot pull images through this containerd", p)
			fx.enable(p)
		}
	}
}

// forcesLocalPull lists the settings with which containerd 2.x falls back to
// local image pull, as internal/cri/config CheckLocalImagePullConfigs does
// on Linux (an internal package, so listed here).
func forcesLocalPull(img imageSettings) []string {
	var out []string
	if !img.DisableSnapshotAnnotations {
		out = append(out, "disable_snapshot_annotations = false")
	}
	if img.DiscardUnpackedLayers {
		out = append(out, "discard_unpacked_layers = true")
	}
	if len(img.Registry.Mirrors) > 0 {
		out = append(out, "registry.mirrors")
	}
	if len(img.Registry.Configs) > 0 {
		out = append(out, "registry.configs")
	}
	if len(img.Registry.Auths) > 0 {
		out = append(out, "registry.auths")
	}
	if img.MaxConcurrentDownloads != 3 {
		out = append(out, fmt.Sprintf("max_concurrent_downloads = %d", img.MaxConcurrentDownloads))
	}
	if img.ImagePullWithSyncFs {
		out = append(out, "image_pull_with_sync_fs = true")
	}
	return out
}

// check2x checks containerd 2.x's CRI image service as loaded (decodeErr is
// the error decoding its table): what its InitFn does with config_path and
// where its pull paths look for hosts.toml (plugins/cri/images plugin.go,
// internal/cri/server/images image_pull.go).
func check2x(img imageSettings, decodeErr error, disabled []string, hostsDir string, fx *fixer) view {
	var v view
	disabledPlugins(&v, disabled, fx, criPlugin, imagesPlugin)
	if decodeErr != nil {
		v.problem("%v: containerd cannot load its CRI image service", decodeErr)
		fx.setPath()
		return v
	}
	reg := img.Registry
	forcesLocal := forcesLocalPull(img)
	localPull := img.UseLocalImagePull || len(forcesLocal) > 0
	deprecated(&v, reg)
	cp, defaulted, ok := configPath2x(&v, reg, fx)
	if !ok {
		return v
	}
	v.configPath = cp
	roots := filepath.SplitList(cp)
	if len(roots) > 1 && !localPull {
		what := fmt.Sprintf("config_path %q is", cp)
		if defaulted {
			what = fmt.Sprintf("config_path is not set, so containerd uses its default %q,", cp)
		}
		v.problem("%s a colon-separated list: the default pull path (the transfer service, use_local_image_pull = false) does not split it and looks for %s, which does not exist, so every hosts.toml is ignored",
			what, filepath.Join(cp, "<registry>", "hosts.toml"))
		fx.colonList()
		return v
	}
	if len(roots) > 1 && !img.UseLocalImagePull {
		v.warn("config_path %q is a colon-separated list that containerd splits only because %s makes it fall back to local image pull; without that setting every hosts.toml would be ignored (set use_local_image_pull = true to depend on nothing)",
			cp, strings.Join(forcesLocal, ", "))
	}
	if !localPull {
		roots = []string{cp}
	}
	checkRoots(&v, cp, roots, hostsDir, fx)
	return v
}

// configPath2x is the config_path containerd 2.x uses; ok is false when
// mirrors make it read no hosts.toml at all.
func configPath2x(v *view, reg registrySettings, fx *fixer) (cp string, defaulted, ok bool) {
	switch {
	case len(reg.Mirrors) > 0 && reg.ConfigPath != "":
		v.configPath = reg.ConfigPath
		v.problem("registry.mirrors and registry config_path are both set: containerd refuses to load the CRI image service (\"`mirrors` cannot be set when `config_path` is provided\")")
		fx.mirrors()
		return "", false, false
	case len(reg.Mirrors) > 0:
		v.problem("registry.mirrors is set and config_path is not: containerd uses the mirrors and reads no hosts.toml")
		fx.mirrors()
		fx.setPath()
		return "", false, false
	case reg.ConfigPath == "":
		return defaultConfigPath2x, true, true
	}
	return reg.ConfigPath, false, true
}

// check1x checks containerd 1.7's CRI plugin: no default config_path, always
// local image pull, config_path split into a list
// (pkg/cri/server/image_pull.go registryHosts, pkg/cri/config
// ValidatePluginConfig).
func check1x(reg registrySettings, decodeErr error, disabled []string, hostsDir string, fx *fixer) view {
	var v view
	disabledPlugins(&v, disabled, fx, criPlugin)
	if decodeErr != nil {
		v.problem("%v: containerd cannot load its CRI plugin", decodeErr)
		fx.setPath()
		return v
	}
	deprecated(&v, reg)
	v.configPath = reg.ConfigPath
	mirrors := len(reg.Mirrors) > 0
	switch {
	case reg.ConfigPath == "" && mirrors:
		v.problem("registry config_path is not set: containerd uses registry.mirrors and reads no hosts.toml")
		fx.mirrors()
		fx.setPath()
		return v
	case reg.ConfigPath == "":
		v.problem("registry config_path is not set, and containerd 1.x has no default: it reads no hosts.toml")
		fx.setPath()
		return v
	case mirrors:
		v.problem("registry.mirrors and registry config_path are both set: containerd refuses to load the CRI plugin (\"`mirrors` cannot be set when `config_path` is provided\")")
		fx.mirrors()
		return v
	}
	checkRoots(&v, reg.ConfigPath, filepath.SplitList(reg.ConfigPath), hostsDir, fx)
	return v
}

// checkRoots checks that hostsDir is the directory containerd searches first.
// containerd searches the roots in order and, for a registry, uses the first
// root that has a directory for it or a _default directory
// (hostDirFromRoots, config.HostDirFromRoot).
func checkRoots(v *view, cp string, roots []string, hostsDir string, fx *fixer) {
	var clean []string
	for _, r := range roots {
		if r != "" {
			clean = append(clean, filepath.Clean(r))
		}
	}
	switch i := slices.Index(clean, hostsDir); {
	case i < 0:
		v.problem("config_path %q does not include %q: containerd reads hosts.toml from %s, the node agent writes them to %s",
			cp, hostsDir, strings.Join(clean, " and "), hostsDir)
		fx.setPath()
	case i > 0:
		v.problem("config_path %q lists %s before %q: for each registry containerd uses the first of these with a directory for it (or a _default directory), which can hide the node agent's files",
			cp, strings.Join(clean[:i], " and "), hostsDir)
		fx.add("put %q first in config_path, or set config_path = %q", hostsDir, hostsDir)
	}
}

// deprecated warns about the registry sections config_path replaces.
func deprecated(v *view, reg registrySettings) {
	if len(reg.Configs) > 0 {
		v.warn("registry.configs is deprecated: with config_path set its TLS settings are ignored (only auth is used); put them in hosts.toml")
	}
	if len(reg.Auths) > 0 {
		v.warn("registry.auths is deprecated: use imagePullSecrets or hosts.toml-side configuration")
	}
}

// combine merges the findings of two views: a finding of both is listed once,
// unprefixed; one of a single view carries that view's prefix.
func combine(a, b []string, pa, pb string) []string {
	var out []string
	for _, s := range a {
		if slices.Contains(b, s) {
			out = append(out, s)
		} else {
			out = append(out, pa+s)
		}
	}
	for _, s := range b {
		if !slices.Contains(a, s) {
			out = append(out, pb+s)
		}
	}
	return out
}

// fixer collects the changes that resolve the problems found, once each.
type fixer struct {
	path, hostsDir string
	table          string // registry table header in the file's schema
	create         bool   // the file does not exist
	shortNames     bool   // version 1 file: plugins have short names
	keys           []string
	steps          map[string]string
}

// set records the step for key; a later step for the same key replaces it.
func (f *fixer) set(key, format string, a ...any) {
	if f.steps == nil {
		f.steps = map[string]string{}
	}
	if _, ok := f.steps[key]; !ok {
		f.keys = append(f.keys, key)
	}
	f.steps[key] = fmt.Sprintf(format, a...)
}

func (f *fixer) add(format string, a ...any) {
	s := fmt.Sprintf(format, a...)
	f.set(s, "%s", s)
}

func (f *fixer) setPath() {
	if _, ok := f.steps["config_path"]; !ok {
		f.set("config_path", "set config_path = %q under [%s]", f.hostsDir, f.table)
	}
}

func (f *fixer) colonList() {
	f.set("config_path", "set config_path = %q (one directory) under [%s], or keep a list that starts with %q and set use_local_image_pull = true under [plugins.\"io.containerd.cri.v1.images\"] so that containerd splits it",
		f.hostsDir, f.table, f.hostsDir)
}

// enable asks to remove plugin from disabled_plugins, by the name the file
// uses for it.
func (f *fixer) enable(plugin string) {
	if f.shortNames && plugin == criPlugin {
		plugin = "cri"
	}
	f.add("remove %q from disabled_plugins", plugin)
}

func (f *fixer) mirrors() {
	f.add("remove the [%s.mirrors] tables (each mirror becomes a [host] entry in a hosts.toml)", f.table)
}

func (f *fixer) String() string {
	if len(f.keys) == 0 {
		return ""
	}
	steps := make([]string, len(f.keys))
	for i, k := range f.keys {
		steps[i] = f.steps[k]
	}
	where := "in " + f.path
	if f.create {
		where = "create " + f.path + " with version = 2 (read by containerd 1.x, and by 2.x after migration) and"
	}
	return where + ": " + strings.Join(steps, "; ") +
		"; then restart containerd (it reads its config only at start; hosts.toml files need no restart)"
}
