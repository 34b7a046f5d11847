// Package check is the check-and-serve controller: it checks the upstream
// tag, records a generation when the digest moved, chooses the served
// generation, prunes the history and reports conditions, Events and metrics.
// It does no long work: cache copies (pkg/controller/cache) and workload
// restarts (pkg/controller/restart) are controllers of their own that react
// to what this one writes. It is level-based: every decision is derived from
// the Tag's spec and status, so a restart or a failover loses nothing.
package check

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

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
	"github.com/tagger-project/tagger/pkg/controller/pullsecret"
	"github.com/tagger-project/tagger/pkg/controller/tagstatus"
	"github.com/tagger-project/tagger/pkg/pins"
	"github.com/tagger-project/tagger/pkg/registryclient"
)

// Resolver is the upstream registry seam: a HEAD resolve of a tag, and the
// platforms of a digest (read only when the digest is new).
type Resolver interface {
	Resolve(ctx context.Context, ref pins.Reference, creds registryclient.Credentials) (registryclient.Descriptor, error)
	Platforms(ctx context.Context, ref pins.Reference, d registryclient.Descriptor, creds registryclient.Credentials) ([]string, error)
}

// Reconciler reconciles Tag objects.
type Reconciler struct {
	// Client reads Tags from the cache and writes their status.
	Client client.Client
	// SecretReader reads the one Secret a Tag names, uncached, so the
	// controller never lists or watches Secrets.
	SecretReader client.Reader
	// PullSecretNamespace is the only namespace a Tag's pull Secret may be
	// in ("": any); a Tag naming one elsewhere fails its checks with
	// PullSecretNotAllowed, unread.
	PullSecretNamespace string
	// APIReader re-reads a Tag uncached when a status write conflicted
	// with another controller's (the manager's API reader); nil: Client.
	APIReader client.Reader
	Resolver  Resolver
	Recorder  events.EventRecorder
	Log       logrus.FieldLogger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
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
			forgetTag(req.Name)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("get Tag %s: %w", req.Name, err)
	}
	log := r.Log.WithFields(logrus.Fields{"tag": tag.Name, "image": tag.Spec.Image})
	if !tag.DeletionTimestamp.IsZero() {
		// The caching controller removes its copies; nothing is served.
		forgetTag(tag.Name)
		return ctrl.Result{}, nil
	}
	orig := tag.Status.DeepCopy()
	st := &tag.Status
	// Whole seconds, as status.lastCheck stores it, so the jittered due time
	// computed now equals the one computed from the stored status later.
	now := r.now().Truncate(time.Second)

	ref, err := pins.ParseReference(tag.Spec.Image)
	if err != nil {
		// Admission validation should have caught it; report and keep serving.
		tagstatus.SetCondition(&tag, v1alpha1.ConditionResolved, metav1.ConditionFalse, "InvalidImage", err.Error())
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
		tagstatus.SetCondition(&tag, v1alpha1.ConditionConflict, metav1.ConditionTrue, "ImageAlreadyPinned", msg)
		tagstatus.SetCondition(&tag, v1alpha1.ConditionReady, metav1.ConditionFalse, "Conflict", msg)
		r.finish(&tag)
		return ctrl.Result{}, r.writeStatus(ctx, &tag, orig)
	}
	tagstatus.SetCondition(&tag, v1alpha1.ConditionConflict, metav1.ConditionFalse, "NoConflict", "no older Tag pins "+ref.String())

	if reason := checkDue(&tag, now); reason != "" {
		log.WithField("reason", string(reason)).Debug("checking upstream")
		r.check(ctx, &tag, ref, now, log)
	}
	r.serve(&tag, log)
	prune(&tag)
	r.finish(&tag)
	if err := r.writeStatus(ctx, &tag, orig); err != nil {
		return ctrl.Result{}, err
	}
	var res ctrl.Result
	if next := nextCheck(&tag); !next.IsZero() {
		res.RequeueAfter = max(next.Sub(r.now()), time.Second)
	}
	return res, nil
}

// check resolves the upstream tag once and records a generation when the
// digest moved. A failed check changes neither the history nor the served pin.
func (r *Reconciler) check(ctx context.Context, tag *v1alpha1.Tag, ref pins.Reference, now time.Time, log logrus.FieldLogger) {
	start := time.Now()
	obs, err := r.observe(ctx, tag, ref)
	checkDuration.WithLabelValues(ref.Registry).Observe(time.Since(start).Seconds())
	st := &tag.Status
	if err != nil {
		failures := int32(1)
		if st.LastCheck != nil && st.LastCheck.Result == v1alpha1.CheckFailed {
			failures = st.LastCheck.ConsecutiveFailures + 1
		}
		st.LastCheck = &v1alpha1.CheckStatus{Time: metav1.NewTime(now), Result: v1alpha1.CheckFailed, Message: err.Error(), ConsecutiveFailures: failures}
		if wait, ok := registryclient.RetryAfter(err); ok && wait > 0 {
			st.LastCheck.RetryAfter = &metav1.Duration{Duration: wait}
		}
		tagstatus.SetCondition(tag, v1alpha1.ConditionResolved, metav1.ConditionFalse, failureReason(err), err.Error())
		checksTotal.WithLabelValues(ref.Registry, v1alpha1.CheckFailed).Inc()
		log.WithError(err).WithField("failures", failures).Warn("upstream check failed; pin unchanged")
		return
	}
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
	tagstatus.SetCondition(tag, v1alpha1.ConditionResolved, metav1.ConditionTrue, result, msg)
	checksTotal.WithLabelValues(ref.Registry, result).Inc()
}

