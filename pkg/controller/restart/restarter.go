// Package restart restarts the Deployments, StatefulSets and DaemonSets whose
// pod templates use a Tag's image when the Tag's served generation changes, the
// way `kubectl rollout restart` does: it patches the pod-template annotation
// kubectl.kubernetes.io/restartedAt and lets each workload's own controller
// roll the pods. Pods are never touched. Deciding *when* to restart (the served
// generation changed, spec.rollout.restart is true, the Tag is not in
// conflict) is the caller's job; Restart does one wave.
//
// A wave is idempotent per generation: every restarted template also gets
// tagger.dev/restarted-for: <tag>/<generation>, and a template that already
// carries the value of this wave is left alone, so a reconcile retry after a
// partial failure restarts only what is left. Patches carry the resourceVersion
// they were decided on, so a stale (cached) read cannot restart a workload twice.
//
// RBAC the caller needs (ClusterRole; watch only because a controller-runtime
// cached client serves List and Get from informers, get for the re-read after
// a conflict):
//
//	apiGroups: [apps]           resources: [deployments, statefulsets, daemonsets]  verbs: [get, list, watch, patch]
//	apiGroups: [""]             resources: [namespaces]                             verbs: [list, watch]
//	apiGroups: [events.k8s.io]  resources: [events]                                 verbs: [create, patch]
//
// Events on the cluster-scoped Tag land in the "default" namespace, those on a
// workload in its namespace, hence a ClusterRole for events too (patch is how
// the recorder updates an Event series).
package restart

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/pkg/pins"
)

// Pod-template annotations a restart sets.
const (
	// RestartedAtAnnotation is kubectl's: changing it changes the template
	// hash, which is what makes the workload controller replace its pods.
	RestartedAtAnnotation = "kubectl.kubernetes.io/restartedAt"
	// RestartedForAnnotation records "<tag>/<generation>" of the wave that
	// restarted the template; see RestartedFor.
	RestartedForAnnotation = "tagger.dev/restarted-for"
)

// Event reasons.
const (
	// ReasonRolloutRestarted is the Normal Event on the Tag summing up a wave.
	ReasonRolloutRestarted = "RolloutRestarted"
	// ReasonRolloutRestartFailed is the Warning Event on the Tag when some
	// workloads could not be restarted (the caller retries; done ones are kept).
	ReasonRolloutRestartFailed = "RolloutRestartFailed"
	// ReasonRestartedByTagger is the Normal Event on each restarted workload.
	ReasonRestartedByTagger = "RestartedByTagger"
)

// Why a workload that uses the image was not restarted.
const (
	// SkipAlreadyRestarted: its template already records this Tag and generation.
	SkipAlreadyRestarted = "AlreadyRestarted"
	// SkipPaused: a paused Deployment; kubectl refuses these too (resume it first).
	SkipPaused = "Paused"
	// SkipOnDelete: updateStrategy OnDelete, so a template change restarts no
	// pod; pods created after their deletion get the pin anyway.
	SkipOnDelete = "OnDeleteStrategy"
	// SkipDeleting: the workload is being deleted.
	SkipDeleting = "Deleting"
	// SkipGone: the workload was deleted during the wave.
	SkipGone = "NotFound"
	// SkipImageChanged: a re-read after a conflict showed it no longer uses the image.
	SkipImageChanged = "ImageChanged"
)

// Rate-limit defaults: patches per second and burst across all waves of one Restarter.
const (
	DefaultQPS   rate.Limit = 5
	DefaultBurst            = 10
)

// conflictBackoff is how long to wait before re-reading a workload whose
// patch hit a resourceVersion conflict (client-go's retry.DefaultBackoff); a
// cached read can lag the write that caused the conflict by a moment.
var conflictBackoff = []time.Duration{10 * time.Millisecond, 50 * time.Millisecond, 250 * time.Millisecond, 1250 * time.Millisecond}

// maxNoteLen keeps Event notes under the events.k8s.io limit of 1 KiB.
const maxNoteLen = 1000

