package hoststoml

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// backupDir is the directory, under the hosts dir, that holds the registry
// directories tagger moved aside. containerd never looks it up: "_backup" is
// not a registry name.
const backupDir = "_backup"

// Options configures a Manager.
type Options struct {
	// Dir is containerd's config_path: the directory holding one directory
	// per registry (default /etc/containerd/certs.d). It must be a single
	// directory, not a colon-separated list.
	Dir string
	// MirrorURL is the node agent's mirror, e.g. http://127.0.0.1:5050.
	MirrorURL string
	// DialTimeout is written as dial_timeout on the mirror's entry: how long
	// containerd waits to connect before falling back upstream when the
	// mirror is down. Zero leaves containerd's default.
	DialTimeout time.Duration
	// Strict reports the registries whose only endpoint is the mirror
	// (server = the mirror, no upstream fallback): a pin can never be bypassed,
	// but containerd fails every pull from that registry while the mirror is
	// down. Nil means no registry is strict.
	Strict func(registry string) bool
	// PlainHTTP reports the registries whose upstream is reached over
	// http:// (a server URL without a scheme means https:// to containerd).
	// A server the previous hosts.toml named is kept as written. Nil means
	// none.
	PlainHTTP func(registry string) bool
}

// Manager writes containerd hosts.toml files that put the node agent's
// mirror in front of each registry with pins. Its methods are safe for
// concurrent use; a hosts dir must have one Manager (one node agent).
type Manager struct {
	o      Options
	mirror string

	mu      sync.Mutex
	written []string
	writes  int // files written, for tests
}

// New validates o and returns a Manager. It touches nothing on disk.
func New(o Options) (*Manager, error) {
	if o.Dir == "" {
		return nil, errors.New("hosts dir not set")
	}
	if strings.Contains(o.Dir, string(os.PathListSeparator)) {
		return nil, fmt.Errorf("hosts dir %q: must be one directory, not a list", o.Dir)
	}
	// Rewritten ca/client paths must be absolute: containerd would resolve
	// relative ones against the registry directory.
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, fmt.Errorf("hosts dir %q: %w", o.Dir, err)
	}
	o.Dir = dir
	u, err := url.Parse(o.MirrorURL)
	if err != nil {
		return nil, fmt.Errorf("mirror URL %q: %w", o.MirrorURL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("mirror URL %q: want http(s)://host[:port][/path]", o.MirrorURL)
	}
	if o.DialTimeout < 0 {
		return nil, fmt.Errorf("dial timeout %s: negative", o.DialTimeout)
	}
	if o.Strict == nil {
		o.Strict = func(string) bool { return false }
	}
	if o.PlainHTTP == nil {
		o.PlainHTTP = func(string) bool { return false }
	}
	return &Manager{o: o, mirror: strings.TrimRight(o.MirrorURL, "/")}, nil
}

// Written returns the registries whose hosts.toml the last Sync left in
// place, sorted. It is empty before the first Sync and after Cleanup.
func (m *Manager) Written() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.written)
}

// Sync makes the hosts dir match registries (tagger's normalized names, such
// as "docker.io" or "127.0.0.1:41234"): each gets tagger's hosts.toml, taking
// over and backing up a directory tagger did not write; every registry
// directory tagger wrote that is no longer listed is removed and its backup
// restored. Directories tagger does not manage and that are not listed are
// never touched. Sync writes only what changed and finishes any step a crash
// interrupted. A failure on one registry does not stop the others; all
// failures are returned joined.
func (m *Manager) Sync(registries []string) error {
	m.mu.Lock()
	defer m.mu.Unlock()

	if err := os.MkdirAll(m.o.Dir, 0o755); err != nil {
		return fmt.Errorf("create hosts dir %s: %w", m.o.Dir, err)
	}
	var errs []error
	want := map[string]bool{}
	for _, r := range registries {
		if err := validRegistry(r); err != nil {
			errs = append(errs, err)
			continue
		}
		want[r] = true
	}
	written, err := m.reconcile(want)
	m.written = written
	return errors.Join(append(errs, err)...)
}

// Cleanup removes every registry directory tagger wrote and restores every
// backup to where it was, byte for byte (a backup is the original directory,
// moved), then removes the empty backup dir. Run it when the node agent is
// uninstalled; it is idempotent.
func (m *Manager) Cleanup() error {
	m.mu.Lock()
	defer m.mu.Unlock()

	m.written = nil
	if ok, err := exists(m.o.Dir); err != nil || !ok {
		return err
	}
	_, err := m.reconcile(nil)
	return err
}

