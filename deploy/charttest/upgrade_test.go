package charttest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/tagger-project/tagger/internal/rig"
)

const (
	crdName  = "tags.tagger.dev"
	crdFiles = "files/crds"
	// newField is the spec property the "older" chart's CRD lacks.
	newField = "cache"
)

var tagsGVR = schema.GroupVersionResource{Group: "tagger.dev", Version: "v1alpha1", Resource: "tags"}

// upgradeEnv is a real apiserver without the Tag CRD, and helm pointed at it.
type upgradeEnv struct {
	kube *rig.Kube
	crds client.Client // knows CustomResourceDefinitions
	helm rig.HelmRunner
	tags dynamic.ResourceInterface
}

func newUpgradeEnv(t *testing.T) *upgradeEnv {
	kube := rig.NewKube(t)
	dir := t.TempDir()
	kc := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kc, kube.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	dc, err := dynamic.NewForConfig(kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	sch := runtime.NewScheme()
	if err := apiextensionsv1.AddToScheme(sch); err != nil {
		t.Fatal(err)
	}
	crds, err := client.New(kube.Config, client.Options{Scheme: sch})
	if err != nil {
		t.Fatal(err)
	}
	e := &upgradeEnv{kube: kube, crds: crds, tags: dc.Resource(tagsGVR),
		helm: rig.HelmRunner{Dir: repoRoot(t), Home: filepath.Join(dir, "helm"), Kubeconfig: kc}}
	// The rig installs the CRD from deploy/crds; the chart must install it here.
	e.deleteCRD(t)
	return e
}

// run runs helm against the apiserver and fails the test on an error.
func (e *upgradeEnv) run(t *testing.T, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	if out, err := e.helm.Run(ctx, args...); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

// installArgs: nothing waits for pods (there is no kubelet) and the
// post-delete hook is off (its Job would never complete here).
func installArgs(verb, chart string) []string {
	return []string{verb, releaseName, chart, "--namespace", namespace, "--create-namespace",
		"--set", "nodeAgent.cleanupHook.enabled=false"}
}

func (e *upgradeEnv) crd(t *testing.T) (*apiextensionsv1.CustomResourceDefinition, error) {
	t.Helper()
	var crd apiextensionsv1.CustomResourceDefinition
	err := e.crds.Get(t.Context(), client.ObjectKey{Name: crdName}, &crd)
	return &crd, err
}

func (e *upgradeEnv) deleteCRD(t *testing.T) {
	t.Helper()
	crd, err := e.crd(t)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.crds.Delete(t.Context(), crd); err != nil {
		t.Fatal(err)
	}
	rig.WaitFor(t, time.Minute, "Tag CRD deleted", func() (bool, string) {
		_, err := e.crd(t)
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
}

func tag(name string, withField bool) *unstructured.Unstructured {
	spec := map[string]any{"image": "docker.io/library/nginx:1.27"}
	if withField {
		spec[newField] = true
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "tagger.dev/v1alpha1", "kind": "Tag",
		"metadata": map[string]any{"name": name}, "spec": spec}}
}

// createStrict creates a Tag refusing unknown fields (kubectl's default
// --validate=strict); dryRun writes nothing.
func (e *upgradeEnv) createStrict(ctx context.Context, u *unstructured.Unstructured, dryRun bool) error {
	opts := metav1.CreateOptions{FieldValidation: "Strict"}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	_, err := e.tags.Create(ctx, u, opts)
	return err
}

// hasField reads the Tag back and reports whether spec.<newField> was kept.
func (e *upgradeEnv) hasField(t *testing.T, name string) bool {
	t.Helper()
	u, err := e.tags.Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	v, ok, _ := unstructured.NestedBool(u.Object, "spec", newField)
	return ok && v
}

// waitServed waits until the apiserver serves Tags with (or without) the
// field: CRD changes reach its handlers asynchronously.
func (e *upgradeEnv) waitServed(t *testing.T, withField bool) {
	t.Helper()
	rig.WaitFor(t, time.Minute, fmt.Sprintf("Tags served, spec.%s known: %v", newField, withField), func() (bool, string) {
		err := e.createStrict(t.Context(), tag("probe", true), true)
		if withField {
			return err == nil, fmt.Sprint(err)
		}
		return unknownField(err), fmt.Sprint(err)
	})
}

func unknownField(err error) bool {
	return err != nil && strings.Contains(err.Error(), `unknown field "spec.`+newField+`"`)
}

// copyChart copies the chart under test to a temp dir for editing.
func copyChart(t *testing.T) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "tagger")
	if err := os.CopyFS(dst, os.DirFS(filepath.Join(repoRoot(t), chartDir))); err != nil {
		t.Fatal(err)
	}
	return dst
}

// olderChart is the chart as a previous release that lacked spec.<newField>
// shipped it: the field's schema stripped from every CRD version (with any
// CEL rule naming it). legacy also moves the CRD back into crds/, the layout
// of releases before templated CRDs.
func olderChart(t *testing.T, legacy bool) string {
	t.Helper()
	dir := copyChart(t)
	src := filepath.Join(dir, crdFiles, "tagger.dev_tags.yaml")
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.UnmarshalStrict(data, &crd); err != nil {
		t.Fatal(err)
	}
	for _, v := range crd.Spec.Versions {
		spec := v.Schema.OpenAPIV3Schema.Properties["spec"]
		if _, ok := spec.Properties[newField]; !ok {
			t.Fatalf("CRD version %s has no spec.%s to strip", v.Name, newField)
		}
		delete(spec.Properties, newField)
		spec.XValidations = slices.DeleteFunc(spec.XValidations, func(r apiextensionsv1.ValidationRule) bool {
			return strings.Contains(r.Rule, newField)
		})
		v.Schema.OpenAPIV3Schema.Properties["spec"] = spec
	}
	if data, err = yaml.Marshal(&crd); err != nil {
		t.Fatal(err)
	}
	dst := src
	if legacy {
		if err := os.Mkdir(filepath.Join(dir, "crds"), 0o755); err != nil {
			t.Fatal(err)
		}
		dst = filepath.Join(dir, "crds", "tagger.dev_tags.yaml")
		for _, f := range []string{src, filepath.Join(dir, "templates", "crds.yaml")} {
			if err := os.Remove(f); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := os.WriteFile(dst, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// checkOldSchema: the older CRD refuses the field under strict validation
// and prunes it otherwise; returns the name of the pruned Tag.
func (e *upgradeEnv) checkOldSchema(t *testing.T, name string) {
	t.Helper()
	e.waitServed(t, false)
	if err := e.createStrict(t.Context(), tag(name, true), false); !unknownField(err) {
		t.Fatalf("strict create of a Tag with spec.%s under the older CRD: %v, want unknown field", newField, err)
	}
	if _, err := e.tags.Create(t.Context(), tag(name, true), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if e.hasField(t, name) {
		t.Fatalf("older CRD kept spec.%s; the test's older chart is not older", newField)
	}
}

// checkNewSchema: after the upgrade the field is accepted and kept, on a
// new Tag and on the Tag the older CRD pruned.
func (e *upgradeEnv) checkNewSchema(t *testing.T, pruned, created string) {
	t.Helper()
	e.waitServed(t, true)
	if err := e.createStrict(t.Context(), tag(created, true), false); err != nil {
		t.Fatalf("strict create with spec.%s after the upgrade: %v", newField, err)
	}
	patch := fmt.Sprintf(`{"spec":{%q:true}}`, newField)
	if _, err := e.tags.Patch(t.Context(), pruned, types.MergePatchType, []byte(patch), metav1.PatchOptions{FieldValidation: "Strict"}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{pruned, created} {
		if !e.hasField(t, n) {
			t.Errorf("Tag %s lost spec.%s after the upgrade", n, newField)
		}
	}
}

// TestCRDUpgrade: helm install refuses values the schema refuses; `helm
// upgrade` carries a CRD schema change to a real apiserver, helm uninstall keeps the CRD and the Tags, and a reinstall
// adopts the kept CRD.
func TestCRDUpgrade(t *testing.T) {
	e := newUpgradeEnv(t)
	// values.schema.json: helm install refuses a typo'd or wrong-typed
	// value before it creates anything.
	for _, tt := range schemaRefusals {
		vf := writeValues(t, tt.values)
		if _, err := e.helm.Run(t.Context(), append(installArgs("install", chartDir), "--values", vf)...); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("helm install with %s:\n%s\nanswered %v, want %q", tt.name, tt.values, err, tt.want)
		}
	}
	if _, err := e.crd(t); !apierrors.IsNotFound(err) {
		t.Fatalf("refused installs created the CRD: %v", err)
	}
	e.run(t, installArgs("install", olderChart(t, false))...)
	e.checkOldSchema(t, "old")

	e.run(t, installArgs("upgrade", chartDir)...)
	e.checkNewSchema(t, "old", "new")
	crd, err := e.crd(t)
	if err != nil {
		t.Fatal(err)
	}
	if crd.Annotations["helm.sh/resource-policy"] != "keep" {
		t.Errorf("CRD annotations %v: no helm.sh/resource-policy: keep", crd.Annotations)
	}

	e.run(t, "uninstall", releaseName, "--namespace", namespace)
	if _, err := e.crd(t); err != nil {
		t.Fatalf("CRD after helm uninstall with crds.keep: %v", err)
	}
	for _, n := range []string{"old", "new"} {
		if !e.hasField(t, n) {
			t.Errorf("Tag %s changed by helm uninstall", n)
		}
	}
	// The kept CRD still names the release: installing it again adopts it.
	e.run(t, installArgs("install", chartDir)...)
	e.waitServed(t, true)
}

// TestCRDAdoption: a release installed by a chart with the CRD in crds/
// (Helm never labels those) upgrades to the templated CRD once the CRD
// carries Helm's ownership metadata, as docs/upgrade.md tells.
func TestCRDAdoption(t *testing.T) {
	e := newUpgradeEnv(t)
	e.run(t, installArgs("install", olderChart(t, true))...)
	e.checkOldSchema(t, "old")

	out, err := e.helm.Run(t.Context(), installArgs("upgrade", chartDir)...)
	if err == nil || !strings.Contains(err.Error(), "invalid ownership metadata") {
		t.Fatalf("upgrade over an unowned CRD: %v\n%s; want helm's invalid ownership metadata", err, out)
	}
	t.Logf("upgrade over an unowned CRD refused as docs/upgrade.md shows: %v", err)

	// kubectl label crd tags.tagger.dev app.kubernetes.io/managed-by=Helm
	// kubectl annotate crd tags.tagger.dev meta.helm.sh/release-name=tagger meta.helm.sh/release-namespace=tagger-system
	patch := fmt.Sprintf(`{"metadata":{"labels":{"app.kubernetes.io/managed-by":"Helm"},`+
		`"annotations":{"meta.helm.sh/release-name":%q,"meta.helm.sh/release-namespace":%q}}}`, releaseName, namespace)
	crd, err := e.crd(t)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.crds.Patch(t.Context(), crd, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
		t.Fatal(err)
	}
	e.run(t, installArgs("upgrade", chartDir)...)
	e.checkNewSchema(t, "old", "new")
	if crd, err = e.crd(t); err != nil {
		t.Fatal(err)
	}
	if crd.Annotations["helm.sh/resource-policy"] != "keep" || crd.Labels["app.kubernetes.io/instance"] != releaseName {
		t.Errorf("adopted CRD metadata %v %v: not the chart's", crd.Labels, crd.Annotations)
	}
}

// TestRenderCRDs: crds.enabled and crds.keep.
func TestRenderCRDs(t *testing.T) {
	crd := get[*apiextensionsv1.CustomResourceDefinition](t, render(t, ""), "CustomResourceDefinition", crdName)
	if crd.Annotations["helm.sh/resource-policy"] != "keep" || crd.Annotations["controller-gen.kubebuilder.io/version"] == "" {
		t.Errorf("default CRD annotations %v: want controller-gen's and helm.sh/resource-policy: keep", crd.Annotations)
	}
	crd = get[*apiextensionsv1.CustomResourceDefinition](t, render(t, "crds:\n  keep: false\n"), "CustomResourceDefinition", crdName)
	if _, ok := crd.Annotations["helm.sh/resource-policy"]; ok {
		t.Errorf("crds.keep=false: CRD annotations %v still keep it", crd.Annotations)
	}
	if _, ok := render(t, "crds:\n  enabled: false\n").find("CustomResourceDefinition", crdName); ok {
		t.Error("crds.enabled=false still renders the CRD")
	}
}

// TestRenderStartupTaintNeedsVAP: a cluster whose discovery (simulated with
// --api-versions: kinds listed, ValidatingAdmissionPolicy v1 not among them,
// as before Kubernetes 1.30) gets the startup gate refused by name; with the
// kind, or with the gate off, the chart renders.
func TestRenderStartupTaintNeedsVAP(t *testing.T) {
	old := []string{"--api-versions", "v1/Pod"}
	if _, err := runHelm(t, renderArgs(old...)...); err == nil || !strings.Contains(err.Error(), "nodeAgent.startupTaint needs Kubernetes 1.30+") {
		t.Errorf("cluster without ValidatingAdmissionPolicy v1: %v, want the startup gate's refusal", err)
	}
	for name, extra := range map[string][]string{
		"gate off": append(slices.Clone(old), "--set", "nodeAgent.startupTaint.enabled=false"),
		"1.30+":    append(slices.Clone(old), "--api-versions", "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy"),
	} {
		if _, err := runHelm(t, renderArgs(extra...)...); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