// Restarter restarts the workloads using a Tag's image. Its fields are read
// only; one Restarter may run waves for several Tags at once, and they share
// its rate limit.
type Restarter struct {
	// Client lists and patches workloads and lists namespaces. The manager's
	// cached client works (informers for the three kinds and Namespaces start
	// on first use); so does an uncached one.
	Client client.Client
	// Recorder receives the Events; nil records none.
	Recorder events.EventRecorder
	// QPS bounds patches per second across every wave of this Restarter
	// (rate.Inf: unlimited); 0 means DefaultQPS.
	QPS rate.Limit
	// Burst is the limiter's burst; 0 means DefaultBurst.
	Burst int
	// Now is the clock for restartedAt; time.Now when nil.
	Now func() time.Time
	// Log receives one line per restarted workload and one per wave; nil discards.
	Log logrus.FieldLogger

	limiterOnce sync.Once
	limiter     *rate.Limiter
}

// WorkloadRef names a workload.
type WorkloadRef struct {
	Kind      string // KindDeployment, KindStatefulSet or KindDaemonSet
	Namespace string
	Name      string
}

func (w WorkloadRef) String() string { return w.Kind + " " + w.Namespace + "/" + w.Name }

// Restarted is a workload whose template this wave patched.
type Restarted struct {
	WorkloadRef
	// Containers are the ones using the image ("init:x" and "ephemeral:x" for
	// those kinds; see MatchingContainers).
	Containers []string
}

// Skipped is a workload that uses the image but was not patched.
type Skipped struct {
	WorkloadRef
	Reason  string // one of the Skip* constants
	Message string
}

// Failed is a workload whose patch failed; a later wave for the same
// generation retries it.
type Failed struct {
	WorkloadRef
	Err error
}

// Result is what one wave did. Workloads that do not use the image, or that
// the selectors exclude, are in none of the lists.
type Result struct {
	// Generation is the Tag's served generation the wave was for.
	Generation int64
	// RestartedAt is the value written to RestartedAtAnnotation.
	RestartedAt string
	Restarted   []Restarted
	Skipped     []Skipped
	Failed      []Failed
}

// RestartedFor is the RestartedForAnnotation value of a wave: "<tag>/<generation>".
// Tag names cannot contain '/', so the value is unambiguous.
func RestartedFor(tag string, generation int64) string {
	return fmt.Sprintf("%s/%d", tag, generation)
}

// Restart restarts, at most once per served generation, every Deployment,
// StatefulSet and DaemonSet whose pod template uses tag.Spec.Image (after
// normalization; see MatchingContainers), in namespaces whose labels match
// namespaceSelector (nil: all namespaces) and whose own labels match selector
// (nil: all). reason says why (e.g. "served generation 2 -> 3") and goes into
// the Events and logs.
//
// A failed patch does not stop the wave; the failures are in Result.Failed
// and in the returned error, and calling Restart again for the same generation
// patches only what is left. Cancelling ctx stops the wave between patches.
func (r *Restarter) Restart(ctx context.Context, tag *v1alpha1.Tag, reason string, namespaceSelector, selector *metav1.LabelSelector) (Result, error) {
	gen := tag.Status.ServedGeneration
	res := Result{Generation: gen}
	if gen < 1 {
		return res, fmt.Errorf("restart workloads for Tag %s: it serves no generation yet", tag.Name)
	}
	ref, err := pins.ParseReference(tag.Spec.Image)
	if err != nil {
		return res, fmt.Errorf("restart workloads for Tag %s: %w", tag.Name, err)
	}
	log := r.log().WithFields(logrus.Fields{"tag": tag.Name, "image": ref.String(), "generation": gen})

	m := newMatcher(ref)
	cands, err := r.candidates(ctx, m, namespaceSelector, selector)
	if err != nil {
		return res, fmt.Errorf("restart workloads for Tag %s: %w", tag.Name, err)
	}
	key := RestartedFor(tag.Name, gen)
	res.RestartedAt = r.now().UTC().Format(time.RFC3339)

	var ctxErr error
	for _, c := range cands {
		if err := ctx.Err(); err != nil {
			ctxErr = err
			break
		}
		out, err := r.restartOne(ctx, c, m, key, res.RestartedAt)
		switch {
		case out.restarted != nil:
			res.Restarted = append(res.Restarted, *out.restarted)
			rolloutWorkloads.WithLabelValues(c.w.kind, "restarted").Inc()
			log.WithFields(logrus.Fields{"kind": c.w.kind, "namespace": c.w.obj.GetNamespace(), "name": c.w.obj.GetName(),
				"containers": strings.Join(out.restarted.Containers, ",")}).Info("restarted workload")
			r.event(out.obj, tag, corev1.EventTypeNormal, ReasonRestartedByTagger,
				"restarted for Tag %s generation %d (%s): containers %s use %s",
				tag.Name, gen, reason, strings.Join(out.restarted.Containers, ", "), ref.String())
		case out.skipped != nil:
			res.Skipped = append(res.Skipped, *out.skipped)
			rolloutWorkloads.WithLabelValues(c.w.kind, "skipped").Inc()
			log.WithFields(logrus.Fields{"kind": c.w.kind, "namespace": c.w.obj.GetNamespace(), "name": c.w.obj.GetName(),
				"reason": out.skipped.Reason}).Debug("skipped workload")
		case errors.As(err, new(*stopError)):
			ctxErr = err
		case err != nil:
			res.Failed = append(res.Failed, Failed{WorkloadRef: c.w.ref(), Err: err})
			rolloutWorkloads.WithLabelValues(c.w.kind, "failed").Inc()
			log.WithError(err).WithFields(logrus.Fields{"kind": c.w.kind, "namespace": c.w.obj.GetNamespace(), "name": c.w.obj.GetName()}).
				Warn("restart workload failed")
		}
		if ctxErr != nil {
			break
		}
	}

	r.summarize(tag, ref, reason, &res, log)
	var errs []error
	for _, f := range res.Failed {
		errs = append(errs, f.Err)
	}
	if ctxErr != nil {
		errs = append(errs, fmt.Errorf("wave stopped after %d restart(s), %d workload(s) not looked at: %w",
			len(res.Restarted), len(cands)-len(res.Restarted)-len(res.Skipped)-len(res.Failed), ctxErr))
	}
	if len(errs) > 0 {
		return res, fmt.Errorf("restart workloads for Tag %s generation %d: %w", tag.Name, gen, errors.Join(errs...))
	}
	return res, nil
}

