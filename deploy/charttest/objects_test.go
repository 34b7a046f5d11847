package charttest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

// object is one decoded document of a render.
type object struct {
	source string // the chart file it came from ("# Source:" line)
	obj    runtime.Object
	kind   string
	name   string
	ns     string
}

func (o object) String() string { return fmt.Sprintf("%s %s (%s)", o.kind, o.name, o.source) }

// rendered is a decoded render, with lookups by kind and name.
type rendered struct {
	objects []object
}

// decoder knows client-go's built-in kinds and CustomResourceDefinitions, and
// is strict: an unknown or duplicated field is an error, so a misspelled key
// in a template (readOnlyRootFileSystem) fails here instead of being dropped
// by the apiserver.
var decoder = func() runtime.Decoder {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := apiextensionsv1.AddToScheme(s); err != nil {
		panic(err)
	}
	return serializer.NewCodecFactory(s, serializer.EnableStrict).UniversalDeserializer()
}()

// gatewayGroup is the Gateway API's group (HTTPRoute), decoded unstructured.
const gatewayGroup = "gateway.networking.k8s.io"

var sourceLine = regexp.MustCompile(`(?m)^# Source: (.+)$`)

// decodeAll decodes every document of a multi-document YAML stream into a
// typed object. Unknown kinds, unknown fields and documents without a kind
// are errors.
func decodeAll(data []byte) (*rendered, error) {
	r := &rendered{}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for i := 0; ; i++ {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		source := ""
		if m := sourceLine.FindSubmatch(doc); m != nil {
			source = string(m[1])
		}
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, fmt.Errorf("document %d (%s): %w", i, source, err)
		}
		if s := strings.TrimSpace(string(js)); s == "null" || s == "" {
			continue // only comments or separators
		}
		obj, gvk, err := decoder.Decode(doc, nil, nil)
		if err != nil && runtime.IsNotRegisteredError(err) {
			// Gateway API types are not in client-go: checked field by field.
			u := &unstructured.Unstructured{}
			if uerr := u.UnmarshalJSON(js); uerr == nil && u.GroupVersionKind().Group == gatewayGroup {
				obj, gvk, err = u, ptr(u.GroupVersionKind()), nil
			}
		}
		if err != nil {
			if runtime.IsNotRegisteredError(err) {
				return nil, fmt.Errorf("document %d (%s): unknown kind: %w", i, source, err)
			}
			return nil, fmt.Errorf("document %d (%s): %w", i, source, err)
		}
		acc, ok := obj.(metav1.Object)
		if !ok {
			return nil, fmt.Errorf("document %d (%s): %s has no object metadata", i, source, gvk)
		}
		if acc.GetName() == "" {
			return nil, fmt.Errorf("document %d (%s): %s without a name", i, source, gvk.Kind)
		}
		r.objects = append(r.objects, object{source: source, obj: obj, kind: gvk.Kind, name: acc.GetName(), ns: acc.GetNamespace()})
	}
	return r, nil
}

// kinds lists "Kind/name" of every object, sorted, for messages and
// comparisons.
func (r *rendered) kinds() []string {
	var out []string
	for _, o := range r.objects {
		out = append(out, o.kind+"/"+o.name)
	}
	sort.Strings(out)
	return out
}

func (r *rendered) find(kind, name string) (runtime.Object, bool) {
	for _, o := range r.objects {
		if o.kind == kind && o.name == name {
			return o.obj, true
		}
	}
	return nil, false
}

// get returns the object of that kind and name as T, failing the test when
// it is missing.
func get[T runtime.Object](t testing.TB, r *rendered, kind, name string) T {
	t.Helper()
	obj, ok := r.find(kind, name)
	if !ok {
		t.Fatalf("%s %s not rendered; have %v", kind, name, r.kinds())
	}
	typed, ok := obj.(T)
	if !ok {
		t.Fatalf("%s %s decoded as %T", kind, name, obj)
	}
	return typed
}

func ofKind[T runtime.Object](r *rendered) []T {
	var out []T
	for _, o := range r.objects {
		if typed, ok := o.obj.(T); ok {
			out = append(out, typed)
		}
	}
	return out
}