// reconcile writes want, releases every other registry tagger holds and
// returns the registries written.
func (m *Manager) reconcile(want map[string]bool) ([]string, error) {
	var errs []error
	if err := m.sweep(); err != nil {
		errs = append(errs, err)
	}

	var written []string
	for _, r := range slices.Sorted(maps.Keys(want)) {
		if err := m.ensure(r); err != nil {
			errs = append(errs, fmt.Errorf("configure %s in %s: %w", r, m.o.Dir, err))
			continue
		}
		written = append(written, r)
	}

	held, err := m.held()
	if err != nil {
		errs = append(errs, err)
	}
	for _, r := range held {
		if want[r] {
			continue
		}
		if err := m.release(r); err != nil {
			errs = append(errs, fmt.Errorf("restore %s in %s: %w", r, m.o.Dir, err))
		}
	}

	if err := removeIfEmpty(filepath.Join(m.o.Dir, backupDir)); err != nil {
		errs = append(errs, err)
	}
	return written, errors.Join(errs...)
}

// ensure puts tagger's hosts.toml in place for registry r.
//
// Order, for crash safety: (1) tagger's new directory is built complete under
// a temporary name; (2) the registry's existing directories move to _backup
// (renames); (3) the new directory is renamed into place. containerd sees
// the old directory, then for the moment between (2) and (3) none (it uses
// _default or its built-in defaults), then tagger's. A crash after (2)
// leaves backups and no directory: the next Sync builds it from the backups,
// Cleanup restores them. An existing directory of tagger's is updated in
// place by an atomic file replace.
func (m *Manager) ensure(r string) error {
	dst := filepath.Join(m.o.Dir, r)
	ours, err := managed(dst)
	if err != nil {
		return err
	}

	// Directories containerd would read for r that are not ours move to
	// _backup; a directory named host_port_ would otherwise shadow ours.
	var move []string
	for _, n := range lookupDirs(r) {
		p := filepath.Join(m.o.Dir, n)
		if n == r && ours {
			continue
		}
		ok, err := exists(p)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if target, err := os.Readlink(p); err == nil && !filepath.IsAbs(target) {
			return fmt.Errorf("%s is a symlink to the relative path %q, which would point elsewhere from %s; make it absolute", p, target, backupDir)
		}
		bp := filepath.Join(m.o.Dir, backupDir, n)
		taken, err := exists(bp)
		if err != nil {
			return err
		}
		if taken {
			return fmt.Errorf("%s is not tagger's but %s already holds an earlier backup; move one of them away", p, bp)
		}
		move = append(move, n)
	}

	b, err := m.base(r, move)
	if err != nil {
		return err
	}
	content, err := render(entry{
		registry:    r,
		mirror:      m.mirror,
		dialTimeout: m.o.DialTimeout,
		strict:      m.o.Strict(r),
		plainHTTP:   m.o.PlainHTTP(r),
		base:        b,
	})
	if err != nil {
		return err
	}

	if ours {
		if err := m.backup(move); err != nil {
			return err
		}
		cur, err := os.ReadFile(filepath.Join(dst, "hosts.toml"))
		if err == nil && bytes.Equal(cur, content) {
			return nil
		}
		return m.write(dst, content)
	}

	stage, err := os.MkdirTemp(m.o.Dir, tempPrefix+"new-")
	if err != nil {
		return fmt.Errorf("create staging directory in %s: %w", m.o.Dir, err)
	}
	if err := os.Chmod(stage, 0o755); err != nil {
		os.RemoveAll(stage)
		return fmt.Errorf("chmod %s: %w", stage, err)
	}
	if err := m.write(stage, content); err != nil {
		os.RemoveAll(stage)
		return err
	}
	if err := m.backup(move); err != nil {
		os.RemoveAll(stage)
		return err
	}
	return rename(stage, dst)
}

// write replaces dir/hosts.toml atomically.
func (m *Manager) write(dir string, content []byte) error {
	m.writes++
	return writeFileAtomic(dir, "hosts.toml", content, 0o644)
}

// base returns the configuration containerd used for r before tagger: the
// first, in containerd's lookup order, of r's directories (about to be moved
// or already in _backup), else _default, else nothing. Paths in it are
// rewritten to where the files are (or will be, once moved).
func (m *Manager) base(r string, move []string) (base, error) {
	for _, n := range lookupDirs(r) {
		orig := filepath.Join(m.o.Dir, n)
		bp := filepath.Join(m.o.Dir, backupDir, n)
		if slices.Contains(move, n) {
			return loadBase(orig, orig, bp)
		}
		ok, err := exists(bp)
		if err != nil {
			return base{}, err
		}
		if ok {
			return loadBase(bp, orig, bp)
		}
	}
	// containerd's HostDirFromRoot uses os.Stat: a _default symlink counts.
	def := filepath.Join(m.o.Dir, defaultDir)
	if _, err := os.Stat(def); err == nil {
		return loadBase(def, def, def)
	}
	return base{}, nil
}