// candidate is a workload that uses the image, with the containers that do.
type candidate struct {
	w          workload
	containers []string
}

// candidates lists the three kinds across all namespaces (one List each,
// label selector on the server side), keeps those in a selected namespace
// whose template uses m's image, and orders them by kind, namespace and name so a
// wave is reproducible.
func (r *Restarter) candidates(ctx context.Context, m *matcher, namespaceSelector, selector *metav1.LabelSelector) ([]candidate, error) {
	inNamespace, err := r.namespaceFilter(ctx, namespaceSelector)
	if err != nil {
		return nil, err
	}
	var opts []client.ListOption
	if selector != nil {
		sel, err := metav1.LabelSelectorAsSelector(selector)
		if err != nil {
			return nil, fmt.Errorf("workload selector: %w", err)
		}
		if !sel.Empty() {
			opts = append(opts, client.MatchingLabelsSelector{Selector: sel})
		}
	}
	var out []candidate
	for _, l := range lists() {
		if inNamespace != nil && len(inNamespace) == 0 {
			break // the namespace selector matches nothing: nothing to list
		}
		if err := r.Client.List(ctx, l, opts...); err != nil {
			return nil, fmt.Errorf("list %T: %w", l, err)
		}
		for _, obj := range items(l) {
			if inNamespace != nil {
				if _, ok := inNamespace[obj.GetNamespace()]; !ok {
					continue
				}
			}
			w, err := newWorkload(obj)
			if err != nil {
				return nil, err
			}
			if cs := m.containers(&w.template.Spec); len(cs) > 0 {
				out = append(out, candidate{w: w, containers: cs})
			}
		}
	}
	order := map[string]int{KindDeployment: 0, KindStatefulSet: 1, KindDaemonSet: 2}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].w, out[j].w
		if a.kind != b.kind {
			return order[a.kind] < order[b.kind]
		}
		if a.obj.GetNamespace() != b.obj.GetNamespace() {
			return a.obj.GetNamespace() < b.obj.GetNamespace()
		}
		return a.obj.GetName() < b.obj.GetName()
	})
	return out, nil
}

