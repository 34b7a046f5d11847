package charttest

import (
	"fmt"
	"maps"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tagger-project/tagger/internal/rig"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/tagger-project/tagger/pkg/node/hoststoml"
	"github.com/tagger-project/tagger/pkg/pins"
)

// nodeAgentWant is what a render of the node agent DaemonSet must hold.
type nodeAgentWant struct {
	// args are the container's args, exactly and in order.
	args []string
	// hostPaths are the hostPath volumes, each mounted at its own path:
	// nothing else of the host is mounted.
	hostPaths map[string]hostPathWant
}

type hostPathWant struct {
	typ      corev1.HostPathType
	readOnly bool
}

// The node agent as the chart renders it by default: every flag of
// cmd/node-agent from values.
var defaultNodeAgent = nodeAgentWant{
	args: []string{
		"--listen=127.0.0.1:5050",
		"--metrics-addr=:9091",
		"--health-addr=127.0.0.1:9092",
		"--hosts-dir=/etc/containerd/certs.d",
		"--containerd-config=/etc/containerd/config.toml",
		"--cri-endpoint=unix:///run/containerd/containerd.sock",
		"--registry-url=http://tagger-registry.tagger-system.svc:5000",
		"--registry-token-file=/var/run/secrets/tagger.dev/registry/token",
		"--dial-timeout=200ms",
		"--plain-http-registries=tagger-registry.tagger-system.svc:5000",
		"--converge-workers=2",
		"--ready-file=/run/tagger-node-agent/ready",
		"--shutdown-delay=5s",
		"--log-format=json",
		"--log-level=info",
		"--startup-taint=tagger.dev/agent-not-ready",
	},
	hostPaths: map[string]hostPathWant{
		"/etc/containerd/certs.d":     {corev1.HostPathDirectoryOrCreate, false}, // the agent writes hosts.toml here
		"/etc/containerd/config.toml": {corev1.HostPathFile, true},               // File: never create one at containerd's config path
		"/run/containerd":             {corev1.HostPathDirectory, false},         // the CRI socket's directory, for convergence
	},
}

// The node agent rendered with nodeAgentValues.
var customNodeAgent = nodeAgentWant{
	args: []string{
		"--listen=127.0.0.1:5055",
		"--metrics-addr=0",
		"--health-addr=:19092",
		"--hosts-dir=/var/lib/rancher/k3s/agent/etc/containerd/certs.d",
		"--containerd-config=/var/lib/rancher/k3s/agent/etc/containerd/config.toml",
		"--cri-endpoint=", // containerdSocket "" turns convergence off
		"--registry-url=https://registry.example.com",
		"--registry-token-file=/var/run/secrets/tagger.dev/registry/token",
		"--dial-timeout=1s",
		"--strict-registries=docker.io,*.corp.example",
		"--plain-http-registries=tagger-registry.tagger-system.svc:5000,registry.local:5000",
		"--converge-workers=4",
		"--ready-file=/run/tagger-node-agent/ready",
		"--shutdown-delay=5s",
		"--log-format=text",
		"--log-level=debug",
	},
	hostPaths: map[string]hostPathWant{
		"/var/lib/rancher/k3s/agent/etc/containerd/certs.d":     {corev1.HostPathDirectoryOrCreate, false},
		"/var/lib/rancher/k3s/agent/etc/containerd/config.toml": {corev1.HostPathFile, true},
	},
}

// flagValue is the value of --name=value in args, as the flag package reads
// it (the last one wins); n counts the occurrences.
func flagValue(args []string, name string) (v string, n int) {
	for _, a := range args {
		if val, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			v, n = val, n+1
		}
	}
	return v, n
}