// backup moves the named registry directories into _backup, unchanged.
func (m *Manager) backup(names []string) error {
	if len(names) == 0 {
		return nil
	}
	bd := filepath.Join(m.o.Dir, backupDir)
	// 0700: backups may hold client keys.
	if err := os.Mkdir(bd, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create %s: %w", bd, err)
	}
	for _, n := range names {
		if err := rename(filepath.Join(m.o.Dir, n), filepath.Join(bd, n)); err != nil {
			return err
		}
	}
	return nil
}

// release removes tagger's directory for r and moves r's backups back.
//
// Order, for crash safety: tagger's directory is first renamed to a
// temporary name (so that no half-deleted directory is ever left under the
// registry's name), then each backup is renamed back, then the temporary
// directory is deleted. A crash in between leaves a backup and no directory
// (the next Sync or Cleanup restores it) or a temporary directory (swept).
func (m *Manager) release(r string) error {
	dst := filepath.Join(m.o.Dir, r)
	ours, err := managed(dst)
	if err != nil {
		return err
	}
	var trash string
	if ours {
		trash, err = os.MkdirTemp(m.o.Dir, tempPrefix+"old-")
		if err != nil {
			return fmt.Errorf("create temporary directory in %s: %w", m.o.Dir, err)
		}
		if err := rename(dst, filepath.Join(trash, "dir")); err != nil {
			return err
		}
	}
	var errs []error
	for _, n := range lookupDirs(r) {
		bp := filepath.Join(m.o.Dir, backupDir, n)
		ok, err := exists(bp)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !ok {
			continue
		}
		orig := filepath.Join(m.o.Dir, n)
		taken, err := exists(orig)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if taken {
			errs = append(errs, fmt.Errorf("cannot restore %s: %s exists and is not tagger's; move one of them away", bp, orig))
			continue
		}
		if err := rename(bp, orig); err != nil {
			errs = append(errs, err)
		}
	}
	if trash != "" {
		if err := os.RemoveAll(trash); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", trash, err))
		}
	}
	return errors.Join(errs...)
}

// held lists the registries tagger holds: those with a directory tagger wrote
// and those with a backup.
func (m *Manager) held() ([]string, error) {
	set := map[string]bool{}
	entries, err := os.ReadDir(m.o.Dir)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", m.o.Dir, err)
	}
	var errs []error
	for _, e := range entries {
		n := e.Name()
		if strings.HasPrefix(n, ".") || strings.HasPrefix(n, "_") {
			continue
		}
		ok, err := managed(filepath.Join(m.o.Dir, n))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if ok {
			set[n] = true
		}
	}
	bd := filepath.Join(m.o.Dir, backupDir)
	backups, err := os.ReadDir(bd)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, fmt.Errorf("list %s: %w", bd, err))
	}
	for _, e := range backups {
		if !strings.HasPrefix(e.Name(), ".") {
			set[registryOfDir(e.Name())] = true
		}
	}
	return slices.Sorted(maps.Keys(set)), errors.Join(errs...)
}

// sweep removes the temporaries an interrupted step left: tagger's staging
// and discarded directories in the hosts dir, and temporary files in tagger's
// registry directories.
func (m *Manager) sweep() error {
	entries, err := os.ReadDir(m.o.Dir)
	if err != nil {
		return fmt.Errorf("list %s: %w", m.o.Dir, err)
	}
	var errs []error
	for _, e := range entries {
		p := filepath.Join(m.o.Dir, e.Name())
		if strings.HasPrefix(e.Name(), tempPrefix) {
			if err := os.RemoveAll(p); err != nil {
				errs = append(errs, fmt.Errorf("remove leftover %s: %w", p, err))
			}
			continue
		}
		ours, err := managed(p)
		if err != nil || !ours {
			continue
		}
		files, err := os.ReadDir(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("list %s: %w", p, err))
			continue
		}
		for _, f := range files {
			if strings.HasPrefix(f.Name(), tempPrefix) {
				if err := os.Remove(filepath.Join(p, f.Name())); err != nil {
					errs = append(errs, fmt.Errorf("remove leftover %s: %w", filepath.Join(p, f.Name()), err))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// removeIfEmpty removes dir when it exists and is empty.
func removeIfEmpty(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list %s: %w", dir, err)
	}
	if len(entries) > 0 {
		return nil
	}
	if err := os.Remove(dir); err != nil {
		return fmt.Errorf("remove empty %s: %w", dir, err)
	}
	return syncDir(filepath.Dir(dir))
}
