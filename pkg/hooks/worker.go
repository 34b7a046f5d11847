package hooks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
)

const (
	// patchWorkers bounds concurrent annotation patches.
	patchWorkers = 4
	// maxPatchAttempts is how often a failing patch is tried before the
	// check is dropped (the next notification queues it again).
	maxPatchAttempts = 5
	// maxRetryDelay caps the backoff between patch attempts.
	maxRetryDelay = time.Minute
	// shutdownFlushTimeout bounds the final flush when Run is stopped, so
	// accepted notifications are not lost on a rolling update.
	shutdownFlushTimeout = 5 * time.Second
)

// Run is the coalescing worker: it patches each pending Tag's check
// annotation once its window has passed, until ctx is cancelled, then
// flushes what is still pending (bounded by a few seconds) and returns nil.
// Only one Run may be active per Server.
func (s *Server) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("hooks: Server.Run is already running")
	}
	defer s.running.Store(false)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if ctx.Err() != nil {
			s.drain()
			return nil
		}
		due, next := s.queue.takeDue(time.Now(), false)
		s.flush(ctx, due)
		var fire <-chan time.Time
		if !next.IsZero() {
			timer.Reset(time.Until(next))
			fire = timer.C
		}
		select {
		case <-ctx.Done():
		case <-s.queue.wake:
		case <-fire:
		}
	}
}

// Start is Run, so a Server is a controller-runtime manager.Runnable
// (mgr.Add(server)).
func (s *Server) Start(ctx context.Context) error { return s.Run(ctx) }

// NeedLeaderElection is false: every replica serving webhooks must flush its
// own queue, and an annotation patch from any replica reaches the leader.
func (s *Server) NeedLeaderElection() bool { return false }

// drain flushes every pending check on shutdown, once, without retries.
func (s *Server) drain() {
	due, _ := s.queue.takeDue(time.Time{}, true)
	if len(due) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), shutdownFlushTimeout)
	defer cancel()
	for _, it := range due {
		it.attempts = maxPatchAttempts - 1 // no retry after this one
	}
	s.flush(ctx, due)
	if n := s.queue.len(); n > 0 {
		s.log.WithField("pending", n).Warn("webhook checks dropped at shutdown")
	}
}

// flush patches items with at most patchWorkers in flight.
func (s *Server) flush(ctx context.Context, items []*item) {
	if len(items) == 0 {
		return
	}
	work := make(chan *item)
	var wg sync.WaitGroup
	for range min(patchWorkers, len(items)) {
		wg.Go(func() {
			for it := range work {
				s.requestCheck(ctx, it)
			}
		})
	}
	for _, it := range items {
		work <- it
	}
	close(work)
	wg.Wait()
}

// requestCheck sets the Tag's check annotation to a value never used before.
func (s *Server) requestCheck(ctx context.Context, it *item) {
	value := fmt.Sprintf("webhook:%s:%d", it.provider, s.nextNano())
	log := s.log.WithFields(logrus.Fields{"tag": it.tag, "provider": it.provider})
	err := s.patchAnnotation(ctx, it.tag, value)
	switch {
	case err == nil:
		s.metrics.checks.WithLabelValues(it.provider, patchRequested).Inc()
		log.WithField("check", value).Info("webhook check requested")
		if s.onCheck != nil {
			s.onCheck(CheckRequest{Tag: it.tag, Provider: it.provider, Value: value})
		}
	case apierrors.IsNotFound(err):
		s.metrics.checks.WithLabelValues(it.provider, patchGone).Inc()
		log.Debug("Tag deleted before its webhook check was requested")
	case ctx.Err() != nil:
		// Stopping: keep it for the final flush in drain.
		s.queue.retry(it, time.Now())
	default:
		s.metrics.checks.WithLabelValues(it.provider, patchError).Inc()
		it.attempts++
		if it.attempts >= maxPatchAttempts {
			log.WithError(err).WithField("attempts", it.attempts).Error("request webhook check: giving up")
			return
		}
		delay := min(s.queue.window<<it.attempts, maxRetryDelay)
		log.WithError(err).WithField("retryIn", delay.String()).Warn("request webhook check")
		s.queue.retry(it, time.Now().Add(delay))
	}
}

// patchAnnotation merge-patches the Tag's tagger.dev/check annotation only.
func (s *Server) patchAnnotation(ctx context.Context, name, value string) error {
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"annotations": map[string]string{v1alpha1.CheckAnnotation: value}},
	})
	if err != nil {
		return fmt.Errorf("encode patch: %w", err)
	}
	tag := &v1alpha1.Tag{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := s.client.Patch(ctx, tag, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return fmt.Errorf("patch %s annotation of Tag %s: %w", v1alpha1.CheckAnnotation, name, err)
	}
	return nil
}

// nextNano is the current time in Unix nanoseconds, strictly increasing per
// Server so that two checks never write the same value.
func (s *Server) nextNano() int64 {
	for {
		last := s.lastNano.Load()
		n := max(time.Now().UnixNano(), last+1)
		if s.lastNano.CompareAndSwap(last, n) {
			return n
		}
	}
}
