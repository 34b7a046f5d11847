package plugin

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/internal/rig"
)

// grantTags creates a ClusterRole with verbs on tags (Tags are
// cluster-scoped, so a namespaced Role cannot grant them) bound to subjects,
// removed when the test ends.
func grantTags(t *testing.T, c client.Client, name string, verbs []string, subjects ...rbacv1.Subject) {
	t.Helper()
	ctx := context.Background()
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{v1alpha1.GroupVersion.Group}, Resources: []string{"tags"}, Verbs: verbs}},
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
		Subjects:   subjects,
	}
	for _, obj := range []client.Object{role, binding} {
		if err := c.Create(ctx, obj); err != nil {
			t.Fatalf("create %T %s: %v", obj, name, err)
		}
		t.Cleanup(func() { _ = c.Delete(context.Background(), obj) })
	}
}

// TestImpersonation: --as and --as-group act as another identity, and the
// apiserver's RBAC decides, as with kubectl.
func TestImpersonation(t *testing.T) {
	c := startCluster(t)
	kc := " --kubeconfig " + cluster.kubeconfig
	grantTags(t, c, "tagger-test-tag-reader", []string{"get", "list"},
		rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "tag-reader"},
		rbacv1.Subject{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: "tag-readers"})
	deleteTagOnCleanup(t, c, "imp")
	ok(t, "create imp --image registry.invalid/imp/app:v1"+kc)

	// The authorizer sees new bindings through an informer: wait for it.
	rig.WaitFor(t, waitTimeout, "the binding of tag-reader to take effect", func() (bool, string) {
		r := kubectlTag(t, "get imp -o name --as tag-reader"+kc)
		return r.code == 0 && r.stdout == "tag.tagger.dev/imp\n", r.String()
	})
	ok(t, "list --as tag-reader"+kc)
	fails(t, "create imp2 --image registry.invalid/imp/app:v2 --as tag-reader"+kc,
		`User "tag-reader" cannot create resource "tags" in API group "tagger.dev" at the cluster scope`)
	fails(t, "unpin imp --as tag-reader"+kc, `User "tag-reader" cannot patch resource "tags"`)
	fails(t, "list --as stranger"+kc, `User "stranger" cannot list resource "tags"`)
	// The group grants what the user alone does not have.
	if out := ok(t, "get imp -o name --as stranger --as-group tag-readers"+kc); out != "tag.tagger.dev/imp\n" {
		t.Fatalf("--as-group: %q", out)
	}
	var tag v1alpha1.Tag
	if err := c.Get(context.Background(), client.ObjectKey{Name: "imp2"}, &tag); err == nil {
		t.Fatal("a forbidden create made Tag imp2")
	}
	if err := c.Get(context.Background(), client.ObjectKey{Name: "imp"}, &tag); err != nil || tag.Spec.Generation != nil {
		t.Fatalf("Tag imp after a forbidden unpin: %v %+v", err, tag.Spec)
	}
}

// TestTokenAndServer: --server, --token and --certificate-authority (or
// --insecure-skip-tls-verify) reach the apiserver with no kubeconfig at all.
func TestTokenAndServer(t *testing.T) {
	c := startCluster(t)
	ctx := context.Background()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "tag-cli", Namespace: metav1.NamespaceDefault}}
	if err := c.Create(ctx, sa); err != nil {
		t.Fatalf("create ServiceAccount: %v", err)
	}
	t.Cleanup(func() { _ = c.Delete(context.Background(), sa) })
	grantTags(t, c, "tagger-test-tag-cli", []string{"get", "list", "create"},
		rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: sa.Name, Namespace: sa.Namespace})
	cs, err := kubernetes.NewForConfig(cluster.config)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := cs.CoreV1().ServiceAccounts(sa.Namespace).CreateToken(ctx, sa.Name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(600))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("request a token for ServiceAccount %s: %v", sa.Name, err)
	}
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(ca, cluster.config.CAData, 0o600); err != nil {
		t.Fatal(err)
	}
	// No kubeconfig: $KUBECONFIG names a file that does not exist.
	t.Setenv("KUBECONFIG", filepath.Join(dir, "absent"))
	server := " --server " + cluster.config.Host
	token := " --token " + tr.Status.Token

	deleteTagOnCleanup(t, c, "tok")
	rig.WaitFor(t, waitTimeout, "the binding of tag-cli to take effect", func() (bool, string) {
		r := kubectlTag(t, "list"+server+token+" --certificate-authority "+ca)
		return r.code == 0, r.String()
	})
	if out := ok(t, "create tok --image registry.invalid/tok/app:v1"+server+token+" --certificate-authority "+ca); out != "tag.tagger.dev/tok created\n" {
		t.Fatalf("create with --token: %q", out)
	}
	var tag v1alpha1.Tag
	if err := c.Get(ctx, client.ObjectKey{Name: "tok"}, &tag); err != nil {
		t.Fatal(err)
	}
	if m := tag.ManagedFields; len(m) == 0 || m[0].Manager != "kubectl-tag" {
		t.Fatalf("Tag tok's field manager: %+v", m)
	}
	if out := ok(t, "get tok -o name --insecure-skip-tls-verify"+server+token); out != "tag.tagger.dev/tok\n" {
		t.Fatalf("--insecure-skip-tls-verify: %q", out)
	}
	fails(t, "list --request-timeout 10s"+server+token, "certificate signed by unknown authority")
	fails(t, "list --token not-a-token --certificate-authority "+ca+server, "error: list Tags: Unauthorized")
	// The ServiceAccount may not patch: its token, not the admin's, was used.
	fails(t, "unpin tok --certificate-authority "+ca+server+token, `cannot patch resource "tags"`)
	if r := fails(t, "list", "error: load kubeconfig: no cluster is configured"); !strings.Contains(r.stderr, "no --server") {
		t.Fatalf("without flags or kubeconfig: %s", r)
	}
}

// TestNamespaceIgnored: -n is accepted and ignored (Tags are
// cluster-scoped), as kubectl get ignores it for cluster-scoped kinds.
func TestNamespaceIgnored(t *testing.T) {
	c := startCluster(t)
	kc := " --kubeconfig " + cluster.kubeconfig
	deleteTagOnCleanup(t, c, "ns")
	ok(t, "create ns --image registry.invalid/ns/app:v1 -n kube-system"+kc)
	if out := ok(t, "get ns -o name --namespace elsewhere"+kc); out != "tag.tagger.dev/ns\n" {
		t.Fatalf("get -n: %q", out)
	}
}
