package check

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/pkg/controller/reconcilertest"
	"github.com/tagger-project/tagger/pkg/pins"
	"github.com/tagger-project/tagger/pkg/registryclient"
)

const (
	d1 = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	d2 = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
	d3 = "sha256:3333333333333333333333333333333333333333333333333333333333333333"
)

var t0 = time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)

// fakeResolver answers every resolve with digest, or fails with err.
type fakeResolver struct {
	digest   string
	err      error
	resolves int
}

func (f *fakeResolver) Resolve(context.Context, pins.Reference, registryclient.Credentials) (registryclient.Descriptor, error) {
	f.resolves++
	if f.err != nil {
		return registryclient.Descriptor{}, f.err
	}
	return registryclient.Descriptor{Digest: digest.Digest(f.digest), MediaType: registryclient.MediaTypeOCIManifest, Size: 100}, nil
}

func (f *fakeResolver) Platforms(context.Context, pins.Reference, registryclient.Descriptor, registryclient.Credentials) ([]string, error) {
	return []string{"linux/amd64"}, nil
}

func gen(n int64, d string, cached bool) v1alpha1.Generation {
	return v1alpha1.Generation{Generation: n, Image: "example.com/app:v1", Digest: d, Cached: cached, FirstSeen: metav1.NewTime(t0.Add(-time.Hour))}
}

func appTag(mutate func(*v1alpha1.Tag)) *v1alpha1.Tag {
	t := &v1alpha1.Tag{
		ObjectMeta: metav1.ObjectMeta{Name: "app", UID: "u-app", CreationTimestamp: metav1.NewTime(t0.Add(-time.Hour))},
		Spec:       v1alpha1.TagSpec{Image: "example.com/app:v1"},
	}
	if mutate != nil {
		mutate(t)
	}
	return t
}

// checked marks a Tag as checked at t0 with its history, so only an
// annotation, a spec change or the schedule makes it due.
func checked(t *v1alpha1.Tag, served int64, gens ...v1alpha1.Generation) {
	t.Status.Generations = gens
	t.Status.ServedGeneration = served
	if g, ok := pins.Find(gens, served); ok {
		t.Status.ServedDigest = g.Digest
	}
	t.Status.LastCheck = &v1alpha1.CheckStatus{Time: metav1.NewTime(t0.Add(-time.Minute)), Result: v1alpha1.CheckUnchanged}
	t.Status.ObservedGeneration = t.Generation
}

func newReconciler(cl client.Client, res Resolver, clock *time.Time) (*Reconciler, *events.FakeRecorder) {
	rec := events.NewFakeRecorder(100)
	return &Reconciler{Client: cl, SecretReader: cl, Resolver: res, Recorder: rec, Log: logrus.New(),
		Now: func() time.Time { return *clock }}, rec
}