// clusterScoped are the cluster-scoped kinds a render may hold; everything
// else must name the release namespace, so the plain manifests apply as they
// are.
var clusterScoped = map[string]bool{
	"CustomResourceDefinition": true,
	"ClusterRole":              true,
	"ClusterRoleBinding":       true,
	"Namespace":                true,
	"PriorityClass":            true,

	"ValidatingAdmissionPolicy":        true,
	"ValidatingAdmissionPolicyBinding": true,
}

// permissions flattens RBAC rules into "group/resource" -> sorted verbs, and
// reports anything a least-privilege role must not use: wildcards,
// non-resource URLs, resourceNames (none of ours can know the names).
func permissions(rules []rbacv1.PolicyRule) (map[string][]string, []string) {
	perms := map[string][]string{}
	var problems []string
	for i, rule := range rules {
		if len(rule.NonResourceURLs) > 0 {
			problems = append(problems, fmt.Sprintf("rule %d grants nonResourceURLs %v", i, rule.NonResourceURLs))
		}
		if len(rule.ResourceNames) > 0 {
			problems = append(problems, fmt.Sprintf("rule %d restricts resourceNames %v", i, rule.ResourceNames))
		}
		for _, field := range [][]string{rule.APIGroups, rule.Resources, rule.Verbs} {
			if slices.Contains(field, "*") {
				problems = append(problems, fmt.Sprintf("rule %d uses a wildcard: %+v", i, rule))
				break
			}
		}
		for _, g := range rule.APIGroups {
			for _, res := range rule.Resources {
				key := g + "/" + res
				for _, v := range rule.Verbs {
					if !slices.Contains(perms[key], v) {
						perms[key] = append(perms[key], v)
					}
				}
			}
		}
	}
	for k := range perms {
		sort.Strings(perms[k])
	}
	return perms, problems
}

// container returns the named container of a pod spec.
func container(t testing.TB, spec corev1.PodSpec, name string) corev1.Container {
	t.Helper()
	for _, c := range spec.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %q in pod spec", name)
	return corev1.Container{}
}

// envVar returns the named env var of a container.
func envVar(c corev1.Container, name string) (corev1.EnvVar, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e, true
		}
	}
	return corev1.EnvVar{}, false
}

// hostPathVolume returns the hostPath volume of a pod spec with that path.
func hostPathVolume(spec corev1.PodSpec, path string) (corev1.Volume, bool) {
	for _, v := range spec.Volumes {
		if v.HostPath != nil && v.HostPath.Path == path {
			return v, true
		}
	}
	return corev1.Volume{}, false
}

func mount(c corev1.Container, volume string) (corev1.VolumeMount, bool) {
	for _, m := range c.VolumeMounts {
		if m.Name == volume {
			return m, true
		}
	}
	return corev1.VolumeMount{}, false
}

// podSpecs are the pod templates of every workload in a render, by
// "Kind/name".
func podSpecs(r *rendered) map[string]corev1.PodSpec {
	out := map[string]corev1.PodSpec{}
	for _, o := range r.objects {
		switch w := o.obj.(type) {
		case *appsv1.Deployment:
			out["Deployment/"+w.Name] = w.Spec.Template.Spec
		case *appsv1.DaemonSet:
			out["DaemonSet/"+w.Name] = w.Spec.Template.Spec
		case *batchv1.CronJob:
			out["CronJob/"+w.Name] = w.Spec.JobTemplate.Spec.Template.Spec
		}
	}
	return out
}

// registryConfig parses the distribution config.yml of the registry
// ConfigMap.
func registryConfig(t testing.TB, r *rendered) map[string]any {
	t.Helper()
	cm := get[*corev1.ConfigMap](t, r, "ConfigMap", "tagger-registry")
	raw, ok := cm.Data["config.yml"]
	if !ok {
		t.Fatalf("ConfigMap tagger-registry has no config.yml; keys: %v", cm.Data)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(raw), &cfg); err != nil {
		t.Fatalf("registry config.yml: %v\n%s", err, raw)
	}
	return cfg
}

// lookup walks a parsed YAML tree: lookup(cfg, "storage", "s3", "bucket").
func lookup(tree map[string]any, path ...string) (any, bool) {
	var cur any = tree
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[p]; !ok {
			return nil, false
		}
	}
	return cur, true
}
