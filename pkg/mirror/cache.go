package mirror

import (
	"context"
	"strconv"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"
)

// DefaultManifestCacheBytes bounds the manifest cache when
// Options.ManifestCacheBytes is 0. Indexes and image manifests are 1-10 KB,
// so this holds thousands of them.
const DefaultManifestCacheBytes = 16 << 20

// cacheKey names a manifest in one repository. The repository is part of
// the key because the bundled registry scopes manifests by repository: the
// cache answers a digest only for the repository it was read from, exactly
// as the registry would.
type cacheKey struct{ registry, repository, digest string }

// cacheEntry is one verified manifest. Entries are immutable once inserted
// (only the list links change, under the cache's lock), so a reader may use
// one after releasing the lock.
type cacheEntry struct {
	key       cacheKey
	body      []byte
	mediaType string
	// byDigest: the entry may answer requests by digest. True for bytes read
	// from the bundled registry (or, for a strict registry, from the
	// upstream by digest, which the mirror streams itself anyway). False
	// for bytes a pinned tag's GET fetched from the upstream for an ordinary
	// registry: by digest the mirror answers those with 404 so containerd
	// fetches upstream itself, and the cache does not change that answer.
	byDigest bool
	// Response header values, shared and read-only (capacity-limited, so an
	// append cannot write into them).
	hDigest, hType, hLength, hEtag []string

	prev, next *cacheEntry
}

// manifestCache holds verified manifest bytes, bounded by their total size,
// evicting the least recently used. Content is addressed by digest, so an
// entry is never stale: a pin that moves needs no invalidation, its old
// manifest ages out.
type manifestCache struct {
	max, maxEntry int64
	metrics       *Metrics

	mu       sync.Mutex
	entries  map[cacheKey]*cacheEntry
	lru      cacheEntry // sentinel: lru.next is the most recently used
	size     int64
	inflight map[cacheKey]chan struct{}
}

// newManifestCache returns a cache of at most max bytes of manifests; nil
// (no cache) when max is negative. An entry larger than an eighth of max is
// not kept, so one huge manifest cannot flush the rest.
func newManifestCache(max int64, m *Metrics) *manifestCache {
	if max < 0 {
		return nil
	}
	if max == 0 {
		max = DefaultManifestCacheBytes
	}
	c := &manifestCache{
		max: max, maxEntry: min(max/8, maxManifestSize), metrics: m,
		entries: map[cacheKey]*cacheEntry{}, inflight: map[cacheKey]chan struct{}{},
	}
	c.lru.next, c.lru.prev = &c.lru, &c.lru
	return c
}

// get returns the entry for k, or nil, and marks it recently used.
func (c *manifestCache) get(k cacheKey) *cacheEntry {
	c.mu.Lock()
	e := c.entries[k]
	if e != nil && c.lru.next != e {
		c.unlink(e)
		c.pushFront(e)
	}
	c.mu.Unlock()
	return e
}

// add inserts body as the manifest k names, if it hashes to k's digest; it
// returns the entry, or nil when the bytes were refused (wrong digest) or
// are too large to keep. Nothing unverified is ever inserted: the check is
// here, not left to the callers.
func (c *manifestCache) add(k cacheKey, body []byte, mediaType string, byDigest bool) *cacheEntry {
	if int64(len(body)) > c.maxEntry {
		return nil
	}
	d := digest.Digest(k.digest)
	if alg := d.Algorithm(); !alg.Available() || alg.FromBytes(body) != d {
		return nil
	}
	// The key and media type may be substrings of a request path or of a
	// pin snapshot: copy them so an entry keeps nothing else alive.
	k = cacheKey{strings.Clone(k.registry), strings.Clone(k.repository), strings.Clone(k.digest)}
	e := &cacheEntry{key: k, body: append(make([]byte, 0, len(body)), body...), mediaType: strings.Clone(mediaType), byDigest: byDigest}
	vals := []string{k.digest, e.mediaType, strconv.Itoa(len(body)), `"` + k.digest + `"`}
	e.hDigest, e.hType, e.hLength, e.hEtag = vals[0:1:1], vals[1:2:2], vals[2:3:3], vals[3:4:4]

	c.mu.Lock()
	var delta int64
	if old := c.entries[k]; old != nil {
		// Same digest, same bytes: keep the wider permission.
		if old.byDigest && !e.byDigest {
			e.byDigest = true
		}
		c.unlink(old)
		delete(c.entries, k)
		c.size -= int64(len(old.body))
		delta -= int64(len(old.body))
	}
	c.entries[k] = e
	c.pushFront(e)
	c.size += int64(len(body))
	delta += int64(len(body))
	for c.size > c.max {
		last := c.lru.prev
		c.unlink(last)
		delete(c.entries, last.key)
		c.size -= int64(len(last.body))
		delta -= int64(len(last.body))
	}
	c.mu.Unlock()
	c.metrics.cacheBytes.Add(float64(delta))
	return e
}

// claim is called on a miss before fetching k. If k has been added since
// the miss, it returns the entry. Otherwise, when no other request is
// fetching k, it returns a release function to call when the fetch is over
// (whatever its outcome). When another request is fetching k, claim waits
// for that fetch to end (or for ctx) and returns what the cache then holds,
// possibly nothing: the caller then fetches without claiming. So concurrent
// misses of one manifest cost one read of the bundled registry, and a
// failed fetch delays the others by one round trip at most.
func (c *manifestCache) claim(ctx context.Context, k cacheKey) (e *cacheEntry, release func()) {
	c.mu.Lock()
	if e = c.entries[k]; e != nil {
		c.unlink(e)
		c.pushFront(e)
		c.mu.Unlock()
		return e, nil
	}
	ch, busy := c.inflight[k]
	if !busy {
		ch = make(chan struct{})
		c.inflight[k] = ch
	}
	c.mu.Unlock()
	if !busy {
		return nil, func() {
			c.mu.Lock()
			delete(c.inflight, k)
			c.mu.Unlock()
			close(ch)
		}
	}
	select {
	case <-ch:
	case <-ctx.Done():
	}
	return c.get(k), nil
}

// entryCount and sizeBytes report the cache's contents, for tests.
func (c *manifestCache) entryCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

func (c *manifestCache) sizeBytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.size
}

func (c *manifestCache) unlink(e *cacheEntry) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}

func (c *manifestCache) pushFront(e *cacheEntry) {
	e.prev, e.next = &c.lru, c.lru.next
	c.lru.next.prev = e
	c.lru.next = e
}
