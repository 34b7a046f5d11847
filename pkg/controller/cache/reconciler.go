// Package cache is the caching controller: it copies a Tag's generations
// into the bundled registry (pkg/controller/imagecopy), deletes the copies of
// generations the history drops, and owns the tagger.dev/cache-cleanup
// finalizer. A copy can take many minutes, so it runs in this controller's
// own workers, never in the check-and-serve loop. Its progress, failure
// count, next retry and start times live in status.cache, so a new leader
// resumes where the last one stopped.
package cache

import (
	"context"
	"fmt"
	"sync"
	"time"

	digest "github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/pkg/controller/imagecopy"
	"github.com/tagger-project/tagger/pkg/pins"
	"github.com/tagger-project/tagger/pkg/registryclient"
)

// Copier copies a generation's whole tree into the bundled registry and
// prunes copies from it (pkg/controller/imagecopy.Copier).
type Copier interface {
	Copy(ctx context.Context, src pins.Reference, root digest.Digest, creds registryclient.Credentials, tag string) (imagecopy.Progress, error)
	Prune(ctx context.Context, cacheRepo string, drop []digest.Digest, keep imagecopy.KeepFunc) (imagecopy.PruneResult, error)
}

// Reconciler is the caching controller.
type Reconciler struct {
	// Client reads Tags from the cache and writes status and finalizers.
	Client client.Client
	// APIReader reads Tags uncached (status writes re-read before they
	// patch; a prune's keep list) and the pull Secrets a Tag names.
	APIReader client.Reader
	// PullSecretNamespace is the only namespace a Tag's pull Secret may be
	// in ("": any); see pkg/controller/pullsecret.
	PullSecretNamespace string
	// Copier is nil when caching is not configured (--registry-url): the
	// Cached condition then says so and deleted Tags are released at once.
	Copier   Copier
	Recorder events.EventRecorder
	Log      logrus.FieldLogger
	// Now is the clock; time.Now when nil.
	Now func() time.Time

	// cachedPerTag feeds the tagger_cached_generations gauge only; it is
	// rebuilt from status on every reconcile, so a new leader loses nothing.
	mu           sync.Mutex
	cachedPerTag map[string]int
}

func (r *Reconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Reconcile brings a Tag's copies in the bundled registry in line with its
// spec and history.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var tag v1alpha1.Tag
	if err := r.Client.Get(ctx, req.NamespacedName, &tag); err != nil {
		if apierrors.IsNotFound(err) {
			r.setCached(req.Name, nil)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("get Tag %s: %w", req.Name, err)
	}
	log := r.Log.WithFields(logrus.Fields{"tag": tag.Name, "image": tag.Spec.Image})
	if !tag.DeletionTimestamp.IsZero() {
		return r.finalize(ctx, &tag, log)
	}
	if err := r.ensureFinalizer(ctx, &tag); err != nil {
		return ctrl.Result{}, err
	}
	cur, err := r.prune(ctx, &tag, log)
	if err != nil || cur == nil {
		return ctrl.Result{}, err
	}
	res, err := r.copyAll(ctx, cur, log)
	return res, err
}

func (r *Reconciler) event(tag *v1alpha1.Tag, typ, reason, action, msg string) {
	if r.Recorder != nil {
		r.Recorder.Eventf(tag, nil, typ, reason, action, "%s", msg)
	}
}

// setCached records a Tag's cached generations for the gauge (nil: gone).
func (r *Reconciler) setCached(name string, gens []v1alpha1.Generation) {
	n := 0
	for _, g := range gens {
		if g.Cached {
			n++
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cachedPerTag == nil {
		r.cachedPerTag = map[string]int{}
	}
	if gens == nil {
		delete(r.cachedPerTag, name)
	} else {
		r.cachedPerTag[name] = n
	}
	total := 0
	for _, n := range r.cachedPerTag {
		total += n
	}
	cachedGenerations.Set(float64(total))
}
