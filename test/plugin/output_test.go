package plugin

import (
	"encoding/json"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/pkg/kubectltag"
)

// TestOutputFormats runs every -o mode on a Tag the real controller has
// resolved, and parses what comes back.
func TestOutputFormats(t *testing.T) {
	c := startCluster(t)
	kc := " --kubeconfig " + cluster.kubeconfig
	up := rig.NewRegistry(t, rig.RegistryOptions{})
	digest := up.PushImage(t, "team/out", "v1", rig.ImageOptions{}).Digest.String()
	image := up.Host() + "/team/out:v1"
	deleteTagOnCleanup(t, c, "out")

	// create: kubectl's "<kind>.<group>/<name> <verb>" by default, the bare
	// name with -o name, the object with -o json.
	if out := ok(t, "create out --image "+image+kc); out != "tag.tagger.dev/out created\n" {
		t.Fatalf("create: %q", out)
	}
	rig.WaitFor(t, waitTimeout, "Tag out to serve generation 1", func() (bool, string) {
		out := ok(t, "get out -o jsonpath={.status.servedGeneration}"+kc)
		return out == "1", "servedGeneration " + out
	})
	deleteTagOnCleanup(t, c, "out-name")
	if out := ok(t, "create out-name --image "+image+"-name -o name"+kc); out != "tag.tagger.dev/out-name\n" {
		t.Fatalf("create -o name: %q", out)
	}
	deleteTagOnCleanup(t, c, "out-json")
	var created v1alpha1.Tag
	decode(t, json.Unmarshal, ok(t, "create out-json --image "+image+"-json --cache -o json"+kc), &created)
	if created.Kind != "Tag" || created.Name != "out-json" || !created.Spec.Cache || created.UID == "" {
		t.Fatalf("create -o json: %+v", created)
	}

	t.Run("get json and yaml", func(t *testing.T) {
		var tag v1alpha1.Tag
		out := ok(t, "get out -o json"+kc)
		decode(t, json.Unmarshal, out, &tag)
		if tag.APIVersion != "tagger.dev/v1alpha1" || tag.Kind != "Tag" || tag.Status.ServedDigest != digest {
			t.Fatalf("get -o json: %+v", tag)
		}
		if strings.Contains(out, "managedFields") {
			t.Fatalf("get -o json prints managedFields:\n%s", out)
		}
		if out := ok(t, "get out -o json --show-managed-fields"+kc); !strings.Contains(out, "managedFields") {
			t.Fatalf("--show-managed-fields drops them:\n%s", out)
		}
		var fromYAML v1alpha1.Tag
		decode(t, unmarshalYAML, ok(t, "get out -o yaml"+kc), &fromYAML)
		if fromYAML.Status.ServedDigest != digest || fromYAML.Spec.Image != image {
			t.Fatalf("get -o yaml: %+v", fromYAML)
		}
		var fromKYAML v1alpha1.Tag
		decode(t, unmarshalYAML, ok(t, "get out -o kyaml"+kc), &fromKYAML)
		if fromKYAML.Kind != "Tag" || fromKYAML.Status.ServedDigest != digest {
			t.Fatalf("get -o kyaml: %+v", fromKYAML)
		}
		var list v1alpha1.TagList
		decode(t, unmarshalYAML, ok(t, "list -o yaml"+kc), &list)
		if list.Kind != "TagList" || len(list.Items) < 3 {
			t.Fatalf("list -o yaml: kind %q, %d items", list.Kind, len(list.Items))
		}
	})

	t.Run("name jsonpath go-template", func(t *testing.T) {
		for cmdline, want := range map[string]string{
			"get out -o name": "tag.tagger.dev/out\n",
			"get out -o jsonpath={.status.servedDigest}":          digest,
			"get out -o go-template={{.spec.image}}":              image,
			"get out --template={{.metadata.name}}":               "out",
			"get out out-name -o jsonpath={.items[*].spec.image}": image + " " + image + "-name",
			"history out -o name":                                 "tag.tagger.dev/out\n",
			"history out -o jsonpath={.generations[0].digest}":    digest,
			"history out -o go-template={{.servedGeneration}}":    "1",
		} {
			if out := ok(t, cmdline+kc); out != want {
				t.Errorf("%s: %q, want %q", cmdline, out, want)
			}
		}
		names := ok(t, "list -o name"+kc)
		for _, n := range []string{"out", "out-name", "out-json"} {
			if !strings.Contains(names, "tag.tagger.dev/"+n+"\n") {
				t.Errorf("list -o name lacks %s:\n%s", n, names)
			}
		}
		var images []string
		decode(t, json.Unmarshal, ok(t, "get out -o jsonpath-as-json={.spec.image}"+kc), &images)
		if len(images) != 1 || images[0] != image {
			t.Fatalf("jsonpath-as-json: %q", images)
		}
	})

	t.Run("tables", func(t *testing.T) {
		tb := parseTable(t, ok(t, "list -o custom-columns=NAME:.metadata.name,GEN:.status.servedGeneration,PIN:.spec.generation"+kc), "NAME", "GEN", "PIN")
		if i := tb.row(t, "out"); tb.cell(t, i, "GEN") != "1" || tb.cell(t, i, "PIN") != "<none>" {
			t.Fatalf("custom-columns row %q", tb.rows[i])
		}
		wide := parseTable(t, ok(t, "get out -o wide"+kc), "NAME", "IMAGE", "SERVED", "DIGEST", "LATEST", "CACHED", "AGE")
		if got := wide.cell(t, wide.row(t, "out"), "DIGEST"); got != short(digest) {
			t.Fatalf("wide DIGEST %q", got)
		}
		if out := ok(t, "get out --no-headers"+kc); strings.Contains(out, "NAME") || !strings.HasPrefix(out, "out ") {
			t.Fatalf("--no-headers: %q", out)
		}
		h := parseTable(t, ok(t, "history out -o wide"+kc), "GEN", "DIGEST", "SERVED", "CACHED", "PLATFORMS", "FIRST SEEN", "IMAGE")
		if i := h.row(t, "1"); h.cell(t, i, "DIGEST") != digest || h.cell(t, i, "IMAGE") != image {
			t.Fatalf("history -o wide row %q", h.rows[i])
		}
	})

	t.Run("generation commands", func(t *testing.T) {
		if out := ok(t, "pin out --generation 1 "+waitFlag+" -o jsonpath={.status.servedGeneration}/{.spec.generation}"+kc); out != "1/1" {
			t.Fatalf("pin -o jsonpath: %q", out)
		}
		if out := ok(t, "unpin out "+waitFlag+" -o name"+kc); out != "tag.tagger.dev/out\n" {
			t.Fatalf("unpin -o name: %q", out)
		}
		var tag v1alpha1.Tag
		decode(t, unmarshalYAML, ok(t, "pin out --generation 1 --wait=false -o yaml"+kc), &tag)
		if tag.Spec.Generation == nil || *tag.Spec.Generation != 1 {
			t.Fatalf("pin -o yaml: spec %+v", tag.Spec)
		}
	})

	t.Run("version", func(t *testing.T) {
		var v kubectltag.VersionInfo
		decode(t, json.Unmarshal, ok(t, "version -o json"), &v)
		if v.Version == "" || !strings.HasPrefix(v.GoVersion, "go1.") {
			t.Fatalf("version -o json: %+v", v)
		}
	})

	t.Run("bad formats", func(t *testing.T) {
		for cmdline, want := range map[string]string{
			"get out -o xml":                     `unknown output format "xml"`,
			"get out -o jsonpath={.status":       "invalid -o jsonpath={.status",
			"get out -o custom-columns=NAME":     "is not HEADER:JSONPATH",
			"history out -o custom-columns=A:.b": `unknown output format "custom-columns=A:.b"`,
			"pin out --generation 1 -o wide":     `unknown output format "wide"`,
			"version -o name":                    `unknown output format "name"`,
		} {
			if r := fails(t, cmdline+kc, want); r.stdout != "" {
				t.Errorf("%s wrote to stdout: %q", cmdline, r.stdout)
			}
		}
	})
}

func unmarshalYAML(b []byte, v any) error { return yaml.Unmarshal(b, v) }

// decode parses out with unmarshal into v, failing the test with the text.
func decode(t *testing.T, unmarshal func([]byte, any) error, out string, v any) {
	t.Helper()
	if err := unmarshal([]byte(out), v); err != nil {
		t.Fatalf("decode %T: %v\n%s", v, err, out)
	}
}
