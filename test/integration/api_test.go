package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/pkg/pins"
)

// TestImageValidationAgrees: the CRD's CEL rules on spec.image and the
// controller's own parse (pins.ParseReference: the distribution reference
// grammar, ParseNormalizedNamed, and no digest) accept and refuse the same
// images, and a refusal says why. Dry-run creates: admission runs in full,
// nothing is stored for the controller to check.
func TestImageValidationAgrees(t *testing.T) {
	c := startCluster(t)
	hex64 := strings.Repeat("0123456789abcdef", 4)
	dgst := "sha256:" + hex64
	cases := []struct {
		image string
		ok    bool
		why   string // in the refusal
	}{
		{"nginx", true, ""},
		{"nginx:1.27", true, ""},
		{"library/nginx:latest", true, ""},
		{"docker.io/library/nginx:1.27", true, ""},
		{"index.docker.io/nginx", true, ""},
		{"quay.io/org/app:v1", true, ""},
		{"ghcr.io/org/team/app:v1.2.3-rc.1", true, ""},
		{"localhost/app", true, ""},
		{"localhost:5000/app:v1", true, ""},
		{"localhost:5000", true, ""}, // Docker Hub's library/localhost, tag 5000
		{"127.0.0.1:5000/a/b:c", true, ""},
		{"[::1]:5000/app:v1", true, ""},
		{"registry.example:5000/my_app__x/a-b--c.d:TAG_1", true, ""},
		{"MyRegistry/app:v1", true, ""}, // a capitalized first component is a host
		{"Registry.Example.COM/app:V1", true, ""},
		{"app:_x", true, ""},
		{"app:" + strings.Repeat("t", 128), true, ""},
		{"registry.example/" + strings.Repeat("a", 255) + ":v1", true, ""},
		{strings.Repeat("a", 247) + ":v1", true, ""}, // library/ + 247 = 255
		{"team/" + strings.Repeat("a", 250), true, ""},
		{"index.docker.io/" + strings.Repeat("a", 247), true, ""}, // docker.io/library/...
		{"Docker.io/" + strings.Repeat("a", 255), true, ""},       // not Docker Hub: no library/
		{hex64 + ":v1", true, ""},

		{"Nginx:1.27", false, "lowercase"},
		{"quay.io/Org/app:v1", false, "lowercase"},
		{"myorg/App:v1", false, "lowercase"},
		{"localhost:5000/App:v1", false, "lowercase"},
		{"nginx@" + dgst, false, "not a digest"},
		{"nginx:1@" + dgst, false, "not a digest"},
		{"nginx:", false, "complete tag reference"},
		{"quay.io/org/", false, "complete tag reference"},
		{"nginx:-x", false, "tag"},
		{"nginx:.x", false, "tag"},
		{"nginx:" + strings.Repeat("t", 129), false, "tag"},
		{"nginx:a:b", false, "tag"},
		{"nginx 1.27", false, "repository path"},
		{"-nginx", false, "repository path"},
		{"nginx..x", false, "repository path"},
		{"nginx_-x", false, "repository path"},
		{"team//app", false, "repository path"},
		{"registry.example:http/app", false, "registry host"},
		{"-bad.example/app", false, "registry host"},
		{"bad-.example/app", false, "registry host"},
		{"host:5000:1/app", false, "registry host"},
		{"[zz]:5000/app", false, "registry host"},
		{"nginx:v1/x", false, "registry host"},
		{"registry.example/" + strings.Repeat("a", 256) + ":v1", false, "255"},
		{strings.Repeat("a", 248) + ":v1", false, "255"},
		{"docker.io/" + strings.Repeat("a", 248), false, "255"},
		{"team/" + strings.Repeat("a", 251), false, "255"},
		{"index.docker.io/" + strings.Repeat("a", 248), false, "255"},
		{hex64, false, "image ID"},
	}
	for i, tc := range cases {
		t.Run(fmt.Sprintf("%d %.40s", i, tc.image), func(t *testing.T) {
			_, perr := pins.ParseReference(tc.image)
			tag := rig.NewTag(fmt.Sprint("image-", i), tc.image)
			err := c.Create(context.Background(), tag, client.DryRunAll)
			if err != nil && !apierrors.IsInvalid(err) {
				t.Fatalf("create Tag with image %q: %v", tc.image, err)
			}
			if (err == nil) != (perr == nil) {
				t.Fatalf("image %q: the CRD says %v, the controller's parse says %v", tc.image, err, perr)
			}
			if (err == nil) != tc.ok {
				t.Fatalf("image %q: admitted %v, want %v (CRD: %v)", tc.image, err == nil, tc.ok, err)
			}
			if err != nil && !strings.Contains(err.Error(), tc.why) {
				t.Fatalf("image %q refused without saying %q: %v", tc.image, tc.why, err)
			}
		})
	}
}