func checkNodeAgent(t *testing.T, r *rendered, want nodeAgentWant) {
	t.Helper()
	ds := get[*appsv1.DaemonSet](t, r, "DaemonSet", "tagger-node-agent")
	get[*corev1.ServiceAccount](t, r, "ServiceAccount", "tagger-node-agent")
	get[*rbacv1.ClusterRole](t, r, "ClusterRole", "tagger-node-agent") // its rules: checkRBAC
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork {
		t.Error("node agent is not on the host network: containerd could not reach its loopback mirror")
	}
	if spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("node agent dnsPolicy %q, want ClusterFirstWithHostNet (to resolve the registry Service)", spec.DNSPolicy)
	}
	if spec.PriorityClassName != "system-node-critical" {
		t.Errorf("node agent priorityClassName %q", spec.PriorityClassName)
	}
	if !slices.ContainsFunc(spec.Tolerations, func(tol corev1.Toleration) bool {
		return tol.Operator == corev1.TolerationOpExists && tol.Key == "" && tol.Effect == ""
	}) {
		t.Errorf("node agent tolerations %+v: want one that tolerates every taint", spec.Tolerations)
	}
	c := container(t, spec, "node-agent")
	if want := []string{"/usr/local/bin/node-agent"}; !slices.Equal(c.Command, want) {
		t.Errorf("node agent command %q, want %q", c.Command, want)
	}
	if !slices.Equal(c.Args, want.args) {
		t.Errorf("node agent args:\n got %q\nwant %q", c.Args, want.args)
	}
	for _, a := range c.Args {
		name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if _, n := flagValue(c.Args, name); n != 1 {
			t.Errorf("node agent flag --%s given %d times", name, n)
		}
	}

	// The bundled registry: its Service is reached over plain HTTP.
	svc := get[*corev1.Service](t, r, "Service", "tagger-registry")
	bundled := fmt.Sprintf("%s.%s.svc:%d", svc.Name, svc.Namespace, svc.Spec.Ports[0].Port)
	plain, _ := flagValue(c.Args, "plain-http-registries")
	if !slices.Contains(strings.Split(plain, ","), bundled) {
		t.Errorf("--plain-http-registries=%s lacks the bundled registry %s", plain, bundled)
	}
	if reg, _ := flagValue(c.Args, "registry-url"); strings.Contains(reg, ".svc") {
		// A registry URL naming a Service names the rendered one and its port.
		u, err := url.Parse(reg)
		if err != nil {
			t.Fatal(err)
		}
		if u.Scheme != "http" || u.Host != bundled {
			t.Errorf("--registry-url %s does not name Service %s over http", u, bundled)
		}
	}

	checkNodeAgentLifecycle(t, ds, c)

	// Host paths: exactly the wanted ones, each mounted at its own path; the
	// flags name them.
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			if _, ok := want.hostPaths[v.HostPath.Path]; !ok {
				t.Errorf("node agent mounts unexpected hostPath %s", v.HostPath.Path)
			}
		}
	}
	for path, hp := range want.hostPaths {
		v, ok := hostPathVolume(spec, path)
		if !ok {
			t.Errorf("node agent has no hostPath volume %s", path)
			continue
		}
		if v.HostPath.Type == nil || *v.HostPath.Type != hp.typ {
			t.Errorf("hostPath %s type %v, want %s", path, v.HostPath.Type, hp.typ)
		}
		m, ok := mount(c, v.Name)
		if !ok || m.MountPath != path || m.ReadOnly != hp.readOnly {
			t.Errorf("node agent mount of %s: %+v, want at the same path, readOnly=%v", path, m, hp.readOnly)
		}
	}
	for flag, typ := range map[string]corev1.HostPathType{
		"hosts-dir":         corev1.HostPathDirectoryOrCreate,
		"containerd-config": corev1.HostPathFile,
	} {
		p, _ := flagValue(c.Args, flag)
		if hp, ok := want.hostPaths[p]; !ok || hp.typ != typ {
			t.Errorf("--%s=%s is not a mounted hostPath of type %s", flag, p, typ)
		}
	}
	switch cri, _ := flagValue(c.Args, "cri-endpoint"); {
	case cri == "":
		for p, hp := range want.hostPaths {
			if hp.typ == corev1.HostPathDirectory {
				t.Errorf("convergence is off (--cri-endpoint=) but the socket directory %s is mounted", p)
			}
		}
	default:
		// The socket's directory is mounted, not the socket: containerd
		// re-creates the socket when it restarts.
		p, ok := strings.CutPrefix(cri, "unix://")
		if hp := want.hostPaths[path.Dir(p)]; !ok || hp.typ != corev1.HostPathDirectory {
			t.Errorf("--cri-endpoint=%s: its directory is not a mounted hostPath Directory", cri)
		}
	}

	// Root (host files are root's), but nothing else.
	sc := c.SecurityContext
	if sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != 0 {
		t.Fatalf("node agent securityContext %+v, want runAsUser 0", sc)
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("node agent is privileged")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("node agent allows privilege escalation")
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
		t.Errorf("node agent capabilities %+v, want drop [ALL]", sc.Capabilities)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("node agent root filesystem is writable")
	}
}

