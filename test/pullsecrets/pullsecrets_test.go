// Package pullsecrets runs the controller as the chart deploys it by
// default, pull Secrets confined to the release namespace, against a real
// apiserver: with exactly the chart's rendered RBAC (the controller's
// ServiceAccount impersonated) and a real registry that needs credentials.
// Its own package: controller-runtime allows one controller of a name per
// process, and test/integration runs the unconfined one.
package pullsecrets

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/internal/rig/inproc"
	"github.com/tagger-project/tagger/pkg/controller"
)

const (
	releaseNS = "tagger-system"
	// The controller's ServiceAccount as the chart names it for release "tagger".
	controllerSA = "system:serviceaccount:" + releaseNS + ":tagger-controller"
)

// TestPullSecretsConfined: a Tag's pull Secret in the release namespace is
// used; one elsewhere is refused unread (Ready=False, PullSecretNotAllowed,
// naming the allowed namespace) though it exists and holds good
// credentials; Tags without a Secret are untouched; and the chart's RBAC
// lets the controller get Secrets in the release namespace only, and never
// list them.
func TestPullSecretsConfined(t *testing.T) {
	rig.RequireBins(t, "kube-apiserver", "etcd", "registry")
	k := rig.NewKube(t)
	admin := k.Client
	ctx := context.Background()
	for _, ns := range []string{releaseNS, "team-a"} {
		if err := admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatalf("create namespace %s: %v", ns, err)
		}
	}
	applyChartRBAC(t, admin)

	sa := rest.CopyConfig(k.Config)
	sa.Impersonate = rest.ImpersonationConfig{UserName: controllerSA,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + releaseNS, "system:authenticated"}}
	o := inproc.ControllerOptions()
	o.PullSecretNamespace = releaseNS // as the chart's default values pass it
	k.Go("controller", func(ctx context.Context) error { return controller.Run(ctx, sa, o, k.Log) })

	up := rig.NewRegistry(t, rig.RegistryOptions{Auth: rig.AuthBasic, Users: map[string]string{"robot": "s3cret"}})
	v1 := up.PushImage(t, "private/app", "v1", rig.ImageOptions{})
	up.PushImage(t, "private/app", "v2", rig.ImageOptions{})
	pub := rig.NewRegistry(t, rig.RegistryOptions{})
	pubImg := pub.PushImage(t, "public/app", "v1", rig.ImageOptions{})
	pullSecret(t, admin, releaseNS, "creds", up.Host(), "robot", "s3cret")
	pullSecret(t, admin, "team-a", "creds", up.Host(), "robot", "s3cret")

	allowed := rig.NewTag("allowed", up.Host()+"/private/app:v1")
	allowed.Spec.PullSecretRef = &v1alpha1.SecretReference{Namespace: releaseNS, Name: "creds"}
	rig.CreateTag(t, admin, allowed)
	elsewhere := rig.NewTag("elsewhere", up.Host()+"/private/app:v2")
	elsewhere.Spec.PullSecretRef = &v1alpha1.SecretReference{Namespace: "team-a", Name: "creds"}
	rig.CreateTag(t, admin, elsewhere)
	rig.CreateTag(t, admin, rig.NewTag("public", pub.Host()+"/public/app:v1"))

	rig.WaitTag(t, admin, "allowed", "served with the release namespace's Secret", rig.ServedIs(1, v1.Digest.String()))
	rig.WaitTag(t, admin, "public", "served without a Secret", rig.ServedIs(1, pubImg.Digest.String()))
	got := rig.WaitTag(t, admin, "elsewhere", "Ready=False PullSecretNotAllowed",
		rig.ConditionIs(v1alpha1.ConditionReady, metav1.ConditionFalse, "PullSecretNotAllowed"))
	ready := rig.Condition(got, v1alpha1.ConditionReady)
	if !strings.Contains(ready.Message, `only from namespace "`+releaseNS+`"`) || !strings.Contains(ready.Message, "team-a/creds") {
		t.Errorf("Ready message %q does not name the Secret and the allowed namespace", ready.Message)
	}
	if r := rig.Condition(got, v1alpha1.ConditionResolved); r.Status != metav1.ConditionFalse || r.Reason != "PullSecretNotAllowed" {
		t.Errorf("Resolved = %+v, want False PullSecretNotAllowed", r)
	}
	if got.Status.ServedGeneration != 0 || len(got.Status.Generations) != 0 {
		t.Errorf("the refused Tag recorded generations %+v", got.Status.Generations)
	}

	checkSecretAccess(t, sa)
}

