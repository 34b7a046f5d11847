package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/pkg/kubectltag"
)

const waitFlag = "--timeout 30s"

func short(d string) string { return d[:len("sha256:")+12] }

// TestGenerationStory walks a Tag through every command: create, list, check,
// history, rollback, upgrade, pin, unpin, against the real controller.
func TestGenerationStory(t *testing.T) {
	c := startCluster(t)
	kc := "--kubeconfig " + cluster.kubeconfig
	up := rig.NewRegistry(t, rig.RegistryOptions{})
	img1 := up.PushImage(t, "team/app", "v1", rig.ImageOptions{}).Digest.String()
	image := up.Host() + "/team/app:v1"
	deleteTagOnCleanup(t, c, "app")

	step := func(name string, f func(t *testing.T)) {
		if !t.Run(name, f) {
			t.FailNow()
		}
	}

	step("create", func(t *testing.T) {
		out := ok(t, "create app --image "+image+" --interval 1h "+kc)
		if out != "tag.tagger.dev/app created\n" {
			t.Fatalf("stdout %q", out)
		}
		tb := parseTable(t, ok(t, "list "+kc), "NAME", "IMAGE", "SERVED", "DIGEST", "LATEST", "CACHED", "AGE")
		if got := tb.cell(t, tb.row(t, "app"), "IMAGE"); got != image {
			t.Fatalf("IMAGE = %q, want %q", got, image)
		}
		fails(t, "create app --image "+image+" "+kc, `error: Tag "app" already exists`)
	})

	step("generation 1 via list -o json", func(t *testing.T) {
		rig.WaitFor(t, waitTimeout, "list -o json to show generation 1 served", func() (bool, string) {
			var list v1alpha1.TagList
			out := ok(t, "list -o json "+kc)
			if err := json.Unmarshal([]byte(out), &list); err != nil {
				t.Fatalf("list -o json does not parse: %v\n%s", err, out)
			}
			for _, tag := range list.Items {
				if tag.Name == "app" {
					return tag.Status.ServedGeneration == 1 && tag.Status.ServedDigest == img1, fmt.Sprintf("status %+v", tag.Status)
				}
			}
			return false, "no Tag app in " + out
		})
		if out := ok(t, "list -o yaml "+kc); !strings.Contains(out, "kind: TagList") || strings.Contains(out, "managedFields") {
			t.Fatalf("list -o yaml: want a TagList without managedFields:\n%s", out)
		}
		tb := parseTable(t, ok(t, "list "+kc), "NAME", "IMAGE", "SERVED", "DIGEST", "LATEST", "CACHED", "AGE")
		i := tb.row(t, "app")
		for col, want := range map[string]string{"SERVED": "1", "DIGEST": short(img1), "LATEST": "1", "CACHED": ""} { // cachedServed false is omitted: an empty cell, as in kubectl get tags
			if got := tb.cell(t, i, col); got != want {
				t.Errorf("list %s = %q, want %q", col, got, want)
			}
		}
		if age := tb.cell(t, i, "AGE"); !strings.HasSuffix(age, "s") && !strings.HasSuffix(age, "m") {
			t.Errorf("AGE = %q", age)
		}
	})

	img2 := up.PushImage(t, "team/app", "v1", rig.ImageOptions{}).Digest.String()
	step("check finds generation 2", func(t *testing.T) {
		out := ok(t, "check app "+waitFlag+" "+kc)
		want := fmt.Sprintf("NewGeneration: generation 2 (%s)\nserving generation 2 (%s)\n", img2, img2)
		if out != want {
			t.Fatalf("check stdout:\n%s\nwant:\n%s", out, want)
		}
		out = ok(t, "check app "+kc)
		if !strings.HasPrefix(out, fmt.Sprintf("Unchanged: generation 2 (%s) is still the newest\n", img2)) {
			t.Fatalf("second check stdout:\n%s", out)
		}
	})

	// history lists 2 then 1 and marks the served one.
	history := func(t *testing.T, served string) {
		t.Helper()
		tb := parseTable(t, ok(t, "history app "+kc), "GEN", "DIGEST", "SERVED", "CACHED", "PLATFORMS", "FIRST SEEN")
		if len(tb.rows) != 2 || tb.cell(t, 0, "GEN") != "2" || tb.cell(t, 1, "GEN") != "1" {
			t.Fatalf("history rows %q, want generations 2 and 1", tb.rows)
		}
		for i, d := range []string{img2, img1} {
			gen := tb.cell(t, i, "GEN")
			marker := ""
			if gen == served {
				marker = "*"
			}
			if got := tb.cell(t, i, "SERVED"); got != marker {
				t.Errorf("generation %s SERVED = %q, want %q", gen, got, marker)
			}
			if got := tb.cell(t, i, "DIGEST"); got != short(d) {
				t.Errorf("generation %s DIGEST = %q, want %q", gen, got, short(d))
			}
			if got := tb.cell(t, i, "PLATFORMS"); got != "linux/amd64" {
				t.Errorf("generation %s PLATFORMS = %q", gen, got)
			}
			if got := tb.cell(t, i, "FIRST SEEN"); got == "" || got == "<unknown>" {
				t.Errorf("generation %s FIRST SEEN = %q", gen, got)
			}
		}
	}

	step("history", func(t *testing.T) {
		history(t, "2")
		if out := ok(t, "history app --no-trunc "+kc); !strings.Contains(out, img2) || !strings.Contains(out, img1) {
			t.Fatalf("--no-trunc lacks the full digests:\n%s", out)
		}
		var h kubectltag.History
		if err := json.Unmarshal([]byte(ok(t, "history app -o json "+kc)), &h); err != nil {
			t.Fatalf("history -o json: %v", err)
		}
		if h.Name != "app" || h.ServedGeneration != 2 || len(h.Generations) != 2 ||
			h.Generations[0].Generation != 2 || !h.Generations[0].Served || h.Generations[0].Digest != img2 ||
			h.Generations[1].Generation != 1 || h.Generations[1].Served || h.Generations[1].Digest != img1 {
			t.Fatalf("history -o json = %+v", h)
		}
		var hy kubectltag.History
		if err := yaml.Unmarshal([]byte(ok(t, "history app -o yaml "+kc)), &hy); err != nil || len(hy.Generations) != 2 {
			t.Fatalf("history -o yaml: %v %+v", err, hy)
		}
	})

	step("rollback serves 1", func(t *testing.T) {
		out := ok(t, "rollback app "+waitFlag+" "+kc)
		want := fmt.Sprintf("tag.tagger.dev/app rolled back to generation 1 (from 2)\nserving generation 1 (%s)\n", img1)
		if out != want {
			t.Fatalf("rollback stdout:\n%s\nwant:\n%s", out, want)
		}
		expectSpec(t, c, "app", ptr(int64(1)))
		history(t, "1")
		fails(t, "rollback app "+kc, `error: Tag "app" serves generation 1, the oldest in its history: nothing to roll back to`)
	})

	step("upgrade serves 2", func(t *testing.T) {
		out := ok(t, "upgrade app "+waitFlag+" "+kc)
		want := fmt.Sprintf("tag.tagger.dev/app upgraded to generation 2 (from 1)\nserving generation 2 (%s)\n", img2)
		if out != want {
			t.Fatalf("upgrade stdout:\n%s\nwant:\n%s", out, want)
		}
		expectSpec(t, c, "app", ptr(int64(2)))
		history(t, "2")
		fails(t, "upgrade app "+kc, `error: Tag "app" already serves generation 2, the newest`)
	})

	step("pin", func(t *testing.T) {
		out := ok(t, "pin app --generation 1 "+kc)
		if want := fmt.Sprintf("tag.tagger.dev/app pinned to generation 1\nserving generation 1 (%s)\n", img1); out != want {
			t.Fatalf("pin stdout:\n%s\nwant:\n%s", out, want)
		}
		expectSpec(t, c, "app", ptr(int64(1)))
		fails(t, "pin app --generation 9 "+kc, `error: Tag "app" has no generation 9; available: 2, 1`)
		expectSpec(t, c, "app", ptr(int64(1))) // the bad pin changed nothing
	})

	img3 := up.PushImage(t, "team/app", "v1", rig.ImageOptions{}).Digest.String()
	step("check while pinned, upgrade --latest", func(t *testing.T) {
		out := ok(t, "check app "+kc)
		want := fmt.Sprintf("NewGeneration: generation 3 (%s)\nserving generation 1 (%s), pinned by spec.generation; `kubectl tag upgrade app --latest` serves generation 3\n", img3, img1)
		if out != want {
			t.Fatalf("check stdout:\n%s\nwant:\n%s", out, want)
		}
		out = ok(t, "upgrade app --latest "+kc)
		if want := fmt.Sprintf("tag.tagger.dev/app upgraded to generation 3 (from 1)\nserving generation 3 (%s)\n", img3); out != want {
			t.Fatalf("upgrade --latest stdout:\n%s\nwant:\n%s", out, want)
		}
		ok(t, "pin app --generation 2 "+kc)
	})

	step("unpin follows the newest", func(t *testing.T) {
		out := ok(t, "unpin app "+waitFlag+" "+kc)
		if want := fmt.Sprintf("tag.tagger.dev/app unpinned: follows the newest generation\nserving generation 3 (%s)\n", img3); out != want {
			t.Fatalf("unpin stdout:\n%s\nwant:\n%s", out, want)
		}
		expectSpec(t, c, "app", nil)
		img4 := up.PushImage(t, "team/app", "v1", rig.ImageOptions{}).Digest.String()
		out = ok(t, "check app "+kc)
		if want := fmt.Sprintf("NewGeneration: generation 4 (%s)\nserving generation 4 (%s)\n", img4, img4); out != want {
			t.Fatalf("check after unpin:\n%s\nwant:\n%s", out, want)
		}
	})

	step("--wait=false", func(t *testing.T) {
		out := ok(t, "rollback app --wait=false "+kc)
		if out != "tag.tagger.dev/app rolled back to generation 3 (from 4)\n" {
			t.Fatalf("stdout %q", out)
		}
		expectSpec(t, c, "app", ptr(int64(3)))
	})
}