func TestReconcile(t *testing.T) {
	rateLimited := &registryclient.Error{Op: "resolve", Ref: "example.com/app:v1", StatusCode: 429, RetryAfter: 2 * time.Minute, Err: errors.New("429 Too Many Requests")}
	cases := []struct {
		name        string
		tag         *v1alpha1.Tag
		others      []client.Object
		digest      string
		err         error
		wantResolve bool
		wantServed  int64
		wantGens    []int64
		wantReady   string // Ready condition reason ("": not set)
		// wantReadyFalse: Ready must be False; wantReadyMsg: in its message.
		wantReadyFalse bool
		wantReadyMsg   string
		allowedNS      string // the Reconciler's PullSecretNamespace
		wantResolvd    string // Resolved condition reason
		wantEvent      string
		wantRequeue    time.Duration
	}{
		{
			name: "first check records and serves generation 1, a cached Tag included",
			tag:  appTag(func(t *v1alpha1.Tag) { t.Spec.Cache = true }), digest: d1, wantResolve: true,
			wantServed: 1, wantGens: []int64{1}, wantReady: "Newest", wantResolvd: v1alpha1.CheckNewGeneration, wantEvent: "Normal NewGeneration",
		},
		{
			name: "requested check, digest unchanged",
			tag: appTag(func(t *v1alpha1.Tag) {
				checked(t, 1, gen(1, d1, false))
				t.Annotations = map[string]string{v1alpha1.CheckAnnotation: "now"}
			}),
			digest: d1, wantResolve: true, wantServed: 1, wantGens: []int64{1}, wantReady: "Newest", wantResolvd: v1alpha1.CheckUnchanged,
		},
		{
			name: "upstream moved: generation 2 served",
			tag: appTag(func(t *v1alpha1.Tag) {
				checked(t, 1, gen(1, d1, false))
				t.Annotations = map[string]string{v1alpha1.CheckAnnotation: "now"}
			}),
			digest: d2, wantResolve: true, wantServed: 2, wantGens: []int64{2, 1}, wantReady: "Newest", wantResolvd: v1alpha1.CheckNewGeneration,
			wantEvent: "Normal ServedGenerationChanged",
		},
		{
			name: "spec.generation not in the history keeps the previous one served",
			tag: appTag(func(t *v1alpha1.Tag) {
				checked(t, 2, gen(2, d2, false), gen(1, d1, false))
				t.Spec.Generation = ptr.To[int64](7)
			}),
			wantServed: 2, wantGens: []int64{2, 1}, wantReady: "GenerationNotFound", wantReadyFalse: true,
		},
		{
			name: "rollback to generation 1",
			tag: appTag(func(t *v1alpha1.Tag) {
				checked(t, 2, gen(2, d2, false), gen(1, d1, false))
				t.Spec.Generation = ptr.To[int64](1)
			}),
			wantServed: 1, wantGens: []int64{2, 1}, wantReady: "Pinned", wantEvent: "Normal ServedGenerationChanged",
		},
		{
			name: "rate limited: pin kept, Retry-After in status and honoured",
			tag: appTag(func(t *v1alpha1.Tag) {
				checked(t, 1, gen(1, d1, false))
				t.Annotations = map[string]string{v1alpha1.CheckAnnotation: "now"}
			}),
			err: rateLimited, wantResolve: true, wantServed: 1, wantGens: []int64{1}, wantReady: "RateLimited", wantReadyFalse: true, wantResolvd: "RateLimited",
			wantRequeue: 2 * time.Minute, wantReadyMsg: "still serving generation 1",
		},
		{
			name: "first check fails: nothing served, Ready says why",
			tag:  appTag(nil), err: errors.New("dial tcp: connection refused"), wantResolve: true,
			wantReady: "Unreachable", wantReadyFalse: true, wantResolvd: "Unreachable", wantReadyMsg: "connection refused",
		},
		{
			name: "a failed check earlier keeps Ready False on a pass that does not check",
			tag: appTag(func(t *v1alpha1.Tag) {
				checked(t, 1, gen(1, d1, false))
				t.Status.Conditions = []metav1.Condition{{Type: v1alpha1.ConditionResolved, Status: metav1.ConditionFalse, Reason: "Unauthorized", Message: "401", LastTransitionTime: metav1.NewTime(t0)}}
			}),
			wantServed: 1, wantGens: []int64{1}, wantReady: "Unauthorized", wantReadyFalse: true, wantReadyMsg: "still serving generation 1",
		},
		{
			name: "pull Secret outside the allowed namespace: not read, PullSecretNotAllowed",
			tag: appTag(func(t *v1alpha1.Tag) {
				t.Spec.PullSecretRef = &v1alpha1.SecretReference{Namespace: "team-a", Name: "creds"}
			}),
			allowedNS: "tagger-system", digest: d1,
			wantReady: "PullSecretNotAllowed", wantReadyFalse: true, wantResolvd: "PullSecretNotAllowed", wantReadyMsg: `only from namespace "tagger-system"`,
		},
		{
			name: "spec.generation missing and the check failing: GenerationNotFound first",
			tag: appTag(func(t *v1alpha1.Tag) {
				checked(t, 2, gen(2, d2, false), gen(1, d1, false))
				t.Spec.Generation = ptr.To[int64](7)
				t.Annotations = map[string]string{v1alpha1.CheckAnnotation: "now"}
			}),
			err: errors.New("dial tcp: connection refused"), wantResolve: true,
			wantServed: 2, wantGens: []int64{2, 1}, wantReady: "GenerationNotFound", wantReadyFalse: true, wantResolvd: "Unreachable",
		},
		{
			name: "an older Tag pins the same image: Conflict, not served",
			tag:  appTag(nil),
			others: []client.Object{&v1alpha1.Tag{
				ObjectMeta: metav1.ObjectMeta{Name: "older", CreationTimestamp: metav1.NewTime(t0.Add(-48 * time.Hour))},
				Spec:       v1alpha1.TagSpec{Image: "example.com/app:v1"},
			}},
			wantReady: "Conflict", wantReadyFalse: true,
		},
		{
			name: "history pruned past the limit; cached generations left to the caching controller",
			tag: appTag(func(t *v1alpha1.Tag) {
				t.Spec.HistoryLimit = 1
				checked(t, 3, gen(3, d3, false), gen(2, d2, true), gen(1, d1, false))
			}),
			wantServed: 3, wantGens: []int64{3, 2}, wantReady: "Newest",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cl := reconcilertest.FakeClient(t, nil, append([]client.Object{c.tag}, c.others...)...)
			res := &fakeResolver{digest: c.digest, err: c.err}
			clock := t0
			r, rec := newReconciler(cl, res, &clock)
			r.PullSecretNamespace = c.allowedNS
			result := reconcilertest.Reconcile(t, r, "app")
			got := reconcilertest.GetTag(t, cl, "app")
			st := got.Status
			ready := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionReady)
			if ready != nil && (ready.Status == metav1.ConditionFalse) != c.wantReadyFalse {
				t.Errorf("Ready %+v, want False: %v", ready, c.wantReadyFalse)
			}
			if c.wantReadyMsg != "" && (ready == nil || !strings.Contains(ready.Message, c.wantReadyMsg)) {
				t.Errorf("Ready %+v, want a message with %q", ready, c.wantReadyMsg)
			}

			if (res.resolves > 0) != c.wantResolve {
				t.Errorf("resolves %d, want a resolve: %v", res.resolves, c.wantResolve)
			}
			if st.ServedGeneration != c.wantServed {
				t.Errorf("served %d, want %d", st.ServedGeneration, c.wantServed)
			}
			var gens []int64
			for _, g := range st.Generations {
				gens = append(gens, g.Generation)
			}
			if len(gens) != len(c.wantGens) || (len(gens) > 0 && gens[0] != c.wantGens[0]) || (len(gens) > 1 && gens[1] != c.wantGens[1]) {
				t.Errorf("history %v, want %v", gens, c.wantGens)
			}
			if cond := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionReady); c.wantReady != "" && (cond == nil || cond.Reason != c.wantReady) {
				t.Errorf("Ready %+v, want reason %s", cond, c.wantReady)
			}
			if cond := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionResolved); c.wantResolvd != "" && (cond == nil || cond.Reason != c.wantResolvd) {
				t.Errorf("Resolved %+v, want reason %s", cond, c.wantResolvd)
			}
			if meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionCached) != nil {
				t.Errorf("the check controller wrote the Cached condition, which the caching controller owns")
			}
			if got.Status.Cache != nil || got.Status.RolledOutGeneration != 0 || len(got.Finalizers) != 0 {
				t.Errorf("the check controller wrote another controller's fields: cache %+v, rolledOut %d, finalizers %v",
					got.Status.Cache, got.Status.RolledOutGeneration, got.Finalizers)
			}
			if evs := strings.Join(reconcilertest.Events(rec), "\n"); c.wantEvent != "" && !strings.Contains(evs, c.wantEvent) {
				t.Errorf("Events %q, want %q", evs, c.wantEvent)
			}
			if c.wantRequeue != 0 && result.RequeueAfter != c.wantRequeue {
				t.Errorf("RequeueAfter %v, want %v", result.RequeueAfter, c.wantRequeue)
			}
		})
	}
}

