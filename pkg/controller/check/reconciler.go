// Package check reconciles Tags: it checks the upstream tag, records a
// generation when the digest moved, chooses the served generation, prunes the
// history and reports conditions, Events and metrics. It is level-based: every
// decision is derived from the Tag's spec and status, so a restart loses nothing.
package check

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	digest "github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/pkg/controller/imagecopy"
	"github.com/tagger-project/tagger/pkg/controller/restart"
	"github.com/tagger-project/tagger/pkg/pins"
	"github.com/tagger-project/tagger/pkg/registryclient"
)

// Resolver is the upstream registry seam: a HEAD resolve of a tag, and the
// platforms of a digest (read only when the digest is new).
type Resolver interface {
	Resolve(ctx context.Context, ref pins.Reference, creds registryclient.Credentials) (registryclient.Descriptor, error)
	Platforms(ctx context.Context, ref pins.Reference, d registryclient.Descriptor, creds registryclient.Credentials) ([]string, error)
}

// Cacher copies a generation's whole tree into the bundled registry (pkg/controller/imagecopy).
type Cacher interface {
	Copy(ctx context.Context, src pins.Reference, root digest.Digest, creds registryclient.Credentials, tag string) (imagecopy.Progress, error)
	Prune(ctx context.Context, cacheRepo string, drop []digest.Digest, keep imagecopy.KeepFunc) (imagecopy.PruneResult, error)
}

// Restarter restarts the workloads using a Tag's image (pkg/controller/restart).
type Restarter interface {
	Restart(ctx context.Context, tag *v1alpha1.Tag, reason string, namespaceSelector, selector *metav1.LabelSelector) (restart.Result, error)
}

// Reconciler reconciles Tag objects.
type Reconciler struct {
	// Client reads Tags from the cache and writes their status.
	Client client.Client
	// SecretReader reads the one Secret a Tag names, uncached, so the
	// controller never lists or watches Secrets.
	SecretReader client.Reader
	// TagLister lists Tags uncached for a cache prune's keep list (the
	// manager's API reader); nil: Client.
	TagLister client.Reader
	Resolver  Resolver
	Recorder  events.EventRecorder
	// Cacher copies generations of Tags with spec.cache into the bundled
	// registry; nil: caching is not configured (--registry-url).
	Cacher Cacher
	// Restarter restarts workloads on a served-generation change for Tags
	// with spec.rollout.restart; nil disables restarts.
	Restarter Restarter
	Log       logrus.FieldLogger
	// Now is the clock; time.Now when nil.
	Now func() time.Time

	mu           sync.Mutex
	retryAfter   map[string]time.Duration // upstream-requested waits, per Tag name
	copyFailures map[string]int32         // consecutive failed copies, per Tag name
	cachedPerTag map[string]int           // cached generations, per Tag name (for the gauge)
	cleanupSince map[string]time.Time     // first failed cache cleanup of a deleted Tag
}

