package integration

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/internal/rig"
)

// TestGenerations walks a Tag through the whole generation story against a
// real upstream registry, counting what the controller asks the upstream.
func TestGenerations(t *testing.T) {
	c := startCluster(t)
	up := rig.NewRegistry(t, rig.RegistryOptions{})
	proxy := rig.NewCountingProxy(t, up.URL())
	img1 := up.PushImage(t, "team/app", "v1", rig.ImageOptions{Layers: 2})

	rig.CreateTag(t, c, rig.NewTag("gens", proxy.Host()+"/team/app:v1"))
	tag := rig.WaitTag(t, c, "gens", "generation 1", rig.ServedIs(1, img1.Digest.String()))
	g := tag.Status.Generations[0]
	if g.Generation != 1 || g.MediaType != ocispec.MediaTypeImageManifest || g.Size != img1.Size ||
		!slices.Equal(g.Platforms, []string{"linux/amd64"}) || g.Image != proxy.Host()+"/team/app:v1" {
		t.Fatalf("generation 1 = %+v, want digest %s size %d linux/amd64", g, img1.Digest, img1.Size)
	}
	if r := rig.Condition(tag, v1alpha1.ConditionReady); r.Status != metav1.ConditionTrue {
		t.Fatalf("Ready = %+v, want True", r)
	}
	if tag.Status.LatestGeneration != 1 || !strings.HasPrefix(img1.Digest.String(), tag.Status.ServedShortDigest) {
		t.Fatalf("printer fields: latest %d short %q", tag.Status.LatestGeneration, tag.Status.ServedShortDigest)
	}

	// The same digest again adds nothing, and costs one HEAD and no GET.
	proxy.Reset()
	tag = rig.RequestCheck(t, c, "gens", "same-1")
	if n := len(tag.Status.Generations); n != 1 || tag.Status.LastCheck.Result != v1alpha1.CheckUnchanged {
		t.Fatalf("unchanged check: %d generations, lastCheck %+v", n, tag.Status.LastCheck)
	}
	if heads, gets := proxy.Count(http.MethodHead, rig.KindManifest), proxy.Count(http.MethodGet, rig.KindManifest)+proxy.Count(http.MethodGet, rig.KindBlob); heads != 1 || gets != 0 {
		t.Fatalf("unchanged check sent %d manifest HEADs and %d GETs, want 1 and 0: %s", heads, gets, proxy)
	}

	// Upstream moves the tag: nothing changes until a check, then generation 2 is served.
	img2 := up.PushImage(t, "team/app", "v1", rig.ImageOptions{Layers: 2})
	if got := rig.GetTag(t, c, "gens"); got.Status.ServedDigest != img1.Digest.String() {
		t.Fatalf("served moved without a check: %s", got.Status.ServedDigest)
	}
	rig.RequestCheck(t, c, "gens", "moved-1")
	tag = rig.WaitTag(t, c, "gens", "generation 2 served", rig.ServedIs(2, img2.Digest.String()))
	if gens := generationNumbers(tag); !slices.Equal(gens, []int64{2, 1}) {
		t.Fatalf("history = %v, want [2 1]", gens)
	}

	// Roll back: spec.generation 1 serves 1 again, history intact.
	setGeneration(t, c, "gens", ptr(int64(1)))
	tag = rig.WaitTag(t, c, "gens", "rolled back to 1", rig.ServedIs(1, img1.Digest.String()))
	if gens := generationNumbers(tag); !slices.Equal(gens, []int64{2, 1}) {
		t.Fatalf("history after rollback = %v, want [2 1]", gens)
	}

	// A generation that does not exist: the condition explains, 1 stays served.
	setGeneration(t, c, "gens", ptr(int64(9)))
	tag = rig.WaitTag(t, c, "gens", "Ready=False GenerationNotFound", rig.ConditionIs(v1alpha1.ConditionReady, metav1.ConditionFalse, "GenerationNotFound"))
	if tag.Status.ServedGeneration != 1 || tag.Status.ServedDigest != img1.Digest.String() {
		t.Fatalf("bad spec.generation changed the served pin: %d %s", tag.Status.ServedGeneration, tag.Status.ServedDigest)
	}
	if msg := rig.Condition(tag, v1alpha1.ConditionReady).Message; !strings.Contains(msg, "spec.generation 9") || !strings.Contains(msg, "still serving generation 1") {
		t.Fatalf("Ready message %q does not explain", msg)
	}

	// Unset: follow the newest again.
	setGeneration(t, c, "gens", nil)
	rig.WaitTag(t, c, "gens", "newest served", rig.ServedIs(2, img2.Digest.String()))

	// Events for each new generation and each change of the served one
	// (1->2, 2->1, 1->2: the last repeats the first and joins its series);
	// the first generation served is not a change.
	rig.WaitFor(t, rig.TagTimeout, "Events on Tag gens", func() (bool, string) {
		reasons := eventReasons(t, c, "gens")
		return count(reasons, "NewGeneration") >= 2 && count(reasons, "ServedGenerationChanged") >= 2, fmt.Sprintf("reasons %v", reasons)
	})
	for _, e := range eventsOn(t, c, "gens") {
		if e.Reason == "ServedGenerationChanged" && strings.HasSuffix(e.Note, "was 0") {
			t.Errorf("ServedGenerationChanged for the first generation served: %q", e.Note)
		}
	}
}

