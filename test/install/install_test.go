// Package install installs the Helm chart with the real helm into a real
// kube-apiserver, then runs the shipped controller and node-agent binaries
// with the arguments the chart rendered into the cluster and the tokens of
// the ServiceAccounts the chart created. It proves that what the chart grants
// is enough for the whole job (resolve with a pull Secret, cache, webhook,
// restart workloads, Events, leader election, the cleanup finalizer), with no
// "forbidden" anywhere, and that `helm uninstall` removes the release.
//
// What a pod would supply differently is replaced, and only that: listen
// addresses move to loopback ports, node paths to temp dirs, the in-cluster
// API address to a kubeconfig carrying the ServiceAccount's own token, and
// the bundled registry's Service URL to a local distribution registry that
// runs the chart's token auth against the controller's issuer, the projected
// registry tokens to files of the same audience (there
// is no kube-proxy or cluster DNS here; the kubelet-level proof of the node
// agent is test/cluster).
package install

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/pkg/controller/restart"
	"github.com/tagger-project/tagger/pkg/pins"
)

const (
	release     = "tagger"
	namespace   = "tagger-system"
	webhookName = "tagger-webhooks"
	waitTimeout = time.Minute
)

func TestHelmInstallRunsWithChartRBAC(t *testing.T) {
	rig.RequireBins(t, "kube-apiserver", "etcd", "registry")
	ctx := context.Background()
	kc := rig.NewKube(t)
	c := kc.Client
	cs, err := kubernetes.NewForConfig(kc.Config)
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	adminKubeconfig := filepath.Join(tmp, "admin.kubeconfig")
	if err := os.WriteFile(adminKubeconfig, kc.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	bins := rig.Commands(t, rig.Race)

	// helm install, as an operator would, with webhooks on. The chart
	// installs the CRD (a template), so the rig's goes first.
	deleteRigCRD(t, kc)
	helm := rig.HelmRunner{Dir: rig.RepoRoot(), Home: filepath.Join(tmp, "helm"), Kubeconfig: adminKubeconfig}
	if out, err := helm.Run(ctx, "install", release, "deploy/chart/tagger", "--namespace", namespace, "--create-namespace",
		"--set", "webhooks.enabled=true", "--set", "webhooks.secretName="+webhookName); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	// Helm does not wait for a templated CRD to be served.
	rig.WaitFor(t, waitTimeout, "Tags served through the chart's CRD", func() (bool, string) {
		err := c.List(ctx, &v1alpha1.TagList{})
		return err == nil, fmt.Sprint(err)
	})
	status, err := helm.Run(ctx, "status", release, "--namespace", namespace, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Info struct{ Status string } `json:"info"`
	}
	if err := json.Unmarshal([]byte(status), &st); err != nil || st.Info.Status != "deployed" {
		t.Fatalf("helm status: %q (%v)\n%s", st.Info.Status, err, status)
	}

	// The containers' arguments as the chart rendered them into the cluster.
	var dep appsv1.Deployment
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "tagger-controller"}, &dep); err != nil {
		t.Fatalf("the chart's controller Deployment: %v", err)
	}
	var ds appsv1.DaemonSet
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "tagger-node-agent"}, &ds); err != nil {
		t.Fatalf("the chart's node agent DaemonSet: %v", err)
	}

	// The upstream is private: only the pull Secret's credentials resolve it.
	up := rig.NewRegistry(t, rig.RegistryOptions{Auth: rig.AuthToken, Users: map[string]string{"robot": "s3cret"}})
	// The bundled registry as the chart configures it: token auth, trusting
	// the chart-generated signing key, the controller as the issuer.
	reg := bundledAuth(t, ctx, c, cs, tmp)
	bundled := rig.NewRegistry(t, rig.RegistryOptions{Auth: rig.AuthToken, External: &rig.ExternalToken{
		Realm: "http://" + reg.issuerAddr + "/token", Service: "tagger-registry", Issuer: "tagger-controller", RootCerts: reg.trusted,
	}})
	image := up.Host() + "/team/app:v1"
	img1 := up.PushImage(t, "team/app", "v1", rig.ImageOptions{Layers: 2})

	webhookToken := "generic-token-0123456789"
	mustCreate(t, c,
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: webhookName},
			Data: map[string][]byte{"generic": []byte(webhookToken)}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "apps"}},
		// Pull Secrets live in the release namespace (pullSecrets.scope=namespace,
		// the default); the one in apps is refused unread.
		pullSecret(namespace, "regcred", up.Host(), "robot", "s3cret"),
		pullSecret("apps", "regcred", up.Host(), "robot", "s3cret"),
	)
	workloads := []client.Object{
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "web"},
			Spec: appsv1.DeploymentSpec{Selector: selector("web"), Template: podTemplate("web", image)}},
		&appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "db"},
			Spec: appsv1.StatefulSetSpec{Selector: selector("db"), Template: podTemplate("db", image)}},
		&appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "agent"},
			Spec: appsv1.DaemonSetSpec{Selector: selector("agent"), Template: podTemplate("agent", image)}},
	}
	other := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "other"},
		Spec: appsv1.DeploymentSpec{Selector: selector("other"), Template: podTemplate("other", up.Host()+"/team/other:v1")}}
	mustCreate(t, c, append(workloads, other)...)

	// The controller, as the chart's ServiceAccount, with the chart's args.
	var webhookAddr string
	ctrlKubeconfig := saKubeconfig(t, cs, kc, tmp, dep.Spec.Template.Spec.ServiceAccountName)
	ctrl := startListening(t, "controller", bins, containerArgs(t, dep.Spec.Template.Spec, "controller"), func() []string {
		webhookAddr = rig.FreeAddr(t)
		return []string{"--kubeconfig=" + ctrlKubeconfig,
			"--metrics-addr=" + rig.FreeAddr(t), "--health-addr=" + rig.FreeAddr(t), "--webhook-addr=" + webhookAddr,
			"--registry-url=" + bundled.URL(), "--plain-http-registries=127.0.0.1:*",
			"--registry-token-file=" + reg.controllerToken, "--registry-auth-key-file=" + reg.keyFile,
			"--registry-auth-addr=" + reg.issuerAddr}
	}, "--metrics-addr", "--health-addr", "--webhook-addr", "--registry-auth-addr")

	// The node agent, as its ServiceAccount, with the DaemonSet's args.
	hostsDir := filepath.Join(tmp, "certs.d")
	containerdConfig := filepath.Join(tmp, "config.toml")
	if err := os.WriteFile(containerdConfig, fmt.Appendf(nil,
		"version = 3\n[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = %q\n", hostsDir), 0o644); err != nil {
		t.Fatal(err)
	}
	// The node's own configuration for the upstream, which the agent takes
	// over and the uninstall hook restores.
	nodeOwn := seedNodeConfig(t, hostsDir, up.Host())
	var mirrorAddr string
	agentKubeconfig := saKubeconfig(t, cs, kc, tmp, ds.Spec.Template.Spec.ServiceAccountName)
	agent := startListening(t, "node-agent", bins, containerArgs(t, ds.Spec.Template.Spec, "node-agent"), func() []string {
		mirrorAddr = rig.FreeAddr(t)
		return []string{"--kubeconfig=" + agentKubeconfig,
			"--listen=" + mirrorAddr, "--metrics-addr=" + rig.FreeAddr(t), "--health-addr=" + rig.FreeAddr(t),
			"--hosts-dir=" + hostsDir, "--containerd-config=" + containerdConfig, "--cri-endpoint=",
			"--ready-file=" + filepath.Join(tmp, "agent-state", "ready"),
			"--registry-url=" + bundled.URL(), "--plain-http-registries=127.0.0.1:*",
			"--registry-token-file=" + reg.agentToken}
	}, "--listen", "--metrics-addr", "--health-addr")

	tag := &v1alpha1.Tag{ObjectMeta: metav1.ObjectMeta{Name: "app"}, Spec: v1alpha1.TagSpec{
		Image: image, Cache: true,
		PullSecretRef: &v1alpha1.SecretReference{Namespace: namespace, Name: "regcred"},
		Rollout:       &v1alpha1.RolloutSpec{Restart: true},
	}}
	mustCreate(t, c, tag)
	waitServed(t, c, 1, img1.Digest.String(), mirrorAddr, image)

	// A pull Secret outside the release namespace: not Ready, saying where
	// pull Secrets must be, and never read (no "forbidden" in the logs).
	elsewhere := &v1alpha1.Tag{ObjectMeta: metav1.ObjectMeta{Name: "elsewhere"}, Spec: v1alpha1.TagSpec{
		Image:         up.Host() + "/team/elsewhere:v1",
		PullSecretRef: &v1alpha1.SecretReference{Namespace: "apps", Name: "regcred"},
	}}
	mustCreate(t, c, elsewhere)
	refused := rig.WaitTagFor(t, waitTimeout, c, "elsewhere", "PullSecretNotAllowed",
		rig.ConditionIs(v1alpha1.ConditionReady, metav1.ConditionFalse, "PullSecretNotAllowed"))
	if msg := rig.Condition(refused, v1alpha1.ConditionReady).Message; !strings.Contains(msg, fmt.Sprintf("namespace %q", namespace)) {
		t.Errorf("Ready message %q does not name the release namespace", msg)
	}

	// A push and its webhook: generation 2, cached, on the node, workloads restarted.
	img2 := up.PushImage(t, "team/app", "v1", rig.ImageOptions{Layers: 2})
	body := fmt.Sprintf(`{"image":%q}`, image)
	resp, err := http.Post("http://"+webhookAddr+"/hooks/generic/"+webhookToken, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST webhook: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("generic webhook: status %d", resp.StatusCode)
	}
	waitServed(t, c, 2, img2.Digest.String(), mirrorAddr, image)
	for _, w := range workloads {
		rig.WaitFor(t, waitTimeout, fmt.Sprintf("%T apps/%s restarted", w, w.GetName()), func() (bool, string) {
			if err := c.Get(ctx, client.ObjectKeyFromObject(w), w); err != nil {
				return false, err.Error()
			}
			a := templateAnnotations(w)
			return a[restart.RestartedAtAnnotation] != "", fmt.Sprint(a)
		})
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(other), other); err != nil {
		t.Fatal(err)
	}
	if a := other.Spec.Template.Annotations; a[restart.RestartedAtAnnotation] != "" {
		t.Fatalf("a Deployment of another image was restarted: %v", a)
	}

	// Events written with the controller's own credentials, on the Tag and a workload.
	rig.WaitFor(t, waitTimeout, "Events on the Tag and on apps/web", func() (bool, string) {
		var evs eventsv1.EventList
		if err := c.List(ctx, &evs); err != nil {
			return false, err.Error()
		}
		seen := map[string]bool{}
		for _, e := range evs.Items {
			seen[e.Regarding.Kind+"/"+e.Regarding.Name+" "+e.Reason] = true
		}
		return seen["Tag/app NewGeneration"] && seen["Tag/app Cached"] && seen["Tag/app "+restart.ReasonRolloutRestarted] && seen["Deployment/web "+restart.ReasonRestartedByTagger], fmt.Sprint(seen)
	})
	// Leader election in the release namespace (the chart enables it).
	var leases coordinationv1.LeaseList
	if err := c.List(ctx, &leases, client.InNamespace(namespace)); err != nil || len(leases.Items) == 0 {
		t.Fatalf("no leader-election Lease in %s: %v", namespace, err)
	}

	// Deleting the Tag runs the cache-cleanup finalizer with the chart's RBAC.
	if err := c.Delete(ctx, tag); err != nil {
		t.Fatal(err)
	}
	ref, _ := pins.ParseReference(image)
	rig.WaitFor(t, waitTimeout, "Tag deleted after its cache cleanup", func() (bool, string) {
		err := c.Get(ctx, client.ObjectKeyFromObject(tag), &v1alpha1.Tag{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
	req, _ := http.NewRequest(http.MethodHead, bundled.URL()+"/v2/"+ref.CacheRepository()+"/manifests/"+img2.Digest.String(), nil)
	req.Header.Set("Accept", img2.MediaType)
	req.Header.Set("Authorization", "Bearer "+reg.pullToken(t, ref.CacheRepository()))
	if r, err := http.DefaultClient.Do(req); err != nil || r.StatusCode != http.StatusNotFound {
		t.Fatalf("cached manifest after the Tag's deletion: %v %v, want 404", r, err)
	}

	for _, p := range []*proc{ctrl, agent} {
		if out := p.out.String(); strings.Contains(strings.ToLower(out), "forbidden") {
			t.Fatalf("%s logged a forbidden request with the chart's RBAC:\n%s", p.name, out)
		}
		select {
		case <-p.Done():
			t.Fatalf("%s exited: %v\n%s", p.name, p.Err(), p.out)
		default:
		}
	}
	ctrl.stop(t)
	agent.stop(t)

	// No --wait: without kube-controller-manager the PVC keeps its
	// pvc-protection finalizer; the workloads themselves go at once. The
	// post-delete hook runs with the test standing in for the controllers
	// and the kubelet (uninstall_test.go).
	uninstall(t, helm, c, cs, kc, bins, tmp, hostsDir)
	if got := rig.SnapshotDir(t, hostsDir); !maps.Equal(got, nodeOwn) {
		t.Errorf("after helm uninstall %s holds\n  %v\nwant the node's own files back\n  %v", hostsDir, got, nodeOwn)
	}
	for _, o := range []client.Object{&dep, &ds} {
		if err := c.Get(ctx, client.ObjectKeyFromObject(o), o); !apierrors.IsNotFound(err) {
			t.Fatalf("%T %s after helm uninstall: %v", o, o.GetName(), err)
		}
	}
}

// containerArgs is the single container's arguments; its command must be
// the binary the Dockerfile installs as /usr/local/bin/<name>.
func containerArgs(t *testing.T, spec corev1.PodSpec, name string) []string {
	t.Helper()
	if len(spec.Containers) != 1 {
		t.Fatalf("want one container, the chart rendered %d", len(spec.Containers))
	}
	ctr := spec.Containers[0]
	if want := []string{"/usr/local/bin/" + name}; !slices.Equal(ctr.Command, want) || len(ctr.Args) == 0 {
		t.Fatalf("container %s: command %q args %q; want command %q with args", ctr.Name, ctr.Command, ctr.Args, want)
	}
	return ctr.Args
}

// saKubeconfig writes a kubeconfig carrying a token of the ServiceAccount
// namespace/sa, what the pod's projected token would be.
func saKubeconfig(t *testing.T, cs kubernetes.Interface, kc *rig.Kube, dir, sa string) string {
	t.Helper()
	if sa == "" {
		t.Fatal("the chart rendered no serviceAccountName")
	}
	expiry := int64(3600)
	tr, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(context.Background(), sa,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for ServiceAccount %s/%s: %v", namespace, sa, err)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["c"] = &clientcmdapi.Cluster{Server: kc.Config.Host, CertificateAuthorityData: kc.Config.CAData}
	cfg.AuthInfos["sa"] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	cfg.Contexts["c"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "sa"}
	cfg.CurrentContext = "c"
	p := filepath.Join(dir, sa+".kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, p); err != nil {
		t.Fatal(err)
	}
	return p
}

type proc struct {
	*rig.Process
	name string
	out  *rig.TailBuffer
}

// start runs bin/name with the chart's args followed by overrides (the
// last occurrence of a flag wins); it is killed when the test ends.
func start(t *testing.T, name, bin string, chartArgs []string, overrides ...string) *proc {
	t.Helper()
	out := rig.NewTailBuffer(1 << 20)
	cmd := exec.Command(filepath.Join(bin, name), append(append([]string{}, chartArgs...), overrides...)...)
	cmd.Env = append(os.Environ(), "NODE_NAME=node-1")
	p, err := rig.StartProcess(cmd, out)
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		p.Kill(10 * time.Second)
		if t.Failed() {
			t.Logf("%s output (tail):\n%s", name, out)
		}
	})
	return &proc{Process: p, name: name, out: out}
}

// startListening starts a binary with the overrides args() picks, and waits
// until each address given by one of the listenFlags answers HTTP. A port
// rig.FreeAddr found free can be taken before the process binds it (the
// suites beside this one open client connections from the same ephemeral
// range): when the process exits saying so, it is started again with fresh
// addresses, at most three times.
func startListening(t *testing.T, name, bin string, chartArgs []string, args func() []string, listenFlags ...string) *proc {
	t.Helper()
	for attempt := 1; ; attempt++ {
		overrides := args()
		p := start(t, name, bin, chartArgs, overrides...)
		var addrs []string
		for _, a := range overrides {
			for _, f := range listenFlags {
				if v, ok := strings.CutPrefix(a, f+"="); ok {
					addrs = append(addrs, v)
				}
			}
		}
		if p.listening(t, addrs) {
			return p
		}
		if attempt == 3 || !strings.Contains(p.out.String(), "address already in use") {
			t.Fatalf("%s exited before it listened on %v: %v\n%s", name, addrs, p.Err(), p.out)
		}
		t.Logf("%s: a picked port was taken before it bound it; starting again with fresh ports", name)
	}
}

// listening waits until every addr answers HTTP (any status), or reports
// false when the process exits first.
func (p *proc) listening(t *testing.T, addrs []string) bool {
	t.Helper()
	hc := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for pending := addrs; ; {
		var still []string
		for _, a := range pending {
			if resp, err := hc.Get("http://" + a + "/"); err == nil {
				resp.Body.Close()
				continue
			}
			still = append(still, a)
		}
		if pending = still; len(pending) == 0 {
			return true
		}
		select {
		case <-p.Done():
			return false
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v not listening after %v\n%s", p.name, pending, waitTimeout, p.out)
		}
	}
}

// stop sends SIGTERM and expects a clean exit.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	if !p.Terminate(30 * time.Second) {
		t.Fatalf("%s did not exit within 30s of SIGTERM", p.name)
	}
	if err := p.Err(); err != nil {
		t.Fatalf("%s exited with %v after SIGTERM:\n%s", p.name, err, p.out)
	}
}