// TestErrors: missing Tags, a failing check, and bad command lines exit 1
// with a message on stderr and nothing on stdout.
func TestErrors(t *testing.T) {
	c := startCluster(t)
	kc := "--kubeconfig " + cluster.kubeconfig
	for _, cmd := range []string{"history nope", "check nope", "pin nope --generation 1", "rollback nope", "upgrade nope", "unpin nope"} {
		if r := fails(t, cmd+" "+kc, `error: Tag "nope" not found`); r.stdout != "" {
			t.Errorf("%s wrote to stdout: %q", cmd, r.stdout)
		}
	}

	// A Tag whose upstream does not exist: every check fails, exit 1.
	up := rig.NewRegistry(t, rig.RegistryOptions{})
	deleteTagOnCleanup(t, c, "broken")
	ok(t, "create broken --image "+up.Host()+"/missing/app:v1 "+kc)
	r := fails(t, "check broken "+waitFlag+" "+kc, `error: check of Tag "broken" failed`)
	if !strings.HasPrefix(r.stdout, "Failed: ") || !strings.Contains(r.stdout, "serving no generation yet") {
		t.Fatalf("failed check stdout: %q", r.stdout)
	}
	fails(t, "rollback broken "+kc, `Tag "broken" serves no generation yet`)
	fails(t, "pin broken --generation 1 "+kc, `Tag "broken" has no generation 1; available: none`)

	// A younger Tag for the same image is in Conflict: the controller neither
	// checks nor serves it, and check says so instead of reporting a stale result.
	deleteTagOnCleanup(t, c, "dup")
	ok(t, "create dup --image "+up.Host()+"/missing/app:v1 "+kc)
	fails(t, "check dup "+waitFlag+" "+kc, `error: Tag "dup" is not served: Tag "broken" is older and already pins`)

	for cmdline, want := range map[string]string{
		"create x --image nginx@sha256:" + strings.Repeat("a", 64): "reference names a digest",
		"create x --image nginx --interval 10s":                    "invalid --interval 10s: must be at least 1m0s",
		"create x":                                                 "--image is required",
		"pin broken":                                               "--generation is required",
		"list -o xml":                                              `unknown output format "xml"`,
		"history":                                                  "a Tag name is required",
		"check broken --timeout soon":                              `invalid argument "soon" for "--timeout"`,
		"frobnicate":                                               `unknown command "frobnicate"`,
	} {
		if r := fails(t, cmdline+" "+kc, want); r.stdout != "" {
			t.Errorf("%s wrote to stdout: %q", cmdline, r.stdout)
		}
	}
	var tag v1alpha1.Tag
	if err := c.Get(context.Background(), client.ObjectKey{Name: "x"}, &tag); err == nil {
		t.Fatal("an invalid create made Tag x")
	}
}

