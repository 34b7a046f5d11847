package kubectltag

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
)

var t0 = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

func digestOf(g int64) string { return fmt.Sprintf("sha256:%064d", g) }

// tagWith builds a Tag whose history holds gens (newest first) and serves served.
func tagWith(name string, served int64, gens ...int64) *v1alpha1.Tag {
	tag := &v1alpha1.Tag{
		ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(t0)},
		Spec:       v1alpha1.TagSpec{Image: "registry.example/team/app:v1"},
	}
	for _, g := range gens {
		tag.Status.Generations = append(tag.Status.Generations, v1alpha1.Generation{
			Generation: g, Image: "registry.example/team/app:v1", Digest: digestOf(g),
			Platforms: []string{"linux/amd64", "linux/arm64"},
			FirstSeen: metav1.NewTime(t0.Add(time.Duration(g) * time.Minute)),
			Cached:    g == 1,
		})
	}
	if served > 0 {
		tag.Status.ServedGeneration = served
		tag.Status.ServedDigest = digestOf(served)
		tag.Status.ServedShortDigest = shortDigest(digestOf(served))
	}
	if len(gens) > 0 {
		tag.Status.LatestGeneration = gens[0]
	}
	return tag
}

func TestTargets(t *testing.T) {
	tests := []struct {
		name        string
		tag         *v1alpha1.Tag
		rollback    int64 // 0: want an error containing rollbackErr
		rollbackErr string
		upgrade     int64 // 0: want an error containing upgradeErr (also with --latest)
		latest      int64
		upgradeErr  string
	}{
		{name: "middle", tag: tagWith("a", 2, 3, 2, 1), rollback: 1, upgrade: 3, latest: 3},
		{name: "oldest", tag: tagWith("a", 1, 3, 2, 1), rollbackErr: "the oldest in its history", upgrade: 2, latest: 3},
		{name: "newest", tag: tagWith("a", 3, 3, 2, 1), rollback: 2, upgradeErr: "already serves generation 3, the newest"},
		{name: "only one", tag: tagWith("a", 1, 1), rollbackErr: "nothing to roll back to", upgradeErr: "the newest"},
		// The served generation is never pruned, so the history can have gaps.
		{name: "pruned gap", tag: tagWith("a", 1, 5, 4, 1), rollbackErr: "oldest", upgrade: 4, latest: 5},
		{name: "nothing served", tag: tagWith("a", 0), rollbackErr: "serves no generation yet", upgradeErr: "serves no generation yet"},
		{name: "served not in history", tag: tagWith("a", 7, 2, 1), rollbackErr: "not in its history", upgradeErr: "not in its history"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := rollbackTarget(tt.tag)
			if tt.rollback != 0 && (err != nil || g.Generation != tt.rollback) {
				t.Errorf("rollback = %d, %v; want %d", g.Generation, err, tt.rollback)
			}
			if tt.rollback == 0 && (err == nil || !strings.Contains(err.Error(), tt.rollbackErr)) {
				t.Errorf("rollback = %d, %v; want error containing %q", g.Generation, err, tt.rollbackErr)
			}
			for latest, want := range map[bool]int64{false: tt.upgrade, true: tt.latest} {
				g, err := upgradeTarget(tt.tag, latest)
				if want != 0 && (err != nil || g.Generation != want) {
					t.Errorf("upgrade(latest=%t) = %d, %v; want %d", latest, g.Generation, err, want)
				}
				if want == 0 && (err == nil || !strings.Contains(err.Error(), tt.upgradeErr)) {
					t.Errorf("upgrade(latest=%t) = %d, %v; want error containing %q", latest, g.Generation, err, tt.upgradeErr)
				}
			}
		})
	}
}

func TestFindGeneration(t *testing.T) {
	tag := tagWith("app", 2, 3, 2, 1)
	if g, err := findGeneration(tag, 2); err != nil || g.Digest != digestOf(2) {
		t.Fatalf("findGeneration(2) = %+v, %v", g, err)
	}
	_, err := findGeneration(tag, 9)
	if want := `Tag "app" has no generation 9; available: 3, 2, 1`; err == nil || err.Error() != want {
		t.Fatalf("findGeneration(9) error = %v, want %q", err, want)
	}
}

