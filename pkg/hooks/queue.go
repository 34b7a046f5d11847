package hooks

import (
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// queue is the set of Tags with a check pending. Coalescing is leading-edge,
// so a single push is checked at once (webhook to served pin well under a
// second), while a burst still costs one check:
//   - a notification for a Tag not checked within the last window is due now;
//   - within a window after a check, a notification carrying the same
//     payload as that check (the same event delivered again, or a burst of
//     copies) is dropped, and any other one is due when the window ends;
//   - notifications for a Tag with a check pending join it.
type queue struct {
	window  time.Duration
	pending prometheus.Gauge

	mu    sync.Mutex
	items map[string]*item
	// recent remembers, per Tag, the last check taken and its payload, for
	// one window.
	recent map[string]taken
	wake   chan struct{}
}

// taken is a check handed to the worker.
type taken struct {
	at      time.Time
	payload string
}

// item is one Tag's pending check.
type item struct {
	tag      string
	provider string
	payload  string // hash of the notification that queued it
	due      time.Time
	attempts int // failed patches so far
}

func newQueue(window time.Duration, pending prometheus.Gauge) *queue {
	return &queue{window: window, pending: pending, items: map[string]*item{}, recent: map[string]taken{}, wake: make(chan struct{}, 1)}
}

// add queues a check of each Tag for a notification whose body hashes to
// payload, by the rules on queue.
func (q *queue) add(tags []string, provider, payload string, now time.Time) {
	q.mu.Lock()
	added := false
	for _, t := range tags {
		if _, ok := q.items[t]; ok {
			continue
		}
		due := now
		if last, ok := q.recent[t]; ok && now.Sub(last.at) < q.window {
			if last.payload == payload {
				continue
			}
			due = last.at.Add(q.window)
		}
		q.items[t] = &item{tag: t, provider: provider, payload: payload, due: due}
		added = true
	}
	q.pending.Set(float64(len(q.items)))
	q.mu.Unlock()
	if added {
		q.signal()
	}
}

// retry puts back a check whose patch failed, unless a new notification
// queued the Tag meanwhile (that one will patch).
func (q *queue) retry(it *item, due time.Time) {
	q.mu.Lock()
	if _, ok := q.items[it.tag]; !ok {
		it.due = due
		q.items[it.tag] = it
	}
	q.pending.Set(float64(len(q.items)))
	q.mu.Unlock()
	q.signal()
}

func (q *queue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// takeDue removes and returns the items due at now (all items when all is
// set), oldest first, and the deadline of the earliest one left (zero when
// none is).
func (q *queue) takeDue(now time.Time, all bool) (due []*item, next time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for name, last := range q.recent {
		if now.Sub(last.at) >= q.window {
			delete(q.recent, name)
		}
	}
	for name, it := range q.items {
		if all || !it.due.After(now) {
			due = append(due, it)
			delete(q.items, name)
			q.recent[name] = taken{at: now, payload: it.payload}
			continue
		}
		if next.IsZero() || it.due.Before(next) {
			next = it.due
		}
	}
	q.pending.Set(float64(len(q.items)))
	sort.Slice(due, func(i, j int) bool {
		if !due[i].due.Equal(due[j].due) {
			return due[i].due.Before(due[j].due)
		}
		return due[i].tag < due[j].tag
	})
	return due, next
}

// len is the number of pending checks.
func (q *queue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}