func (r *Reconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Reconcile brings one Tag's status in line with its spec and the upstream.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var tag v1alpha1.Tag
	if err := r.Client.Get(ctx, req.NamespacedName, &tag); err != nil {
		if apierrors.IsNotFound(err) {
			r.setRetryAfter(req.Name, 0)
			r.forgetCache(req.Name)
			r.forgetCleanup(req.Name)
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
	orig := tag.Status.DeepCopy()
	st := &tag.Status
	// Whole seconds, as status.lastCheck stores it, so the jittered due time
	// computed now equals the one computed from the stored status later.
	now := r.now().Truncate(time.Second)

	ref, err := pins.ParseReference(tag.Spec.Image)
	if err != nil {
		// Admission validation should have caught it; report and keep serving.
		r.setCondition(&tag, v1alpha1.ConditionResolved, metav1.ConditionFalse, "InvalidImage", err.Error())
		r.serve(&tag, log)
		r.finish(&tag)
		return ctrl.Result{}, r.writeStatus(ctx, &tag, orig)
	}
	st.Image = ref.String()

	winner, err := r.conflictWinner(ctx, &tag, ref)
	if err != nil {
		return ctrl.Result{}, err
	}
	if winner != "" {
		msg := fmt.Sprintf("Tag %q is older and already pins %s; this Tag is not served until that one is deleted", winner, ref)
		r.setCondition(&tag, v1alpha1.ConditionConflict, metav1.ConditionTrue, "ImageAlreadyPinned", msg)
		r.setCondition(&tag, v1alpha1.ConditionReady, metav1.ConditionFalse, "Conflict", msg)
		r.finish(&tag)
		return ctrl.Result{}, r.writeStatus(ctx, &tag, orig)
	}
	r.setCondition(&tag, v1alpha1.ConditionConflict, metav1.ConditionFalse, "NoConflict", "no older Tag pins "+ref.String())

	if reason := checkDue(&tag, now, r.getRetryAfter(tag.Name)); reason != "" {
		log.WithField("reason", string(reason)).Debug("checking upstream")
		r.check(ctx, &tag, ref, now, log)
	}
	r.serve(&tag, log)
	r.prune(ctx, &tag, log)
	if r.copyPending(&tag) {
		// A copy can take minutes: record the check and the pin first, so
		// nodes serve a new generation (from the upstream) meanwhile and a
		// controller that dies mid-copy has lost no generation.
		r.finish(&tag)
		if err := r.writeStatus(ctx, &tag, orig); err != nil {
			return ctrl.Result{}, err
		}
		orig = tag.Status.DeepCopy()
	}
	cacheRetry := r.cache(ctx, &tag, ref, log)
	rolloutErr := r.rollout(ctx, &tag, log)
	r.finish(&tag)
	if err := r.writeStatus(ctx, &tag, orig); err != nil {
		return ctrl.Result{}, err
	}
	if rolloutErr != nil {
		// Retried with the controller's backoff; restarts already done are
		// not repeated (pkg/controller/restart is idempotent per generation).
		return ctrl.Result{}, rolloutErr
	}

	var res ctrl.Result
	if next := nextCheck(&tag, r.getRetryAfter(tag.Name)); !next.IsZero() {
		res.RequeueAfter = max(next.Sub(r.now()), time.Second)
	}
	if cacheRetry > 0 && (res.RequeueAfter == 0 || cacheRetry < res.RequeueAfter) {
		res.RequeueAfter = cacheRetry
	}
	return res, nil
}

// check resolves the upstream tag once and records a generation when the
// digest moved. A failed check changes neither the history nor the served pin.
func (r *Reconciler) check(ctx context.Context, tag *v1alpha1.Tag, ref pins.Reference, now time.Time, log logrus.FieldLogger) {
	start := time.Now()
	obs, err := r.observe(ctx, tag, ref)
	checkDuration.Observe(time.Since(start).Seconds())
	st := &tag.Status
	if err != nil {
		failures := int32(1)
		if st.LastCheck != nil && st.LastCheck.Result == v1alpha1.CheckFailed {
			failures = st.LastCheck.ConsecutiveFailures + 1
		}
		st.LastCheck = &v1alpha1.CheckStatus{Time: metav1.NewTime(now), Result: v1alpha1.CheckFailed, Message: err.Error(), ConsecutiveFailures: failures}
		wait, _ := registryclient.RetryAfter(err)
		r.setRetryAfter(tag.Name, wait)
		r.setCondition(tag, v1alpha1.ConditionResolved, metav1.ConditionFalse, failureReason(err), err.Error())
		checksTotal.WithLabelValues(v1alpha1.CheckFailed).Inc()
		log.WithError(err).WithField("failures", failures).Warn("upstream check failed; pin unchanged")
		return
	}
	r.setRetryAfter(tag.Name, 0)
	history, added := pins.Record(st.Generations, obs, metav1.NewTime(now))
	result := v1alpha1.CheckUnchanged
	msg := fmt.Sprintf("%s is still %s", ref, obs.Digest)
	if added {
		st.Generations = history
		g := history[0]
		result = v1alpha1.CheckNewGeneration
		msg = fmt.Sprintf("%s moved to %s: generation %d", ref, g.Digest, g.Generation)
		generationsTotal.Inc()
		r.event(tag, corev1.EventTypeNormal, "NewGeneration", "Check", msg)
		log.WithFields(logrus.Fields{"generation": g.Generation, "digest": g.Digest}).Info("recorded new generation")
	}
	st.LastCheck = &v1alpha1.CheckStatus{Time: metav1.NewTime(now), Result: result, Message: msg}
	r.setCondition(tag, v1alpha1.ConditionResolved, metav1.ConditionTrue, result, msg)
	checksTotal.WithLabelValues(result).Inc()
}

// observe does the upstream I/O of one check: a HEAD, and for a digest not
// seen before, one read of its platforms.
func (r *Reconciler) observe(ctx context.Context, tag *v1alpha1.Tag, ref pins.Reference) (pins.Observation, error) {
	creds, err := r.credentials(ctx, tag, ref)
	if err != nil {
		return pins.Observation{}, err
	}
	desc, err := r.Resolver.Resolve(ctx, ref, creds)
	if err != nil {
		return pins.Observation{}, err
	}
	obs := pins.Observation{Image: ref.String(), Digest: desc.Digest.String(), MediaType: desc.MediaType, Size: desc.Size}
	if !pins.IsNew(tag.Status.Generations, obs) {
		return obs, nil
	}
	obs.Platforms, err = r.Resolver.Platforms(ctx, ref, desc, creds)
	if err != nil {
		return pins.Observation{}, err
	}
	return obs, nil
}

// credentials reads the dockerconfigjson Secret the Tag names, if any.
func (r *Reconciler) credentials(ctx context.Context, tag *v1alpha1.Tag, ref pins.Reference) (registryclient.Credentials, error) {
	sr := tag.Spec.PullSecretRef
	if sr == nil {
		return registryclient.Credentials{}, nil
	}
	var sec corev1.Secret
	if err := r.SecretReader.Get(ctx, client.ObjectKey{Namespace: sr.Namespace, Name: sr.Name}, &sec); err != nil {
		return registryclient.Credentials{}, &secretError{fmt.Errorf("read pull secret %s/%s: %w", sr.Namespace, sr.Name, err)}
	}
	data, ok := sec.Data[corev1.DockerConfigJsonKey]
	if !ok {
		return registryclient.Credentials{}, &secretError{fmt.Errorf("pull secret %s/%s has no %s key (want type %s)", sr.Namespace, sr.Name, corev1.DockerConfigJsonKey, corev1.SecretTypeDockerConfigJson)}
	}
	creds, found, err := registryclient.CredentialsFromDockerConfig(data, ref.Registry)
	if err != nil {
		return registryclient.Credentials{}, &secretError{fmt.Errorf("pull secret %s/%s: %w", sr.Namespace, sr.Name, err)}
	}
	if !found {
		return registryclient.Credentials{}, &secretError{fmt.Errorf("pull secret %s/%s has no credentials for %s", sr.Namespace, sr.Name, ref.Registry)}
	}
	return creds, nil
}

type secretError struct{ error }

func (e *secretError) Unwrap() error { return e.error }

func failureReason(err error) string {
	var se *secretError
	switch {
	case errors.As(err, &se):
		return "PullSecretError"
	case registryclient.IsNotFound(err):
		return "NotFound"
	case registryclient.IsUnauthorized(err):
		return "Unauthorized"
	}
	if _, ok := registryclient.RetryAfter(err); ok {
		return "RateLimited"
	}
	var ue *registryclient.Error
	if errors.As(err, &ue) && ue.StatusCode >= 500 {
		return "UpstreamError"
	}
	return "Unreachable"
}

// serve chooses the served generation from the spec and the history; a
// spec.generation that names nothing recorded keeps the previous one served.
func (r *Reconciler) serve(tag *v1alpha1.Tag, log logrus.FieldLogger) {
	st := &tag.Status
	prev := st.ServedGeneration
	g, reason := pins.Serve(st.Generations, tag.Spec.Generation, prev)
	st.ServedGeneration, st.ServedDigest = g.Generation, g.Digest
	switch reason {
	case pins.ServeNewest, pins.ServePinned:
		r.setCondition(tag, v1alpha1.ConditionReady, metav1.ConditionTrue, string(reason),
			fmt.Sprintf("serving generation %d (%s)", g.Generation, g.Digest))
	case pins.ServeNone:
		r.setCondition(tag, v1alpha1.ConditionReady, metav1.ConditionFalse, string(reason),
			"no generation recorded yet: the upstream tag has not been resolved")
	case pins.ServeMissingKeepPrevious:
		msg := fmt.Sprintf("spec.generation %d is not in the history (%s)", *tag.Spec.Generation, historyRange(st.Generations))
		if g.Generation > 0 {
			msg += fmt.Sprintf("; still serving generation %d", g.Generation)
		} else {
			msg += "; nothing is served"
		}
		r.setCondition(tag, v1alpha1.ConditionReady, metav1.ConditionFalse, string(reason), msg)
	}
	// The first generation served is not a change (its NewGeneration Event
	// says it); one Event per Tag on a first pass also keeps the recorder's
	// backlog, which client-go holds a goroutine per Event for, small.
	if g.Generation != prev && g.Generation != 0 && prev != 0 {
		msg := fmt.Sprintf("serving generation %d (%s), was %d", g.Generation, g.Digest, prev)
		r.event(tag, corev1.EventTypeNormal, "ServedGenerationChanged", "Serve", msg)
		log.WithFields(logrus.Fields{"generation": g.Generation, "digest": g.Digest, "previous": prev}).Info("served generation changed")
	}
}

// rollout restarts the workloads using the image when the served generation
// moved since the last wave. The first generation served only sets the
// baseline: pinning what is running restarts nothing.
func (r *Reconciler) rollout(ctx context.Context, tag *v1alpha1.Tag, log logrus.FieldLogger) error {
	st := &tag.Status
	ro := tag.Spec.Rollout
	if r.Restarter == nil || ro == nil || !ro.Restart || st.ServedGeneration == 0 {
		return nil
	}
	if st.RolledOutGeneration == 0 {
		st.RolledOutGeneration = st.ServedGeneration
		return nil
	}
	if st.RolledOutGeneration == st.ServedGeneration {
		return nil
	}
	reason := fmt.Sprintf("served generation %d -> %d", st.RolledOutGeneration, st.ServedGeneration)
	res, err := r.Restarter.Restart(ctx, tag, reason, ro.NamespaceSelector, ro.Selector)
	if err != nil {
		log.WithError(err).WithField("restarted", len(res.Restarted)).Warn("workload restart wave incomplete; retrying")
		return fmt.Errorf("restart workloads for Tag %s generation %d: %w", tag.Name, st.ServedGeneration, err)
	}
	log.WithFields(logrus.Fields{"generation": st.ServedGeneration, "restarted": len(res.Restarted), "skipped": len(res.Skipped)}).Info("restarted workloads")
	st.RolledOutGeneration = st.ServedGeneration
	return nil
}

func historyRange(h []v1alpha1.Generation) string {
	if len(h) == 0 {
		return "the history is empty"
	}
	return fmt.Sprintf("recorded: %d..%d, %d kept", h[len(h)-1].Generation, h[0].Generation, len(h))
}

func (r *Reconciler) prune(ctx context.Context, tag *v1alpha1.Tag, log logrus.FieldLogger) {
	limit := int(tag.Spec.HistoryLimit)
	if limit == 0 {
		limit = v1alpha1.DefaultHistoryLimit
	}
	var pruned []v1alpha1.Generation
	tag.Status.Generations, pruned = pins.Prune(tag.Status.Generations, limit, tag.Status.ServedGeneration)
	// A failed prune is reported (Event, log) by pruneCache; the manifests
	// it could not delete only cost space in the bundled registry.
	_ = r.pruneCache(ctx, tag, pruned, tag.Status.Generations, log)
}

// finish fills the derived status fields the printer columns show.
func (r *Reconciler) finish(tag *v1alpha1.Tag) {
	st := &tag.Status
	st.ObservedGeneration = tag.Generation
	st.CheckAnnotation = tag.Annotations[v1alpha1.CheckAnnotation]
	st.LatestGeneration = 0
	if g, ok := pins.Newest(st.Generations); ok {
		st.LatestGeneration = g.Generation
	}
	st.ServedShortDigest = shortDigest(st.ServedDigest)
	st.CachedServed = false
	if g, ok := pins.Find(st.Generations, st.ServedGeneration); ok {
		st.CachedServed = g.Cached
	}
}

func shortDigest(d string) string {
	const n = len("sha256:") + 12
	if len(d) > n {
		return d[:n]
	}
	return d
}

func (r *Reconciler) setCondition(tag *v1alpha1.Tag, typ string, status metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(&tag.Status.Conditions, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: tag.Generation,
	})
}

func (r *Reconciler) event(tag *v1alpha1.Tag, typ, reason, action, msg string) {
	if r.Recorder != nil {
		r.Recorder.Eventf(tag, nil, typ, reason, action, "%s", msg)
	}
}

// writeStatus writes the status when it changed. A Tag deleted meanwhile is
// not an error; a conflict is returned so the request is retried on the
// fresh object.
func (r *Reconciler) writeStatus(ctx context.Context, tag *v1alpha1.Tag, orig *v1alpha1.TagStatus) error {
	if equality.Semantic.DeepEqual(orig, &tag.Status) {
		return nil
	}
	if err := r.Client.Status().Update(ctx, tag); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("update status of Tag %s: %w", tag.Name, err)
	}
	return nil
}

func (r *Reconciler) getRetryAfter(name string) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.retryAfter[name]
}

func (r *Reconciler) setRetryAfter(name string, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if d <= 0 {
		delete(r.retryAfter, name)
		return
	}
	if r.retryAfter == nil {
		r.retryAfter = map[string]time.Duration{}
	}
	r.retryAfter[name] = d
}