// checkNodeAgentOff: nodeAgent.enabled=false renders nothing of the agent.
func checkNodeAgentOff(t *testing.T, r *rendered) {
	for _, kind := range []string{"DaemonSet", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"} {
		if _, ok := r.find(kind, "tagger-node-agent"); ok {
			t.Errorf("nodeAgent.enabled=false still renders %s tagger-node-agent", kind)
		}
	}
	checkNoStartupTaint(t, r)
}

// TestNodeAgentAcceptsChartArgs runs the node-agent binary with what the
// chart renders: the uninstall hook's `node-agent cleanup --hold` (which
// parses every flag of the agent, validates the patterns and mirror URL, and
// acts only on --hosts-dir), against a temporary hosts dir holding tagger's
// files over a node's own, which it must restore byte for byte, then report
// ready through the hook's own readiness probe command and hold until
// SIGTERM; and, with customized values, the agent itself, which must get
// past flag parsing and logging setup to the kubeconfig, where a missing
// file stops it (test/install runs it with the default values' args).
func TestNodeAgentAcceptsChartArgs(t *testing.T) {
	bin := buildNodeAgent(t)

	// The harness sees a flag the binary lacks.
	out, err := exec.Command(bin, "cleanup", "--hosts-dir="+t.TempDir(), "--no-such-flag").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "flag provided but not defined") {
		t.Fatalf("node-agent cleanup accepted an unknown flag (%v):\n%s", err, out)
	}

	for name, values := range map[string]string{"defaults": "", "customized": nodeAgentValues} {
		t.Run(name, func(t *testing.T) {
			ds := get[*appsv1.DaemonSet](t, renderHooks(t, values), "DaemonSet", hookDaemonSet)
			hc := container(t, ds.Spec.Template.Spec, "cleanup")
			if len(hc.Command) < 2 || hc.Command[0] != "/usr/local/bin/node-agent" || hc.Command[1] != "cleanup" {
				t.Fatalf("cleanup hook runs %q, not `node-agent cleanup`", hc.Command)
			}

			dir, ready := t.TempDir(), filepath.Join(t.TempDir(), "ready")
			args := withFlag(t, withFlag(t, hc.Args, "hosts-dir", dir), "ready-file", ready)
			mine := seedHostsDir(t, dir, args)
			holdCleanup(t, bin, append(slices.Clone(hc.Command[1:]), args...), hc.ReadinessProbe, ready)
			if got := rig.SnapshotDir(t, dir); !maps.Equal(got, mine) {
				t.Errorf("after cleanup %s holds\n  %v\nwant the node's own files back\n  %v", dir, got, mine)
			}

			if name == "defaults" {
				// test/install runs the agent with the default chart's
				// args against an apiserver: a stronger proof of the same.
				return
			}
			c := container(t, get[*appsv1.DaemonSet](t, render(t, values), "DaemonSet", "tagger-node-agent").Spec.Template.Spec, "node-agent")
			run := append(withFlag(t, c.Args, "hosts-dir", t.TempDir()), "--kubeconfig="+filepath.Join(t.TempDir(), "none"))
			out, err := exec.Command(bin, run...).CombinedOutput()
			if err == nil {
				t.Fatalf("node-agent ran without a kubeconfig:\n%s", out)
			}
			if strings.Contains(string(out), "flag provided but not defined") || !strings.Contains(string(out), "load kubeconfig") {
				t.Errorf("node-agent refused the chart's args %q:\n%s", c.Args, out)
			}
		})
	}
}