// TestKubeconfigSelection: --kubeconfig, --context and $KUBECONFIG pick the
// cluster the way kubectl does.
func TestKubeconfigSelection(t *testing.T) {
	c := startCluster(t)
	deleteTagOnCleanup(t, c, "ctx")
	ok(t, "create ctx --image registry.invalid/ctx/app:v1 --kubeconfig "+cluster.kubeconfig)

	// The current context is envtest; --context nowhere goes to the dead port.
	ok(t, "list --kubeconfig "+cluster.kubeconfig+" --context envtest")
	r := fails(t, "list --kubeconfig "+cluster.kubeconfig+" --context nowhere --request-timeout 5s", cluster.nowhereAddr)
	if !strings.Contains(r.stderr, "connection refused") {
		t.Fatalf("want connection refused: %s", r)
	}
	fails(t, "list --kubeconfig "+cluster.kubeconfig+" --context missing", `context "missing" does not exist`)

	// $KUBECONFIG names the file whose current context is nowhere; --context overrides it.
	t.Setenv("KUBECONFIG", cluster.nowhereConfig)
	fails(t, "history ctx --request-timeout 5s", cluster.nowhereAddr)
	if r := kubectlTag(t, "history ctx --context envtest"); r.code != 0 || r.stdout != "" || !strings.Contains(r.stderr, `Tag "ctx" has no generations yet`) {
		t.Fatalf("history of an unresolved Tag: %s", r)
	}
	tb := parseTable(t, ok(t, "list --context envtest"), "NAME", "IMAGE", "SERVED", "DIGEST", "LATEST", "CACHED", "AGE")
	tb.row(t, "ctx")
	// Global flags also go before the command, as kubectl passes them through.
	ok(t, "--context envtest list")
	fails(t, "--context nowhere --request-timeout 5s list", cluster.nowhereAddr)
	// --kubeconfig wins over $KUBECONFIG.
	ok(t, "list --kubeconfig "+cluster.kubeconfig)
	fails(t, "list --request-timeout soon --kubeconfig "+cluster.kubeconfig, "timeout")
}

func expectSpec(t *testing.T, c client.Client, name string, want *int64) {
	t.Helper()
	var tag v1alpha1.Tag
	if err := c.Get(context.Background(), client.ObjectKey{Name: name}, &tag); err != nil {
		t.Fatal(err)
	}
	got := tag.Spec.Generation
	if (got == nil) != (want == nil) || (got != nil && *got != *want) {
		t.Fatalf("spec.generation of Tag %s = %s, want %s", name, show(got), show(want))
	}
}

func show(p *int64) string {
	if p == nil {
		return "<unset>"
	}
	return fmt.Sprint(*p)
}

func ptr[T any](v T) *T { return &v }