// fixture runs the plugin in-process against a fake apiserver holding tags.
type fixture struct {
	t *testing.T
	c client.Client
}

func newFixture(t *testing.T, tags ...*v1alpha1.Tag) *fixture {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	b := fake.NewClientBuilder().WithScheme(scheme).WithStatusSubresource(&v1alpha1.Tag{})
	for _, tag := range tags {
		b = b.WithObjects(tag)
	}
	return &fixture{t: t, c: b.Build()}
}

func (f *fixture) run(args ...string) (stdout, stderr string, code int) {
	var out, errOut bytes.Buffer
	code = Run(context.Background(), args, &out, &errOut, Options{
		Client: f.c,
		Now:    func() time.Time { return t0.Add(90 * time.Second) },
	})
	return out.String(), errOut.String(), code
}

func (f *fixture) get(name string) *v1alpha1.Tag {
	var tag v1alpha1.Tag
	if err := f.c.Get(context.Background(), client.ObjectKey{Name: name}, &tag); err != nil {
		f.t.Fatalf("get Tag %s: %v", name, err)
	}
	return &tag
}

func TestCommands(t *testing.T) {
	tests := []struct {
		args       string
		code       int
		stdout     []string // substrings, in order
		stderr     string   // substring
		wantStdout string   // exact, when set
	}{
		// Fields the status omits are empty cells, as the apiserver's
		// Table (kubectl get tags) has them.
		{args: "list", wantStdout: "" +
			"NAME   IMAGE                          SERVED   DIGEST                LATEST   CACHED   AGE\n" +
			"app    registry.example/team/app:v1   2        sha256:000000000000   3                 90s\n" +
			"new    registry.example/team/app:v1                                                    90s\n"},
		{args: "history app", wantStdout: "" +
			"GEN   DIGEST                SERVED   CACHED   PLATFORMS                 FIRST SEEN\n" +
			"3     sha256:000000000000            false    linux/amd64,linux/arm64   <unknown>\n" +
			"2     sha256:000000000000   *        false    linux/amd64,linux/arm64   <unknown>\n" +
			"1     sha256:000000000000            true     linux/amd64,linux/arm64   <unknown>\n"},
		{args: "history app -o jsonpath={.generations[?(@.served==true)].generation}", wantStdout: "2"},
		{args: "history app -o name", wantStdout: "tag.tagger.dev/app\n"},
		{args: "history app -o wide", stdout: []string{"IMAGE", digestOf(2) + "   *", "registry.example/team/app:v1"}},
		{args: "get app -o jsonpath={.spec.image}", wantStdout: "registry.example/team/app:v1"},
		{args: "get app new -o name", wantStdout: "tag.tagger.dev/app\ntag.tagger.dev/new\n"},
		{args: "get app nope -o name", code: 1, stdout: []string{"tag.tagger.dev/app\n"}, stderr: `error: Tag "nope" not found`},
		{args: "history app --no-trunc", stdout: []string{digestOf(3), digestOf(2) + "   *", digestOf(1)}},
		{args: "history new", stderr: `Tag "new" has no generations yet`},
		{args: "history nope", code: 1, stderr: `error: Tag "nope" not found`},
		{args: "history", code: 1, stderr: "a Tag name is required"},
		{args: "history app app2", code: 1, stderr: "exactly one Tag name"},
		{args: "history app -o table", code: 1, stderr: `unknown output format "table"`},
		{args: "pin app --generation 9", code: 1, stderr: `error: Tag "app" has no generation 9; available: 3, 2, 1`},
		{args: "pin app", code: 1, stderr: "--generation is required; available in Tag \"app\": 3, 2, 1"},
		{args: "pin nope --generation 1", code: 1, stderr: `Tag "nope" not found`},
		{args: "rollback nope", code: 1, stderr: `Tag "nope" not found`},
		{args: "upgrade nope", code: 1, stderr: `Tag "nope" not found`},
		{args: "unpin nope", code: 1, stderr: `Tag "nope" not found`},
		{args: "check nope", code: 1, stderr: `Tag "nope" not found`},
		{args: "check app --timeout 0s", code: 1, stderr: "invalid --timeout 0s"},
		{args: "rollback new", code: 1, stderr: `Tag "new" serves no generation yet`},
		{args: "create x", code: 1, stderr: "--image is required"},
		{args: "create Bad_Name --image nginx", code: 1, stderr: `invalid Tag name "Bad_Name"`},
		{args: "create x --image nginx@sha256:" + strings.Repeat("0", 64), code: 1, stderr: "reference names a digest"},
		{args: "create x --image Nginx:1.27", code: 1, stderr: "invalid --image: parse image reference \"Nginx:1.27\""},
		{args: "create x --image nginx --interval 30s", code: 1, stderr: "invalid --interval 30s: must be at least 1m0s"},
		{args: "create x --image nginx --interval soon", code: 1, stderr: `invalid argument "soon" for "--interval"`},
		{args: "create x --image nginx --history-limit 101", code: 1, stderr: "invalid --history-limit 101: must be 1..100"},
		{args: "create app --image nginx", code: 1, stderr: `Tag "app" already exists`},
		{args: "frobnicate", code: 1, stderr: `unknown command "frobnicate"`},
		{args: "list --bogus", code: 1, stderr: "unknown flag: --bogus"},
		{args: "version", stdout: []string{"kubectl-tag ", "(commit ", ", built ", ", go1."}},
		{args: "--version", stdout: []string{"kubectl-tag ", "(commit ", ", built ", ", go1."}},
	}
	for _, tt := range tests {
		t.Run(tt.args, func(t *testing.T) {
			app := tagWith("app", 2, 3, 2, 1)
			for i := range app.Status.Generations {
				app.Status.Generations[i].FirstSeen = metav1.Time{} // "<unknown>" keeps the table exact
			}
			f := newFixture(t, app, tagWith("new", 0))
			out, errOut, code := f.run(strings.Fields(tt.args)...)
			if code != tt.code {
				t.Fatalf("exit code %d, want %d; stdout:\n%s\nstderr:\n%s", code, tt.code, out, errOut)
			}
			if tt.wantStdout != "" && out != tt.wantStdout {
				t.Fatalf("stdout:\n%s\nwant:\n%s", out, tt.wantStdout)
			}
			rest := out
			for _, s := range tt.stdout {
				i := strings.Index(rest, s)
				if i < 0 {
					t.Fatalf("stdout lacks %q (in order):\n%s", s, out)
				}
				rest = rest[i+len(s):]
			}
			if !strings.Contains(errOut, tt.stderr) {
				t.Fatalf("stderr lacks %q:\n%s", tt.stderr, errOut)
			}
			// check prints its result and get the Tags it found, as kubectl get does.
			if tt.code != 0 && out != "" && !strings.HasPrefix(tt.args, "check") && !strings.HasPrefix(tt.args, "get ") {
				t.Fatalf("a failed command wrote to stdout:\n%s", out)
			}
		})
	}
}

