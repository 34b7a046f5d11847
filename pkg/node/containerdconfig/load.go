package containerdconfig

import (
	"context"
	"fmt"
	"io"
	"iter"
	"os"
	"reflect"
	"slices"

	srvconfig "github.com/containerd/containerd/v2/cmd/containerd/server/config"
	// The CRI image service's registration carries the migration containerd
	// runs at start on version 1-3 files (image settings move from the 1.x
	// CRI plugin to imagesPlugin) and the service's defaults. Without this
	// import a version 2 file's registry settings would not reach the 2.x view.
	_ "github.com/containerd/containerd/v2/plugins/cri/images"
	"github.com/containerd/containerd/v2/version"
	"github.com/containerd/log"
	"github.com/containerd/plugin"
	"github.com/containerd/plugin/registry"
	"github.com/pelletier/go-toml/v2"
	"github.com/sirupsen/logrus"
)

// Plugin IDs and defaults, as in containerd v2.4.2.
const (
	// criPlugin is the 1.x CRI plugin ("cri" in version 1 files).
	criPlugin = "io.containerd.grpc.v1.cri"
	// imagesPlugin is containerd 2.x's CRI image service (config version 3+).
	imagesPlugin = "io.containerd.cri.v1.images"
	// defaultConfigPath2x is the config_path containerd 2.x's CRI image
	// service sets on Linux when neither config_path nor mirrors is set: in
	// its InitFn, not in its default config, so the loader does not show it
	// (plugins/cri/images/plugin.go).
	defaultConfigPath2x = "/etc/containerd/certs.d:/etc/docker/certs.d"
)

// loaded is the node's containerd config as containerd itself loads it at
// start: imports merged, every file migrated to the latest version with the
// plugins' migrations.
type loaded struct {
	// version is the main file's own config version (1 when unset).
	version int
	cfg     srvconfig.Config
}

// load runs containerd's LoadConfigWithPlugins on path, as containerd's main
// does, with the CRI image service's migration registered.
func load(path string) (l loaded, err error) {
	defer func() {
		// The migrations type-assert plugin tables; containerd would crash
		// on such a file, the node agent reports it.
		if p := recover(); p != nil {
			err = fmt.Errorf("load %s: containerd's config migration fails: %v", path, p)
		}
	}()
	l.cfg = srvconfig.Config{Version: version.ConfigVersion}
	if err := srvconfig.LoadConfigWithPlugins(quiet(), path, registrations, &l.cfg); err != nil {
		return loaded{}, fmt.Errorf("load %s: %w", path, err)
	}
	l.version, err = fileVersion(path)
	return l, err
}

// registrations lists the linked plugin registrations, as containerd's main
// does for LoadConfigWithPlugins.
func registrations() iter.Seq[plugin.Registration] {
	return slices.Values(registry.Graph(func(*plugin.Registration) bool { return false }))
}

// quiet is a context whose containerd logger discards: containerd logs
// migrations and unknown keys on its own logrus logger, not the agent's.
func quiet() context.Context {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return log.WithLogger(context.Background(), logrus.NewEntry(l))
}

// fileVersion reads the version key of the main file alone: containerd's
// merged config carries the latest version.
func fileVersion(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	var v struct {
		Version int `toml:"version"`
	}
	if err := toml.Unmarshal(b, &v); err != nil {
		return 0, fmt.Errorf("read version of %s: %w", path, err)
	}
	return max(v.Version, 1), nil
}

// registrySettings are the CRI registry settings this check reads.
type registrySettings struct {
	ConfigPath string         `toml:"config_path"`
	Mirrors    map[string]any `toml:"mirrors"`
	Configs    map[string]any `toml:"configs"`
	Auths      map[string]any `toml:"auths"`
}

// imageSettings are the CRI image service settings this check reads.
type imageSettings struct {
	Registry                   registrySettings `toml:"registry"`
	UseLocalImagePull          bool             `toml:"use_local_image_pull"`
	DisableSnapshotAnnotations bool             `toml:"disable_snapshot_annotations"`
	DiscardUnpackedLayers      bool             `toml:"discard_unpacked_layers"`
	MaxConcurrentDownloads     int              `toml:"max_concurrent_downloads"`
	ImagePullWithSyncFs        bool             `toml:"image_pull_with_sync_fs"`
}

// images decodes the image service's table into containerd's own config
// type, starting from its defaults, as containerd does before InitFn. cfg
// nil gives the defaults.
func images(cfg *srvconfig.Config) (imageSettings, error) {
	reg, err := imagesRegistration()
	if err != nil {
		return imageSettings{}, err
	}
	// A copy of the registered default, which must stay as it is.
	into := reflect.New(reflect.TypeOf(reg.Config).Elem())
	into.Elem().Set(reflect.ValueOf(reg.Config).Elem())
	if cfg != nil {
		if _, err := cfg.Decode(quiet(), imagesPlugin, into.Interface()); err != nil {
			return imageSettings{}, fmt.Errorf("decode [plugins.%q]: %w", imagesPlugin, err)
		}
	}
	return settingsOf[imageSettings](into.Interface())
}

// criRegistry decodes the 1.x CRI plugin's registry table.
func criRegistry(cfg *srvconfig.Config) (registrySettings, error) {
	var cri struct {
		Registry registrySettings `toml:"registry"`
	}
	if _, err := cfg.Decode(quiet(), criPlugin, &cri); err != nil {
		return registrySettings{}, fmt.Errorf("decode [plugins.%q]: %w", criPlugin, err)
	}
	return cri.Registry, nil
}

func imagesRegistration() (plugin.Registration, error) {
	for r := range registrations() {
		if r.URI() == imagesPlugin && r.Config != nil {
			return r, nil
		}
	}
	return plugin.Registration{}, fmt.Errorf("containerd plugin %s is not linked", imagesPlugin)
}

// settingsOf reads the fields T names from containerd's config value.
func settingsOf[T any](v any) (T, error) {
	var out T
	b, err := toml.Marshal(v)
	if err != nil {
		return out, fmt.Errorf("encode %T: %w", v, err)
	}
	if err := toml.Unmarshal(b, &out); err != nil {
		return out, fmt.Errorf("decode %T: %w", v, err)
	}
	return out, nil
}
