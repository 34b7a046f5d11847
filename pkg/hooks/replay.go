package hooks

import (
	"net/http"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/time/rate"
)

// maxSeenDeliveries bounds the replay memory: about 100 bytes an entry, so
// a few MiB at most, and at GitHub's and Harbor's rates days of deliveries.
const maxSeenDeliveries = 1 << 15

// replayMemory is a bounded set of delivery keys seen, oldest out first.
type replayMemory struct {
	mu    sync.Mutex
	keys  map[string]struct{}
	order []string // ring of keys in insertion order
	next  int
}

func newReplayMemory(n int) *replayMemory {
	return &replayMemory{keys: make(map[string]struct{}, n), order: make([]string, n)}
}

// add records keys and reports whether none of them was seen before; when
// one was, nothing is recorded.
func (m *replayMemory) add(keys ...string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range keys {
		if _, ok := m.keys[k]; ok {
			return false
		}
	}
	for _, k := range keys {
		if old := m.order[m.next]; old != "" {
			delete(m.keys, old)
		}
		m.order[m.next] = k
		m.keys[k] = struct{}{}
		m.next = (m.next + 1) % len(m.order)
	}
	return true
}

// remove forgets keys (a delivery that was not processed after all). Their
// ring slots stay until overwritten; a key absent from the map is skipped
// then.
func (m *replayMemory) remove(keys ...string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range keys {
		delete(m.keys, k)
	}
}

// replayKeys names an authenticated delivery for the replay memory:
//   - GitHub: its X-GitHub-Delivery id, and the hash of the signed body. The
//     id is not covered by the signature, so a replay under a fresh id is
//     caught by the body: every package event carries the version's own
//     ids and times, so two genuine deliveries never share a body, while a
//     redelivery from GitHub's UI shares both and is answered "already
//     received".
//   - Harbor: the hash of the body, which carries the event's occur_at.
//   - Docker Hub, Quay and generic: none. Their payloads name no delivery,
//     and two genuine pushes of one tag may send identical bytes; the
//     coalescing window is all that merges those.
func (s *Server) replayKeys(p *provider, h http.Header, sum [32]byte) []string {
	switch p.name {
	case ProviderGitHub:
		keys := []string{"github body " + string(sum[:])}
		if id := h.Get("X-GitHub-Delivery"); id != "" && len(id) <= 128 {
			keys = append(keys, "github id "+id)
		}
		return keys
	case ProviderHarbor:
		return []string{"harbor body " + string(sum[:])}
	}
	return nil
}

// maxMessage bounds what an error answer or log line repeats of a payload.
const maxMessage = 256

// clip shortens s to maxMessage bytes (on a rune boundary), saying how long
// it was: a payload field of 1 MiB must not come back as a 1 MiB answer and
// log line.
func clip(s string) string {
	if len(s) <= maxMessage {
		return s
	}
	cut := maxMessage
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "... (" + strconv.Itoa(len(s)) + " bytes)"
}

// logLimiter lets through a few warnings about unauthenticated deliveries
// and then one per interval, counting what it held back.
type logLimiter struct {
	mu         sync.Mutex
	lim        *rate.Limiter
	suppressed int
}

func newLogLimiter(every time.Duration, burst int) *logLimiter {
	return &logLimiter{lim: rate.NewLimiter(rate.Every(every), burst)}
}

// allow reports whether to log now and, if so, how many were suppressed
// since the last line.
func (l *logLimiter) allow(now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.lim.AllowN(now, 1) {
		l.suppressed++
		return false, 0
	}
	n := l.suppressed
	l.suppressed = 0
	return true, n
}