// The upstream's Retry-After is in status: a controller built after a
// failover from the stored Tag alone keeps waiting it out.
func TestRetryAfterSurvivesFailover(t *testing.T) {
	cl := reconcilertest.FakeClient(t, nil, appTag(func(t *v1alpha1.Tag) {
		checked(t, 1, gen(1, d1, false))
		t.Annotations = map[string]string{v1alpha1.CheckAnnotation: "x"}
	}))
	res := &fakeResolver{err: &registryclient.Error{Op: "resolve", StatusCode: 429, RetryAfter: 2 * time.Minute, Err: errors.New("429")}}
	clock := t0
	first, _ := newReconciler(cl, res, &clock)
	reconcilertest.Reconcile(t, first, "app")

	res.err, res.digest = nil, d1
	clock = t0.Add(30 * time.Second) // past the 5s backoff, inside Retry-After
	second, _ := newReconciler(cl, res, &clock)
	result := reconcilertest.Reconcile(t, second, "app")
	if res.resolves != 1 {
		t.Fatalf("the new leader resolved again within Retry-After: %d resolves", res.resolves)
	}
	if result.RequeueAfter != 90*time.Second {
		t.Fatalf("RequeueAfter %v, want the 90s left of Retry-After", result.RequeueAfter)
	}
	clock = t0.Add(2*time.Minute + time.Second)
	third, _ := newReconciler(cl, res, &clock)
	reconcilertest.Reconcile(t, third, "app")
	if st := reconcilertest.GetTag(t, cl, "app").Status; res.resolves != 2 || st.LastCheck.Result != v1alpha1.CheckUnchanged || st.LastCheck.RetryAfter != nil {
		t.Fatalf("after Retry-After: %d resolves, lastCheck %+v; want a second, successful check", res.resolves, st.LastCheck)
	}
}