func TestCreate(t *testing.T) {
	f := newFixture(t)
	out, errOut, code := f.run("create", "web", "--image", "nginx:1.27", "--cache", "--interval", "1h", "--history-limit", "10")
	if code != 0 || out != "tag.tagger.dev/web created\n" {
		t.Fatalf("create: code %d stdout %q stderr %q", code, out, errOut)
	}
	spec := f.get("web").Spec
	if spec.Image != "nginx:1.27" || !spec.Cache || spec.CheckInterval == nil || spec.CheckInterval.Duration != time.Hour ||
		spec.HistoryLimit != 10 || spec.Generation != nil {
		t.Fatalf("spec = %+v", spec)
	}
}

func TestSetGenerationNoWait(t *testing.T) {
	f := newFixture(t, tagWith("app", 2, 3, 2, 1))
	steps := []struct {
		args string
		out  string
		want *int64
	}{
		{"pin app --generation 1 --wait=false", "tag.tagger.dev/app pinned to generation 1\n", ptr(int64(1))},
		{"rollback app --wait=false", "tag.tagger.dev/app rolled back to generation 1 (from 2)\n", ptr(int64(1))},
		{"upgrade app --wait=false", "tag.tagger.dev/app upgraded to generation 3 (from 2)\n", ptr(int64(3))},
		{"unpin app --wait=false", "tag.tagger.dev/app unpinned: follows the newest generation\n", nil},
	}
	for _, s := range steps {
		out, errOut, code := f.run(strings.Fields(s.args)...)
		if code != 0 || out != s.out {
			t.Fatalf("%s: code %d stdout %q stderr %q, want %q", s.args, code, out, errOut, s.out)
		}
		got := f.get("app").Spec.Generation
		if (got == nil) != (s.want == nil) || (got != nil && *got != *s.want) {
			t.Fatalf("%s: spec.generation = %v, want %v", s.args, deref(got), deref(s.want))
		}
	}
}

