package hooks

import (
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// queue is the set of Tags with a check pending. A Tag's first notification
// sets its deadline (now + window); later ones until the deadline join it, so
// a burst costs one check and the first notification waits at most one
// window. A notification after the flush starts a new window.
type queue struct {
	window  time.Duration
	pending prometheus.Gauge

	mu    sync.Mutex
	items map[string]*item
	wake  chan struct{}
}

// item is one Tag's pending check.
type item struct {
	tag      string
	provider string
	due      time.Time
	attempts int // failed patches so far
}

func newQueue(window time.Duration, pending prometheus.Gauge) *queue {
	return &queue{window: window, pending: pending, items: map[string]*item{}, wake: make(chan struct{}, 1)}
}

// add queues a check of each Tag unless one is already pending.
func (q *queue) add(tags []string, provider string, now time.Time) {
	q.mu.Lock()
	added := false
	for _, t := range tags {
		if _, ok := q.items[t]; ok {
			continue
		}
		q.items[t] = &item{tag: t, provider: provider, due: now.Add(q.window)}
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
	for name, it := range q.items {
		if all || !it.due.After(now) {
			due = append(due, it)
			delete(q.items, name)
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