// namespaceFilter lists the namespaces matching sel once; nil means every
// namespace (nil or empty selector), which needs no Namespace read at all.
func (r *Restarter) namespaceFilter(ctx context.Context, sel *metav1.LabelSelector) (map[string]struct{}, error) {
	if sel == nil {
		return nil, nil
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return nil, fmt.Errorf("namespace selector: %w", err)
	}
	if s.Empty() {
		return nil, nil
	}
	var nsl corev1.NamespaceList
	if err := r.Client.List(ctx, &nsl, client.MatchingLabelsSelector{Selector: s}); err != nil {
		return nil, fmt.Errorf("list namespaces matching %q: %w", s.String(), err)
	}
	set := make(map[string]struct{}, len(nsl.Items))
	for _, ns := range nsl.Items {
		set[ns.Name] = struct{}{}
	}
	return set, nil
}

// outcome is one workload's result: exactly one of restarted and skipped is
// set, or neither when the returned error says why.
type outcome struct {
	restarted *Restarted
	skipped   *Skipped
	obj       client.Object // the workload as last read or patched
}

// restartOne patches one workload, unless skip says not to. The patch is
// conditional on the resourceVersion the decision was made on; on a conflict
// the workload is re-read and the decision made again.
func (r *Restarter) restartOne(ctx context.Context, c candidate, m *matcher, key, restartedAt string) (outcome, error) {
	w, containers := c.w, c.containers
	for attempt := 0; ; attempt++ {
		if reason, msg := skip(w, key); reason != "" {
			return outcome{skipped: &Skipped{WorkloadRef: w.ref(), Reason: reason, Message: msg}, obj: w.obj}, nil
		}
		if err := r.rateLimiter().Wait(ctx); err != nil {
			// Cancelled, or the deadline comes before the next token: the
			// rest of the wave would fail the same way.
			return outcome{}, &stopError{fmt.Errorf("restart %s: wait for rate limiter: %w", w.ref(), err)}
		}
		patch, err := restartPatch(w.obj.GetResourceVersion(), restartedAt, key)
		if err != nil {
			return outcome{}, err
		}
		err = r.Client.Patch(ctx, w.obj, client.RawPatch(types.MergePatchType, patch))
		if err == nil {
			return outcome{restarted: &Restarted{WorkloadRef: w.ref(), Containers: containers}, obj: w.obj}, nil
		}
		if apierrors.IsNotFound(err) {
			return outcome{skipped: &Skipped{WorkloadRef: w.ref(), Reason: SkipGone, Message: "deleted during the wave"}}, nil
		}
		if !apierrors.IsConflict(err) || attempt >= len(conflictBackoff) {
			return outcome{}, fmt.Errorf("restart %s: patch pod template: %w", w.ref(), err)
		}
		if err := sleep(ctx, conflictBackoff[attempt]); err != nil {
			return outcome{}, &stopError{fmt.Errorf("restart %s: %w", w.ref(), err)}
		}
		fresh := w.obj.DeepCopyObject().(client.Object)
		if err := r.Client.Get(ctx, client.ObjectKeyFromObject(w.obj), fresh); err != nil {
			if apierrors.IsNotFound(err) {
				return outcome{skipped: &Skipped{WorkloadRef: w.ref(), Reason: SkipGone, Message: "deleted during the wave"}}, nil
			}
			return outcome{}, fmt.Errorf("restart %s: re-read after conflict: %w", w.ref(), err)
		}
		if w, err = newWorkload(fresh); err != nil {
			return outcome{}, err
		}
		if containers = m.containers(&w.template.Spec); len(containers) == 0 {
			return outcome{skipped: &Skipped{WorkloadRef: w.ref(), Reason: SkipImageChanged,
				Message: "its pod template no longer uses the image"}, obj: w.obj}, nil
		}
	}
}

// skip says why w must not be patched for the wave key, or "".
func skip(w workload, key string) (reason, message string) {
	switch {
	case w.obj.GetDeletionTimestamp() != nil:
		return SkipDeleting, "it is being deleted"
	case w.template.Annotations[RestartedForAnnotation] == key:
		return SkipAlreadyRestarted, "already restarted for " + key + " at " + w.template.Annotations[RestartedAtAnnotation]
	case w.paused:
		return SkipPaused, "the Deployment is paused; resume it to roll out the new generation"
	case w.onDelete:
		return SkipOnDelete, "updateStrategy is OnDelete, so a template change restarts no pod; deleted pods come back with the pinned digest"
	}
	return "", ""
}