// holdCleanup runs `node-agent <args>` (cleanup --hold) until the hook's
// readiness probe, run as the kubelet would (its command, with the binary and
// ready file of this test), passes; then stops it with SIGTERM, as helm's
// deletion of the hook DaemonSet does, and wants a clean exit.
func holdCleanup(t *testing.T, bin string, args []string, probe *corev1.Probe, ready string) {
	t.Helper()
	if probe == nil || probe.Exec == nil || len(probe.Exec.Command) < 2 {
		t.Fatalf("cleanup readiness probe %+v: want an exec", probe)
	}
	check := withFlag(t, probe.Exec.Command[1:], "ready-file", ready)
	probeOnce := func() error { return exec.Command(bin, check...).Run() }
	if err := probeOnce(); err == nil {
		t.Fatal("readiness probe passed before cleanup ran")
	}
	cmd := exec.Command(bin, args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = cmd.Process.Kill()
			<-done
		}
	})
	rig.WaitFor(t, 30*time.Second, "cleanup --hold reports ready", func() (bool, string) {
		select {
		case err := <-done:
			stopped = true
			t.Fatalf("node-agent %q exited while it should hold: %v\n%s", args, err, out.String())
		default:
		}
		err := probeOnce()
		return err == nil, fmt.Sprint(err)
	})
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	stopped = true
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("node-agent cleanup --hold after SIGTERM: %v\n%s", err, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("node-agent cleanup --hold did not stop on SIGTERM\n%s", out.String())
	}
}

func buildNodeAgent(t *testing.T) string {
	t.Helper()
	return rig.Command(t, rig.Race, "node-agent")
}

// withFlag returns args with the one --name replaced by --name=value, and
// fails when there is not exactly one (for --hosts-dir the binary's default
// is the node's real /etc/containerd/certs.d).
func withFlag(t *testing.T, args []string, name, value string) []string {
	t.Helper()
	if _, n := flagValue(args, name); n != 1 {
		t.Fatalf("args %q: want exactly one --%s, have %d", args, name, n)
	}
	out := slices.Clone(args)
	for i, a := range out {
		if strings.HasPrefix(a, "--"+name+"=") {
			out[i] = "--" + name + "=" + value
		}
	}
	return out
}

// seedHostsDir puts a node's own registry configuration in dir, then lets
// pkg/node/hoststoml (the agent's writer) configure the mirror over it with the
// options args give, as a running agent would; it returns the node's files.
func seedHostsDir(t *testing.T, dir string, args []string) map[string]string {
	t.Helper()
	write := func(rel, data string) {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("docker.io/hosts.toml", "server = \"https://registry-1.docker.io\"\n\n[host.\"https://mirror.corp.example\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = \"corp.crt\"\n")
	write("docker.io/corp.crt", "not really a certificate\n")
	write("_default/hosts.toml", "[host.\"https://proxy.corp.example\"]\n  capabilities = [\"pull\", \"resolve\"]\n")
	mine := rig.SnapshotDir(t, dir)

	listen, _ := flagValue(args, "listen")
	dial, _ := flagValue(args, "dial-timeout")
	timeout, err := time.ParseDuration(dial)
	if err != nil {
		t.Fatalf("--dial-timeout=%s: %v", dial, err)
	}
	matcher := func(flag string) func(string) bool {
		v, _ := flagValue(args, flag)
		var patterns []string
		if v != "" {
			patterns = strings.Split(v, ",")
		}
		m, err := pins.HostMatcher(patterns)
		if err != nil {
			t.Fatalf("--%s=%s: %v", flag, v, err)
		}
		return m
	}
	m, err := hoststoml.New(hoststoml.Options{
		Dir: dir, MirrorURL: "http://" + listen, DialTimeout: timeout,
		Strict: matcher("strict-registries"), PlainHTTP: matcher("plain-http-registries"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Sync([]string{"docker.io", "ghcr.io", "registry.local:5000"}); err != nil {
		t.Fatalf("write hosts.toml into %s: %v", dir, err)
	}
	if got := rig.SnapshotDir(t, dir); maps.Equal(got, mine) || !strings.Contains(got["docker.io/hosts.toml"], "\n# managed by tagger node-agent") {
		t.Fatalf("seeding wrote no tagger files: %v", got)
	}
	return mine
}
