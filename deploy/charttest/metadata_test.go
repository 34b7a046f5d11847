package charttest

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

// chartMeta is the part of Chart.yaml checked here.
type chartMeta struct {
	AppVersion  string            `json:"appVersion"`
	Maintainers []map[string]any  `json:"maintainers"`
	Annotations map[string]string `json:"annotations"`
}

// TestChartMetadata: Chart.yaml declares maintainers, and
// its ArtifactHub annotations parse and agree with the chart: the images
// with values.yaml's defaults, the CRDs with files/crds.
func TestChartMetadata(t *testing.T) {
	root := filepath.Join(repoRoot(t), chartDir)
	data, err := os.ReadFile(filepath.Join(root, "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c chartMeta
	if err := yaml.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	if len(c.Maintainers) == 0 {
		t.Error("Chart.yaml: no maintainers")
	}
	for _, k := range []string{"artifacthub.io/license", "artifacthub.io/prerelease"} {
		if c.Annotations[k] == "" {
			t.Errorf("Chart.yaml: no %s annotation", k)
		}
	}
	lists := map[string][]map[string]any{}
	for _, k := range []string{"links", "images", "crds", "crdsExamples", "changes"} {
		var l []map[string]any
		if err := yaml.UnmarshalStrict([]byte(c.Annotations["artifacthub.io/"+k]), &l); err != nil || len(l) == 0 {
			t.Errorf("Chart.yaml annotation artifacthub.io/%s: %v, want a non-empty YAML list", k, err)
		}
		lists[k] = l
	}

	v := loadValues(t)
	want := []string{imageRef(v["image"], c.AppVersion), imageRef(v["registry"].(map[string]any)["image"], "")}
	var got []string
	for _, img := range lists["images"] {
		got = append(got, fmt.Sprint(img["image"]))
	}
	if !slices.Equal(got, want) {
		t.Errorf("artifacthub.io/images %v, want the default images %v", got, want)
	}

	crds, err := filepath.Glob(filepath.Join(root, crdFiles, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range crds {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var crd apiextensionsv1.CustomResourceDefinition
		if err := yaml.Unmarshal(data, &crd); err != nil {
			t.Fatal(err)
		}
		names = append(names, crd.Name)
	}
	var annotated []string
	for _, crd := range lists["crds"] {
		annotated = append(annotated, fmt.Sprint(crd["name"]))
	}
	slices.Sort(names)
	slices.Sort(annotated)
	if !slices.Equal(names, annotated) {
		t.Errorf("artifacthub.io/crds names %v, want the chart's CRDs %v", annotated, names)
	}
}

// imageRef is the image a values image block pulls by default.
func imageRef(block any, appVersion string) string {
	img := block.(map[string]any)
	tag := fmt.Sprint(img["tag"])
	if tag == "" {
		tag = appVersion
	}
	ref := fmt.Sprintf("%s:%s", img["repository"], tag)
	if d := fmt.Sprint(img["digest"]); d != "" {
		ref += "@" + d // as the chart renders it: the tag for people, the digest pulled
	}
	return ref
}