// waitServed waits until the Tag serves generation gen at digest d, cached,
// and the node agent's mirror answers the tag with d.
func waitServed(t *testing.T, c client.Client, gen int64, d, mirrorAddr, image string) {
	t.Helper()
	ref, err := pins.ParseReference(image)
	if err != nil {
		t.Fatal(err)
	}
	u := fmt.Sprintf("http://%s/v2/%s/manifests/%s?ns=%s", mirrorAddr, ref.Repository, ref.Tag, ref.Registry)
	hc := &http.Client{Timeout: 2 * time.Second}
	rig.WaitFor(t, waitTimeout, fmt.Sprintf("generation %d (%s) served, cached and answered by the node agent", gen, d), func() (bool, string) {
		var tag v1alpha1.Tag
		if err := c.Get(context.Background(), client.ObjectKey{Name: "app"}, &tag); err != nil {
			return false, err.Error()
		}
		req, _ := http.NewRequest(http.MethodHead, u, nil)
		req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json")
		mirror := ""
		if resp, err := hc.Do(req); err != nil {
			mirror = err.Error()
		} else {
			resp.Body.Close()
			mirror = fmt.Sprintf("%d %s", resp.StatusCode, resp.Header.Get("Docker-Content-Digest"))
		}
		st, _ := json.Marshal(tag.Status)
		return tag.Status.ServedGeneration == gen && tag.Status.ServedDigest == d && tag.Status.CachedServed &&
				mirror == "200 "+d,
			fmt.Sprintf("mirror %q; status %s", mirror, st)
	})
}