// observe does the upstream I/O of one check: a HEAD, and for a digest not
// seen before, one read of its platforms.
func (r *Reconciler) observe(ctx context.Context, tag *v1alpha1.Tag, ref pins.Reference) (pins.Observation, error) {
	creds, err := pullsecret.Source{Reader: r.SecretReader, Namespace: r.PullSecretNamespace}.Credentials(ctx, tag, ref)
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

func failureReason(err error) string {
	var se *pullsecret.Error
	switch {
	case errors.Is(err, pullsecret.ErrNotAllowed):
		return "PullSecretNotAllowed"
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
	// The first generation served is the restart baseline, recorded in the
	// same write: were it left to the restart controller, a tag that moves
	// again before that controller sees the Tag would never restart anything.
	if prev == 0 && g.Generation != 0 && st.RolledOutGeneration == 0 && tag.Spec.Rollout != nil && tag.Spec.Rollout.Restart {
		st.RolledOutGeneration = g.Generation
	}
	switch reason {
	case pins.ServeNewest, pins.ServePinned:
		tagstatus.SetCondition(tag, v1alpha1.ConditionReady, metav1.ConditionTrue, string(reason),
			fmt.Sprintf("serving generation %d (%s)", g.Generation, g.Digest))
	case pins.ServeNone:
		tagstatus.SetCondition(tag, v1alpha1.ConditionReady, metav1.ConditionFalse, string(reason),
			"no generation recorded yet: the upstream tag has not been resolved")
	case pins.ServeMissingKeepPrevious:
		msg := fmt.Sprintf("spec.generation %d is not in the history (%s)", *tag.Spec.Generation, historyRange(st.Generations))
		if g.Generation > 0 {
			msg += fmt.Sprintf("; still serving generation %d", g.Generation)
		} else {
			msg += "; nothing is served"
		}
		tagstatus.SetCondition(tag, v1alpha1.ConditionReady, metav1.ConditionFalse, string(reason), msg)
	}
	readyAfterCheck(tag)
	// The first generation served is not a change (its NewGeneration Event
	// says it); one Event per Tag on a first pass also keeps the recorder's
	// backlog, which client-go holds a goroutine per Event for, small.
	if g.Generation != prev && g.Generation != 0 && prev != 0 {
		msg := fmt.Sprintf("serving generation %d (%s), was %d", g.Generation, g.Digest, prev)
		r.event(tag, corev1.EventTypeNormal, "ServedGenerationChanged", "Serve", msg)
		log.WithFields(logrus.Fields{"generation": g.Generation, "digest": g.Digest, "previous": prev}).Info("served generation changed")
	}
}

// readyAfterCheck makes a failed last check visible in Ready (and so in
// the READY printer column): the Tag keeps serving its pin, but it no
// longer follows the upstream tag, which is not healthy. Ready then takes
// the Resolved reason (Unreachable, Unauthorized, PullSecretNotAllowed...)
// and says what is still served. A spec.generation missing from the
// history keeps its own reason: that is the user's to fix first.
func readyAfterCheck(tag *v1alpha1.Tag) {
	res := meta.FindStatusCondition(tag.Status.Conditions, v1alpha1.ConditionResolved)
	ready := meta.FindStatusCondition(tag.Status.Conditions, v1alpha1.ConditionReady)
	if res == nil || res.Status != metav1.ConditionFalse || ready == nil {
		return
	}
	st := &tag.Status
	var msg string
	switch {
	case ready.Status == metav1.ConditionTrue:
		msg = fmt.Sprintf("the last check failed, so the upstream tag is not followed; still serving generation %d (%s): %s", st.ServedGeneration, st.ServedDigest, res.Message)
	case ready.Reason == string(pins.ServeNone):
		msg = "nothing is served: the upstream tag has never been resolved: " + res.Message
	default:
		return
	}
	tagstatus.SetCondition(tag, v1alpha1.ConditionReady, metav1.ConditionFalse, res.Reason, msg)
}

func historyRange(h []v1alpha1.Generation) string {
	if len(h) == 0 {
		return "the history is empty"
	}
	return fmt.Sprintf("recorded: %d..%d, %d kept", h[len(h)-1].Generation, h[0].Generation, len(h))
}

// prune drops the generations beyond spec.historyLimit (never the served
// one). Cached ones stay for the caching controller, which deletes their
// copies from the bundled registry before it drops them, so no copy is
// forgotten in status before it is gone.
func prune(tag *v1alpha1.Tag) {
	limit := int(tag.Spec.HistoryLimit)
	if limit == 0 {
		limit = v1alpha1.DefaultHistoryLimit
	}
	kept, pruned := pins.Prune(tag.Status.Generations, limit, tag.Status.ServedGeneration)
	if len(pruned) == 0 {
		return
	}
	drop := map[int64]bool{}
	for _, g := range pruned {
		drop[g.Generation] = !g.Cached
	}
	gens := make([]v1alpha1.Generation, 0, len(kept))
	for _, g := range tag.Status.Generations {
		if !drop[g.Generation] {
			gens = append(gens, g)
		}
	}
	tag.Status.Generations = gens
}

// finish fills the status fields that record what this pass acted on,
// and the derived printer-column fields.
func (r *Reconciler) finish(tag *v1alpha1.Tag) {
	st := &tag.Status
	st.ObservedGeneration = tag.Generation
	st.CheckAnnotation = tag.Annotations[v1alpha1.CheckAnnotation]
	tagstatus.Derive(tag)
	recordTag(tag)
}

func (r *Reconciler) event(tag *v1alpha1.Tag, typ, reason, action, msg string) {
	if r.Recorder != nil {
		r.Recorder.Eventf(tag, nil, typ, reason, action, "%s", msg)
	}
}

// writeStatus writes the status when it changed: first as an update of the
// object read (one request, the common case); if another controller wrote
// its own fields meanwhile, this pass's fields are applied to the fresh
// object instead, so neither the other write nor this check is lost (a
// retry from scratch would check the upstream again). A Tag deleted
// meanwhile is not an error.
func (r *Reconciler) writeStatus(ctx context.Context, tag *v1alpha1.Tag, orig *v1alpha1.TagStatus) error {
	if equality.Semantic.DeepEqual(orig, &tag.Status) {
		return nil
	}
	err := r.Client.Status().Update(ctx, tag)
	if apierrors.IsConflict(err) {
		_, err = tagstatus.Patch(ctx, r.Client, r.apiReader(), tag.Name, func(fresh *v1alpha1.Tag) {
			applyOwned(fresh, tag)
		})
	}
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("update status of Tag %s: %w", tag.Name, err)
	}
	return nil
}

// apiReader reads a Tag uncached for a write that conflicted.
func (r *Reconciler) apiReader() client.Reader {
	if r.APIReader != nil {
		return r.APIReader
	}
	return r.Client
}

// applyOwned copies what the check-and-serve controller owns from done (the
// status this pass computed) onto fresh (the stored Tag), keeping the other
// controllers' fields. In the history, the caching controller owns the
// cached flags and the removal of cached generations: a generation cached
// in done but gone from fresh was pruned by it and stays gone, and one
// cached in fresh stays even if this pass pruned it as uncached.
func applyOwned(fresh, done *v1alpha1.Tag) {
	f, d := &fresh.Status, &done.Status
	// The restart controller owns RolledOutGeneration once it is set; this
	// controller only records the baseline of a first serve.
	if f.ServedGeneration == 0 && f.RolledOutGeneration == 0 {
		f.RolledOutGeneration = d.RolledOutGeneration
	}
	f.ObservedGeneration, f.Image, f.CheckAnnotation = d.ObservedGeneration, d.Image, d.CheckAnnotation
	f.ServedGeneration, f.ServedDigest, f.LastCheck = d.ServedGeneration, d.ServedDigest, d.LastCheck
	stored := map[int64]v1alpha1.Generation{}
	for _, g := range f.Generations {
		stored[g.Generation] = g
	}
	gens := make([]v1alpha1.Generation, 0, len(d.Generations))
	for _, g := range d.Generations {
		s, ok := stored[g.Generation]
		switch {
		case ok && s.Digest == g.Digest:
			g.Cached = s.Cached
		case g.Cached:
			continue
		}
		gens = append(gens, g)
	}
	inDone := map[int64]bool{}
	for _, g := range d.Generations {
		inDone[g.Generation] = true
	}
	for _, g := range f.Generations {
		if g.Cached && !inDone[g.Generation] {
			gens = append(gens, g)
		}
	}
	slices.SortFunc(gens, func(a, b v1alpha1.Generation) int { return cmp.Compare(b.Generation, a.Generation) })
	f.Generations = gens
	for _, typ := range []string{v1alpha1.ConditionReady, v1alpha1.ConditionResolved, v1alpha1.ConditionConflict} {
		if c := meta.FindStatusCondition(d.Conditions, typ); c != nil {
			meta.SetStatusCondition(&f.Conditions, *c)
		}
	}
}