// checkSecretAccess: as the controller's ServiceAccount, with the chart's
// RBAC, a Secret can be read by name in the release namespace only, and
// Secrets can be listed nowhere.
func checkSecretAccess(t *testing.T, sa *rest.Config) {
	t.Helper()
	c, err := client.New(sa, client.Options{})
	if err != nil {
		t.Fatalf("client as %s: %v", controllerSA, err)
	}
	ctx := context.Background()
	var sec corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: releaseNS, Name: "creds"}, &sec); err != nil {
		t.Errorf("get Secret %s/creds as the controller: %v", releaseNS, err)
	}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "team-a", Name: "creds"}, &sec); !apierrors.IsForbidden(err) {
		t.Errorf("get Secret team-a/creds as the controller: %v, want Forbidden", err)
	}
	for _, ns := range []string{releaseNS, "team-a", ""} {
		var list corev1.SecretList
		if err := c.List(ctx, &list, client.InNamespace(ns)); !apierrors.IsForbidden(err) {
			t.Errorf("list Secrets in %q as the controller: %v, want Forbidden", ns, err)
		}
	}
}

// applyChartRBAC creates the controller's ServiceAccount and the chart's
// controller-rbac.yaml rendered with default values, as `helm install
// tagger -n tagger-system` would.
func applyChartRBAC(t *testing.T, c client.Client) {
	t.Helper()
	ctx := context.Background()
	home := t.TempDir()
	h := rig.HelmRunner{Dir: rig.RepoRoot(), Home: home, Kubeconfig: filepath.Join(home, "no-kubeconfig")}
	out, err := h.Run(ctx, "template", "tagger", "deploy/chart/tagger", "--namespace", releaseNS,
		"--show-only", "templates/controller-serviceaccount.yaml", "--show-only", "templates/controller-rbac.yaml")
	if err != nil {
		t.Fatalf("render the chart's controller RBAC: %v", err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader([]byte(out)), 4096)
	n := 0
	for {
		var raw runtime.RawExtension
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decode rendered RBAC: %v", err)
		}
		if len(bytes.TrimSpace(raw.Raw)) == 0 || string(bytes.TrimSpace(raw.Raw)) == "null" {
			continue
		}
		obj, _, err := clientgoscheme.Codecs.UniversalDeserializer().Decode(raw.Raw, nil, nil)
		if err != nil {
			t.Fatalf("decode rendered object: %v\n%s", err, raw.Raw)
		}
		co, ok := obj.(client.Object)
		if !ok {
			t.Fatalf("rendered %T is not an object", obj)
		}
		if err := c.Create(ctx, co); err != nil {
			t.Fatalf("create %T %s: %v", obj, co.GetName(), err)
		}
		n++
	}
	// ServiceAccount, ClusterRole+Binding, leader-election and pull-secrets Role+Binding.
	if n != 7 {
		t.Fatalf("the chart's controller RBAC rendered %d objects, want 7:\n%s", n, out)
	}
}

// pullSecret creates a dockerconfigjson Secret for host.
func pullSecret(t *testing.T, c client.Client, ns, name, host, user, pass string) {
	t.Helper()
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: []byte(fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host, auth))},
	}
	if err := c.Create(context.Background(), sec); err != nil {
		t.Fatalf("create Secret %s/%s: %v", ns, name, err)
	}
}