// deleteRigCRD deletes the Tag CRD rig.NewKube installed from deploy/crds
// (without Helm's ownership metadata, helm install would refuse to take it
// over; docs/upgrade.md) and waits until it is gone.
func deleteRigCRD(t *testing.T, kc *rig.Kube) {
	t.Helper()
	dc, err := dynamic.NewForConfig(kc.Config)
	if err != nil {
		t.Fatal(err)
	}
	crds := dc.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	if err := crds.Delete(context.Background(), "tags.tagger.dev", metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete the rig's Tag CRD: %v", err)
	}
	rig.WaitFor(t, waitTimeout, "the rig's Tag CRD deleted", func() (bool, string) {
		_, err := crds.Get(context.Background(), "tags.tagger.dev", metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
}

func mustCreate(t *testing.T, c client.Client, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := c.Create(context.Background(), o); err != nil {
			t.Fatalf("create %T %s: %v", o, o.GetName(), err)
		}
	}
}

func pullSecret(ns, name, host, user, pass string) *corev1.Secret {
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	var cfg bytes.Buffer
	fmt.Fprintf(&cfg, `{"auths":{%q:{"auth":%q}}}`, host, auth)
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: cfg.Bytes()},
	}
}

func selector(app string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}
}

func podTemplate(app, image string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "main", Image: image}}},
	}
}

func templateAnnotations(o client.Object) map[string]string {
	switch w := o.(type) {
	case *appsv1.Deployment:
		return w.Spec.Template.Annotations
	case *appsv1.StatefulSet:
		return w.Spec.Template.Annotations
	case *appsv1.DaemonSet:
		return w.Spec.Template.Annotations
	}
	return nil
}