// TestMultiArchIndex pins the index digest of a multi-platform image.
func TestMultiArchIndex(t *testing.T) {
	c := startCluster(t)
	up := rig.NewRegistry(t, rig.RegistryOptions{})
	idx := up.PushIndex(t, "multi/app", "1.0", []string{"linux/amd64", "linux/arm64"}, rig.IndexOptions{Attestations: true})

	rig.CreateTag(t, c, rig.NewTag("multi", up.Host()+"/multi/app:1.0"))
	tag := rig.WaitTag(t, c, "multi", "index pinned", rig.ServedIs(1, idx.Digest.String()))
	g := tag.Status.Generations[0]
	if g.MediaType != ocispec.MediaTypeImageIndex || g.Size != idx.Size || !slices.Equal(g.Platforms, []string{"linux/amd64", "linux/arm64"}) {
		t.Fatalf("generation = %+v, want index %s with linux/amd64, linux/arm64", g, idx.Digest)
	}
}

// TestImageWithoutPlatform pins an image whose config names no
// os/architecture (as `crane append` onto scratch makes): platforms are
// recorded when present, never a condition for pinning.
func TestImageWithoutPlatform(t *testing.T) {
	c := startCluster(t)
	up := rig.NewRegistry(t, rig.RegistryOptions{})
	img := up.PushImage(t, "scratch/app", "v1", rig.ImageOptions{Platform: rig.NoPlatform})

	rig.CreateTag(t, c, rig.NewTag("scratch", up.Host()+"/scratch/app:v1"))
	tag := rig.WaitTag(t, c, "scratch", "pinned without platform", rig.ServedIs(1, img.Digest.String()))
	if g := tag.Status.Generations[0]; len(g.Platforms) != 0 || g.Size != img.Size {
		t.Fatalf("generation = %+v, want %s with no platforms", g, img.Digest)
	}
	if r := rig.Condition(tag, v1alpha1.ConditionResolved); r.Status != metav1.ConditionTrue {
		t.Fatalf("Resolved = %+v, want True", r)
	}
}

// TestHistoryLimit keeps the newest generations and never prunes the served one.
func TestHistoryLimit(t *testing.T) {
	c := startCluster(t)
	up := rig.NewRegistry(t, rig.RegistryOptions{})
	first := up.PushImage(t, "lim/app", "v", rig.ImageOptions{})
	tag := rig.NewTag("limit", up.Host()+"/lim/app:v")
	tag.Spec.HistoryLimit = 2
	rig.CreateTag(t, c, tag)
	rig.WaitTag(t, c, "limit", "generation 1", rig.ServedIs(1, first.Digest.String()))
	setGeneration(t, c, "limit", ptr(int64(1)))
	rig.WaitTag(t, c, "limit", "pinned 1", rig.ServedIs(1, first.Digest.String()))
	for i := 2; i <= 4; i++ {
		img := up.PushImage(t, "lim/app", "v", rig.ImageOptions{})
		rig.RequestCheck(t, c, "limit", fmt.Sprint("c", i))
		rig.WaitTag(t, c, "limit", fmt.Sprint("generation ", i), func(tg *v1alpha1.Tag) (bool, string) {
			return tg.Status.LatestGeneration == int64(i) && tg.Status.Generations[0].Digest == img.Digest.String(), "latest"
		})
	}
	tag = rig.GetTag(t, c, "limit")
	if gens := generationNumbers(tag); !slices.Equal(gens, []int64{4, 3, 1}) || tag.Status.ServedGeneration != 1 {
		t.Fatalf("history = %v served %d, want [4 3 1] served 1", gens, tag.Status.ServedGeneration)
	}
}