func TestStructuredOutput(t *testing.T) {
	f := newFixture(t, tagWith("app", 2, 3, 2, 1))
	out, _, code := f.run("history", "app", "-o", "json")
	var h History
	if err := json.Unmarshal([]byte(out), &h); code != 0 || err != nil {
		t.Fatalf("history -o json: code %d, %v:\n%s", code, err, out)
	}
	if h.Name != "app" || h.ServedGeneration != 2 || len(h.Generations) != 3 || !h.Generations[1].Served ||
		h.Generations[0].Served || h.Generations[1].Digest != digestOf(2) {
		t.Fatalf("history = %+v", h)
	}
	out, _, code = f.run("list", "-o", "yaml")
	var list v1alpha1.TagList
	if err := yaml.UnmarshalStrict([]byte(out), &list); code != 0 || err != nil {
		t.Fatalf("list -o yaml: code %d, %v:\n%s", code, err, out)
	}
	if list.Kind != "TagList" || len(list.Items) != 1 || list.Items[0].Kind != "Tag" || list.Items[0].Status.ServedGeneration != 2 {
		t.Fatalf("list = %+v", list)
	}
}

// With no controller acting on the annotation, check gives up after --timeout
// and says what it was waiting for.
func TestCheckTimeout(t *testing.T) {
	f := newFixture(t, tagWith("app", 1, 1))
	start := time.Now()
	out, errOut, code := f.run("check", "app", "--timeout", "300ms")
	if code != 1 || out != "" || !strings.Contains(errOut, `error: timed out after 300ms waiting for the controller to check Tag "app"`) ||
		!strings.Contains(errOut, "is the tagger controller running?") {
		t.Fatalf("code %d stdout %q stderr %q", code, out, errOut)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("check took %v with --timeout 300ms", d)
	}
	if got := f.get("app").Annotations[v1alpha1.CheckAnnotation]; got != t0.Add(90*time.Second).Format(time.RFC3339Nano) {
		t.Fatalf("check annotation = %q", got)
	}
}

func TestListEmpty(t *testing.T) {
	out, errOut, code := newFixture(t).run("list")
	if code != 0 || out != "" || errOut != "No Tags found.\n" {
		t.Fatalf("code %d stdout %q stderr %q", code, out, errOut)
	}
}

func TestHistoryImageColumn(t *testing.T) {
	tag := tagWith("app", 2, 2, 1)
	tag.Status.Generations[0].Image = "registry.example/team/app:v2"
	out, _, code := newFixture(t, tag).run("history", "app")
	if code != 0 || !strings.Contains(out, "IMAGE") || !strings.Contains(out, "registry.example/team/app:v2") {
		t.Fatalf("code %d, stdout:\n%s", code, out)
	}
}

func ptr[T any](v T) *T { return &v }

func deref(p *int64) any {
	if p == nil {
		return "<unset>"
	}
	return *p
}