// A status write that conflicts with another controller's is applied to
// the fresh object: neither write is lost, and the upstream is not checked
// again.
func TestConflictingWriteKeepsBoth(t *testing.T) {
	cases := []struct {
		name      string
		meanwhile func(*v1alpha1.Tag) // the caching controller's write
		wantGens  string
		wantCache bool
	}{
		{"generation 1 cached meanwhile", func(t *v1alpha1.Tag) {
			t.Status.Generations[0].Cached = true
			t.Status.Cache = &v1alpha1.CacheStatus{Generation: 1}
			t.Status.Conditions = append(t.Status.Conditions, metav1.Condition{Type: v1alpha1.ConditionCached, Status: metav1.ConditionTrue, Reason: "Cached", LastTransitionTime: metav1.Now()})
		}, "2 1+", true},
		{"cached generation 1 pruned meanwhile", func(t *v1alpha1.Tag) {
			t.Status.Generations = nil
		}, "2", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conflicts := 0
			funcs := &interceptor.Funcs{SubResourceUpdate: func(ctx context.Context, cl client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
				conflicts++
				var stored v1alpha1.Tag
				if err := cl.Get(ctx, client.ObjectKeyFromObject(obj), &stored); err != nil {
					return err
				}
				c.meanwhile(&stored)
				if err := cl.Status().Update(ctx, &stored); err != nil {
					return err
				}
				return apierrors.NewConflict(schema.GroupResource{Group: "tagger.dev", Resource: "tags"}, obj.GetName(), errors.New("the object has been modified"))
			}}
			cl := reconcilertest.FakeClient(t, funcs, appTag(func(t *v1alpha1.Tag) {
				t.Spec.HistoryLimit = 1
				checked(t, 1, gen(1, d1, true))
				t.Status.Generations[0].Cached = false
				t.Annotations = map[string]string{v1alpha1.CheckAnnotation: "now"}
			}))
			res := &fakeResolver{digest: d2}
			clock := t0
			r, _ := newReconciler(cl, res, &clock)
			reconcilertest.Reconcile(t, r, "app")
			st := reconcilertest.GetTag(t, cl, "app").Status
			var gens []string
			for _, g := range st.Generations {
				s := fmt.Sprint(g.Generation)
				if g.Cached {
					s += "+"
				}
				gens = append(gens, s)
			}
			if conflicts != 1 || res.resolves != 1 || strings.Join(gens, " ") != c.wantGens || st.ServedGeneration != 2 || st.LastCheck.Result != v1alpha1.CheckNewGeneration {
				t.Fatalf("conflicts %d, resolves %d, history %v, served %d, lastCheck %+v; want 1, 1, %s, 2, NewGeneration",
					conflicts, res.resolves, gens, st.ServedGeneration, st.LastCheck, c.wantGens)
			}
			if hasCache := st.Cache != nil && meta.IsStatusConditionTrue(st.Conditions, v1alpha1.ConditionCached); hasCache != c.wantCache {
				t.Fatalf("the caching controller's fields kept: %v, want %v (%+v)", hasCache, c.wantCache, st)
			}
		})
	}
}