// TestPrivateUpstreams resolves through Bearer token auth and Basic auth with
// credentials from the dockerconfigjson Secret the Tag names.
func TestPrivateUpstreams(t *testing.T) {
	c := startCluster(t)
	users := map[string]string{"robot": "s3cret"}
	cases := []struct {
		name string
		auth rig.Auth
	}{
		{"token", rig.AuthToken},
		{"basic", rig.AuthBasic},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			up := rig.NewRegistry(t, rig.RegistryOptions{Auth: tc.auth, Users: users})
			img := up.PushImage(t, "private/app", "v1", rig.ImageOptions{})
			ns := "creds-" + tc.name
			pullSecret(t, c, ns, "good", up.Host(), "robot", "s3cret")
			pullSecret(t, c, ns+"-bad", "bad", up.Host(), "robot", "wrong")

			good := rig.NewTag("private-"+tc.name, up.Host()+"/private/app:v1")
			good.Spec.PullSecretRef = &v1alpha1.SecretReference{Namespace: ns, Name: "good"}
			rig.CreateTag(t, c, good)
			rig.WaitTag(t, c, good.Name, "resolved with credentials", rig.ServedIs(1, img.Digest.String()))

			// Wrong password and no Secret at all: Unauthorized, nothing served.
			// Distinct tags of one image would conflict, so each uses its own repository tag.
			img2 := up.PushImage(t, "private/app", "v2", rig.ImageOptions{})
			_ = img2
			bad := rig.NewTag("private-bad-"+tc.name, up.Host()+"/private/app:v2")
			bad.Spec.PullSecretRef = &v1alpha1.SecretReference{Namespace: ns + "-bad", Name: "bad"}
			rig.CreateTag(t, c, bad)
			got := rig.WaitTag(t, c, bad.Name, "Unauthorized", rig.ConditionIs(v1alpha1.ConditionResolved, metav1.ConditionFalse, "Unauthorized"))
			if got.Status.ServedGeneration != 0 || len(got.Status.Generations) != 0 {
				t.Fatalf("unauthorized Tag recorded %v", generationNumbers(got))
			}
			if strings.Contains(got.Status.LastCheck.Message, "s3cret") || strings.Contains(got.Status.LastCheck.Message, "wrong") {
				t.Fatalf("lastCheck leaks a password: %q", got.Status.LastCheck.Message)
			}

			missing := rig.NewTag("private-missing-"+tc.name, up.Host()+"/private/app:v3")
			missing.Spec.PullSecretRef = &v1alpha1.SecretReference{Namespace: ns, Name: "absent"}
			rig.CreateTag(t, c, missing)
			got = rig.WaitTag(t, c, missing.Name, "PullSecretError", rig.ConditionIs(v1alpha1.ConditionResolved, metav1.ConditionFalse, "PullSecretError"))
			if !strings.Contains(got.Status.LastCheck.Message, ns+"/absent") {
				t.Fatalf("lastCheck %q does not name the Secret", got.Status.LastCheck.Message)
			}
		})
	}
}