// restartPatch is the JSON merge patch of a restart. A non-empty
// resourceVersion makes the apiserver refuse it (409) if the object changed
// since it was read.
func restartPatch(resourceVersion, restartedAt, key string) ([]byte, error) {
	meta := map[string]any{}
	if resourceVersion != "" {
		meta["resourceVersion"] = resourceVersion
	}
	p := map[string]any{
		"metadata": meta,
		"spec": map[string]any{"template": map[string]any{"metadata": map[string]any{"annotations": map[string]string{
			RestartedAtAnnotation:  restartedAt,
			RestartedForAnnotation: key,
		}}}},
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode restart patch: %w", err)
	}
	return b, nil
}

// summarize records the wave's Events on the Tag and logs it.
func (r *Restarter) summarize(tag *v1alpha1.Tag, ref pins.Reference, reason string, res *Result, log logrus.FieldLogger) {
	// Skips an operator should hear about. AlreadyRestarted is not news: a
	// wave that finds any is a retry of one that already recorded its Event.
	var notable []string
	retry := false
	for _, s := range res.Skipped {
		if s.Reason == SkipAlreadyRestarted {
			retry = true
		} else {
			notable = append(notable, s.Reason+": "+s.WorkloadRef.String())
		}
	}
	log.WithFields(logrus.Fields{"restarted": len(res.Restarted), "skipped": len(res.Skipped), "failed": len(res.Failed), "reason": reason}).
		Info("rollout restart wave done")
	if len(res.Restarted) > 0 || (len(notable) > 0 && !retry) {
		names := make([]string, len(res.Restarted))
		for i, w := range res.Restarted {
			names[i] = w.WorkloadRef.String()
		}
		note := fmt.Sprintf("restarted %d workload(s) using %s for generation %d (%s)", len(res.Restarted), ref.String(), res.Generation, reason)
		if len(names) > 0 {
			note += ": " + strings.Join(names, ", ")
		}
		if len(notable) > 0 {
			note += fmt.Sprintf("; skipped %d: %s", len(notable), strings.Join(notable, ", "))
		}
		r.event(tag, nil, corev1.EventTypeNormal, ReasonRolloutRestarted, "%s", truncate(note))
	}
	if len(res.Failed) > 0 {
		msgs := make([]string, len(res.Failed))
		for i, f := range res.Failed {
			msgs[i] = f.Err.Error()
		}
		r.event(tag, nil, corev1.EventTypeWarning, ReasonRolloutRestartFailed, "%s",
			truncate(fmt.Sprintf("could not restart %d workload(s) for generation %d; will retry: %s", len(res.Failed), res.Generation, strings.Join(msgs, "; "))))
	}
}

func (r *Restarter) event(regarding, related client.Object, typ, reason, note string, args ...any) {
	if r.Recorder == nil || regarding == nil {
		return
	}
	if related == nil {
		// A nil *Tag inside a non-nil interface would reach the recorder otherwise.
		r.Recorder.Eventf(regarding, nil, typ, reason, "RolloutRestart", note, args...)
		return
	}
	r.Recorder.Eventf(regarding, related, typ, reason, "RolloutRestart", note, args...)
}

func truncate(s string) string {
	if len(s) <= maxNoteLen {
		return s
	}
	return s[:maxNoteLen-3] + "..."
}

func (r *Restarter) rateLimiter() *rate.Limiter {
	r.limiterOnce.Do(func() {
		qps, burst := r.QPS, r.Burst
		if qps <= 0 {
			qps = DefaultQPS
		}
		if burst <= 0 {
			burst = DefaultBurst
		}
		r.limiter = rate.NewLimiter(qps, burst)
	})
	return r.limiter
}

func (r *Restarter) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Restarter) log() logrus.FieldLogger {
	if r.Log != nil {
		return r.Log
	}
	l := logrus.New()
	l.Out = discard{}
	return l
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// stopError ends a wave: the context is done (or its deadline is too close
// for the rate limit), so no further workload can be patched.
type stopError struct{ err error }

func (e *stopError) Error() string { return e.err.Error() }
func (e *stopError) Unwrap() error { return e.err }

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