// A deleted Tag is the caching controller's to clean up: nothing is checked
// or written.
func TestDeletedTagIsLeftAlone(t *testing.T) {
	now := metav1.NewTime(t0)
	cl := reconcilertest.FakeClient(t, nil, appTag(func(t *v1alpha1.Tag) {
		t.Finalizers = []string{v1alpha1.CacheFinalizer}
		t.DeletionTimestamp = &now
	}))
	res := &fakeResolver{digest: d1}
	clock := t0
	r, _ := newReconciler(cl, res, &clock)
	reconcilertest.Reconcile(t, r, "app")
	if got := reconcilertest.GetTag(t, cl, "app"); res.resolves != 0 || got.Status.LastCheck != nil || len(got.Finalizers) != 1 {
		t.Fatalf("deleted Tag: %d resolves, status %+v, finalizers %v; want none touched", res.resolves, got.Status, got.Finalizers)
	}
}

// TestFirstServeRecordsRestartBaseline: the restart baseline is written with
// the first serve, so a tag that moves again before the restart controller
// runs still gets its wave; a later serve leaves the field to that controller.
func TestFirstServeRecordsRestartBaseline(t *testing.T) {
	for _, c := range []struct {
		name    string
		restart bool
		tag     func(*v1alpha1.Tag)
		digest  string
		want    int64
	}{
		{name: "first serve with rollout.restart", restart: true, digest: d1, want: 1},
		{name: "first serve without rollout", digest: d1, want: 0},
		{name: "later serve leaves the restart controller's field", restart: true, digest: d2, want: 0,
			tag: func(t *v1alpha1.Tag) { checked(t, 1, gen(1, d1, false)) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			cl := reconcilertest.FakeClient(t, nil, appTag(func(tg *v1alpha1.Tag) {
				if c.restart {
					tg.Spec.Rollout = &v1alpha1.RolloutSpec{Restart: true}
				}
				if c.tag != nil {
					c.tag(tg)
				}
				tg.Annotations = map[string]string{v1alpha1.CheckAnnotation: "now"}
			}))
			clock := t0
			r, _ := newReconciler(cl, &fakeResolver{digest: c.digest}, &clock)
			reconcilertest.Reconcile(t, r, "app")
			if got := reconcilertest.GetTag(t, cl, "app").Status; got.RolledOutGeneration != c.want || got.ServedGeneration == 0 {
				t.Fatalf("served %d, rolledOut %d; want rolledOut %d", got.ServedGeneration, got.RolledOutGeneration, c.want)
			}
		})
	}
}