// TestUpstreamDown: a failed check changes neither the history nor the pin.
func TestUpstreamDown(t *testing.T) {
	c := startCluster(t)
	up := rig.NewRegistry(t, rig.RegistryOptions{})
	img := up.PushImage(t, "down/app", "v1", rig.ImageOptions{})
	rig.CreateTag(t, c, rig.NewTag("down", up.Host()+"/down/app:v1"))
	rig.WaitTag(t, c, "down", "generation 1", rig.ServedIs(1, img.Digest.String()))

	up.Stop()
	tag := rig.RequestCheck(t, c, "down", "while-down")
	tag = rig.WaitTag(t, c, "down", "Resolved=False", rig.ConditionIs(v1alpha1.ConditionResolved, metav1.ConditionFalse, "Unreachable"))
	if tag.Status.LastCheck.Result != v1alpha1.CheckFailed || !strings.Contains(tag.Status.LastCheck.Message, "down/app:v1") {
		t.Fatalf("lastCheck = %+v, want Failed naming the image", tag.Status.LastCheck)
	}
	if tag.Status.ServedGeneration != 1 || tag.Status.ServedDigest != img.Digest.String() || len(tag.Status.Generations) != 1 {
		t.Fatalf("failed check changed the pin: %+v", tag.Status)
	}
	// Still serving the last good pin, but not following the tag: not Ready.
	tag = rig.WaitTag(t, c, "down", "Ready=False", rig.ConditionIs(v1alpha1.ConditionReady, metav1.ConditionFalse, "Unreachable"))
	if r := rig.Condition(tag, v1alpha1.ConditionReady); !strings.Contains(r.Message, "still serving generation 1") {
		t.Fatalf("Ready = %+v, want a message saying generation 1 is still served", r)
	}

	// Back up: the retry (backoff) or the next check recovers.
	if err := up.Start(); err != nil {
		t.Fatalf("restart upstream: %v", err)
	}
	rig.RequestCheck(t, c, "down", "back-up")
	rig.WaitTag(t, c, "down", "Resolved=True", rig.ConditionIs(v1alpha1.ConditionResolved, metav1.ConditionTrue, v1alpha1.CheckUnchanged))
	rig.WaitTag(t, c, "down", "Ready=True again", rig.ConditionIs(v1alpha1.ConditionReady, metav1.ConditionTrue, "Newest"))

	// A tag that does not exist upstream: NotFound.
	rig.CreateTag(t, c, rig.NewTag("down-404", up.Host()+"/down/app:nope"))
	rig.WaitTag(t, c, "down-404", "NotFound", rig.ConditionIs(v1alpha1.ConditionResolved, metav1.ConditionFalse, "NotFound"))
}

// TestConflict: the older Tag for an image wins; the later one gets Conflict
// and takes over when the winner is deleted.
func TestConflict(t *testing.T) {
	c := startCluster(t)
	up := rig.NewRegistry(t, rig.RegistryOptions{})
	img := up.PushImage(t, "dup/app", "v1", rig.ImageOptions{})

	first := rig.NewTag("conflict-a", up.Host()+"/dup/app:v1")
	rig.CreateTag(t, c, first)
	rig.WaitTag(t, c, first.Name, "served", rig.ServedIs(1, img.Digest.String()))
	second := rig.NewTag("conflict-b", up.Host()+"/dup/app:v1")
	rig.CreateTag(t, c, second)
	tag := rig.WaitTag(t, c, second.Name, "Conflict=True", rig.ConditionIs(v1alpha1.ConditionConflict, metav1.ConditionTrue, "ImageAlreadyPinned"))
	if msg := rig.Condition(tag, v1alpha1.ConditionConflict).Message; !strings.Contains(msg, "conflict-a") {
		t.Fatalf("Conflict message %q does not name the winner", msg)
	}
	if r := rig.Condition(tag, v1alpha1.ConditionReady); r.Status != metav1.ConditionFalse {
		t.Fatalf("conflicting Tag Ready = %+v, want False", r)
	}
	if w := rig.Condition(rig.GetTag(t, c, first.Name), v1alpha1.ConditionConflict); w.Status != metav1.ConditionFalse {
		t.Fatalf("winner Conflict = %+v, want False", w)
	}

	if err := c.Delete(context.Background(), first); err != nil {
		t.Fatalf("delete winner: %v", err)
	}
	rig.WaitTag(t, c, second.Name, "Conflict=False after winner deleted", rig.ConditionIs(v1alpha1.ConditionConflict, metav1.ConditionFalse, "NoConflict"))
	rig.WaitTag(t, c, second.Name, "served after winner deleted", rig.ServedIs(1, img.Digest.String()))
}