// TestPrinterColumns reads `kubectl get tags` as the apiserver serves it
// (the Table kubectl asks for): READY is the Ready condition, False for a
// Tag in Conflict and for one whose check fails, True for a served one, and
// the last check's time, result and the Ready reason are wide (priority 1).
func TestPrinterColumns(t *testing.T) {
	k := shared.Get(t)
	c := k.Client
	up := rig.NewRegistry(t, rig.RegistryOptions{})
	img := up.PushImage(t, "cols/app", "v1", rig.ImageOptions{})

	rig.CreateTag(t, c, rig.NewTag("cols-a-ok", up.Host()+"/cols/app:v1"))
	rig.WaitTag(t, c, "cols-a-ok", "served", rig.ServedIs(1, img.Digest.String()))
	rig.CreateTag(t, c, rig.NewTag("cols-b-conflict", up.Host()+"/cols/app:v1"))
	rig.WaitTag(t, c, "cols-b-conflict", "Conflict", rig.ConditionIs(v1alpha1.ConditionConflict, metav1.ConditionTrue, "ImageAlreadyPinned"))
	rig.CreateTag(t, c, rig.NewTag("cols-missing", up.Host()+"/cols/app:nope"))
	rig.WaitTag(t, c, "cols-missing", "check failed", rig.ConditionIs(v1alpha1.ConditionResolved, metav1.ConditionFalse, "NotFound"))

	// A served Tag whose upstream then goes away keeps its pin, not its READY.
	down := rig.NewRegistry(t, rig.RegistryOptions{})
	downImg := down.PushImage(t, "cols/down", "v1", rig.ImageOptions{})
	rig.CreateTag(t, c, rig.NewTag("cols-stale", down.Host()+"/cols/down:v1"))
	rig.WaitTag(t, c, "cols-stale", "served", rig.ServedIs(1, downImg.Digest.String()))
	down.Stop()
	rig.RequestCheck(t, c, "cols-stale", "down")
	stale := rig.WaitTag(t, c, "cols-stale", "Ready=False Unreachable", rig.ConditionIs(v1alpha1.ConditionReady, metav1.ConditionFalse, "Unreachable"))
	if stale.Status.ServedGeneration != 1 || !strings.Contains(rig.Condition(stale, v1alpha1.ConditionReady).Message, "still serving generation 1") {
		t.Fatalf("stale Tag: served %d, Ready %+v; want generation 1 still served and said so", stale.Status.ServedGeneration, rig.Condition(stale, v1alpha1.ConditionReady))
	}

	for name, want := range map[string]map[string]string{
		"cols-a-ok":       {"Ready": "True", "Served": "1", "Result": v1alpha1.CheckNewGeneration, "Reason": "Newest"},
		"cols-b-conflict": {"Ready": "False", "Reason": "Conflict"},
		"cols-missing":    {"Ready": "False", "Result": v1alpha1.CheckFailed, "Reason": "NotFound"},
		"cols-stale":      {"Ready": "False", "Served": "1", "Result": v1alpha1.CheckFailed, "Reason": "Unreachable"},
	} {
		cols, cells := tableRow(t, k.Config, name)
		for col, v := range want {
			if got := fmt.Sprint(cells[col]); got != v {
				t.Errorf("Tag %s: column %s = %q, want %q (row %v)", name, col, got, v, cells)
			}
		}
		if name != "cols-b-conflict" && cells["Last Check"] == nil { // a Conflict is never checked
			t.Errorf("Tag %s: no Last Check (row %v)", name, cells)
		}
		if name != "cols-a-ok" {
			continue
		}
		// Priority 1: shown by `kubectl get -o wide` only.
		wide := map[string]int32{"Ready": 0, "Image": 0, "Served": 0, "Age": 0, "Last Check": 1, "Result": 1, "Reason": 1}
		for col, prio := range wide {
			if p, ok := cols[col]; !ok || p != prio {
				t.Errorf("column %s priority %d (present %v), want %d", col, p, ok, prio)
			}
		}
	}
}

// tableRow GETs Tag name as a meta.k8s.io Table, as kubectl get does, and
// returns the columns' priorities and the row's cells by column name.
func tableRow(t *testing.T, cfg *rest.Config, name string) (map[string]int32, map[string]any) {
	t.Helper()
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatalf("HTTP client: %v", err)
	}
	url := strings.TrimRight(cfg.Host, "/") + "/apis/tagger.dev/v1alpha1/tags/" + name
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("GET %s as Table: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s as Table: %s %v: %s", url, resp.Status, err, body)
	}
	var table metav1.Table
	if err := json.Unmarshal(body, &table); err != nil || table.Kind != "Table" || len(table.Rows) != 1 {
		t.Fatalf("GET %s: not a one-row Table (%v): %s", url, err, body)
	}
	cols, cells := map[string]int32{}, map[string]any{}
	for i, cd := range table.ColumnDefinitions {
		cols[cd.Name] = cd.Priority
		if i < len(table.Rows[0].Cells) {
			cells[cd.Name] = table.Rows[0].Cells[i]
		}
	}
	return cols, cells
}