// TestSchemaRejectsBadTags: the CRD's schema refuses malformed Tags at admission.
func TestSchemaRejectsBadTags(t *testing.T) {
	c := startCluster(t)
	dgst := "sha256:" + strings.Repeat("ab", 32)
	cases := []struct {
		name   string
		mutate func(*v1alpha1.Tag)
		want   string
	}{
		{"digest reference", func(tg *v1alpha1.Tag) { tg.Spec.Image = "nginx@" + dgst }, "not a digest"},
		{"tag and digest", func(tg *v1alpha1.Tag) { tg.Spec.Image = "nginx:1@" + dgst }, "not a digest"},
		{"empty image", func(tg *v1alpha1.Tag) { tg.Spec.Image = "" }, "spec.image"},
		{"trailing colon", func(tg *v1alpha1.Tag) { tg.Spec.Image = "nginx:" }, "complete tag reference"},
		{"spaces", func(tg *v1alpha1.Tag) { tg.Spec.Image = "nginx 1.27" }, "spec.image"},
		{"generation 0", func(tg *v1alpha1.Tag) { tg.Spec.Generation = ptr(int64(0)) }, "spec.generation"},
		{"generation -1", func(tg *v1alpha1.Tag) { tg.Spec.Generation = ptr(int64(-1)) }, "spec.generation"},
		{"historyLimit 101", func(tg *v1alpha1.Tag) { tg.Spec.HistoryLimit = 101 }, "spec.historyLimit"},
		{"historyLimit -1", func(tg *v1alpha1.Tag) { tg.Spec.HistoryLimit = -1 }, "spec.historyLimit"},
		{"checkInterval 30s", func(tg *v1alpha1.Tag) { tg.Spec.CheckInterval = &metav1.Duration{Duration: 30e9} }, "checkInterval must be at least 1m"},
		{"pullSecretRef without name", func(tg *v1alpha1.Tag) { tg.Spec.PullSecretRef = &v1alpha1.SecretReference{Namespace: "x"} }, "spec.pullSecretRef.name"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tag := rig.NewTag(fmt.Sprint("bad-", i), "nginx:1.27")
			tc.mutate(tag)
			err := c.Create(context.Background(), tag)
			if err == nil {
				_ = c.Delete(context.Background(), tag)
				t.Fatalf("Tag with %s was admitted", tc.name)
			}
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("create error = %v, want Invalid mentioning %q", err, tc.want)
			}
		})
	}

	// The defaults land: historyLimit 25.
	ok := rig.NewTag("schema-defaults", "nginx:1.27-schema")
	if err := c.Create(context.Background(), ok); err != nil {
		t.Fatalf("valid Tag refused: %v", err)
	}
	t.Cleanup(func() { _ = c.Delete(context.Background(), ok) })
	if ok.Spec.HistoryLimit != v1alpha1.DefaultHistoryLimit {
		t.Fatalf("historyLimit default = %d, want %d", ok.Spec.HistoryLimit, v1alpha1.DefaultHistoryLimit)
	}
}

func generationNumbers(tag *v1alpha1.Tag) []int64 {
	var out []int64
	for _, g := range tag.Status.Generations {
		out = append(out, g.Generation)
	}
	return out
}

func eventReasons(t *testing.T, c client.Client, name string) []string {
	t.Helper()
	var out []string
	for _, e := range eventsOn(t, c, name) {
		out = append(out, e.Reason)
	}
	return out
}

// eventsOn lists the Events regarding Tag name.
func eventsOn(t *testing.T, c client.Client, name string) []eventsv1.Event {
	t.Helper()
	var list eventsv1.EventList
	if err := c.List(context.Background(), &list); err != nil {
		t.Fatalf("list events: %v", err)
	}
	var out []eventsv1.Event
	for _, e := range list.Items {
		if e.Regarding.Kind == "Tag" && e.Regarding.Name == name {
			out = append(out, e)
		}
	}
	return out
}

func count(xs []string, x string) int {
	n := 0
	for _, v := range xs {
		if v == x {
			n++
		}
	}
	return n
}
