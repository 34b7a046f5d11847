// Package plugin tests the kubectl tag plugin end to end: the commands run
// through pkg/kubectltag's entry point (and once as the built binary) with the
// arguments a user types, against a real kube-apiserver and etcd (envtest,
// CRDs from deploy/crds), the real controller running in-process, and a real
// distribution registry as the upstream.
package plugin

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/tagger-project/tagger/api/v1alpha1"
	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/internal/rig/inproc"
	"github.com/tagger-project/tagger/pkg/kubectltag"
)

// Contexts of the kubeconfig files the tests write.
const (
	ctxEnvtest = "envtest" // envtest's own context: the real apiserver
	ctxNowhere = "nowhere" // a cluster at a closed loopback port
)

// shared is one apiserver and one controller for the package's tests.
var shared inproc.Shared

// cluster holds the kubeconfig files written once for the shared apiserver.
var cluster struct {
	once sync.Once
	err  error
	c    client.Client
	// config is the admin connection, for the RBAC and token set-up.
	config *rest.Config
	// kubeconfig has both contexts, current-context envtest; nowhereConfig is
	// the same with current-context nowhere.
	kubeconfig, nowhereConfig string
	nowhereAddr               string
}

func TestMain(m *testing.M) {
	code := shared.Stop(m.Run())
	if cluster.kubeconfig != "" {
		_ = os.RemoveAll(filepath.Dir(cluster.kubeconfig))
	}
	os.Exit(code)
}

func repoRoot() string { return rig.RepoRoot() }

// startCluster starts (once) the apiserver and the controller, writes the
// kubeconfig files, and returns a client for assertions and cleanup.
func startCluster(t *testing.T) client.Client {
	t.Helper()
	kc := shared.Get(t)
	cluster.once.Do(func() {
		cluster.c, cluster.config = kc.Client, kc.Config
		cluster.err = writeKubeconfigs(kc.KubeConfig)
	})
	if cluster.err != nil {
		t.Fatal(cluster.err)
	}
	return cluster.c
}

// writeKubeconfigs writes envtest's kubeconfig with a second context whose
// cluster is a loopback port nothing listens on, twice: once with the real
// context current, once with the dead one current.
func writeKubeconfigs(envtestConfig []byte) error {
	kc, err := clientcmd.Load(envtestConfig)
	if err != nil {
		return fmt.Errorf("parse envtest kubeconfig: %w", err)
	}
	if _, ok := kc.Contexts[ctxEnvtest]; !ok {
		return fmt.Errorf("envtest kubeconfig has no context %q", ctxEnvtest)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	cluster.nowhereAddr = l.Addr().String()
	_ = l.Close() // connection refused from now on
	kc.Clusters[ctxNowhere] = &clientcmdapi.Cluster{Server: "https://" + cluster.nowhereAddr, InsecureSkipTLSVerify: true}
	kc.Contexts[ctxNowhere] = &clientcmdapi.Context{Cluster: ctxNowhere, AuthInfo: kc.Contexts[ctxEnvtest].AuthInfo}

	dir, err := os.MkdirTemp("", "kubectl-tag-test-")
	if err != nil {
		return err
	}
	write := func(name, current string) (string, error) {
		kc.CurrentContext = current
		path := filepath.Join(dir, name)
		return path, clientcmd.WriteToFile(*kc, path)
	}
	if cluster.kubeconfig, err = write("kubeconfig", ctxEnvtest); err != nil {
		return err
	}
	cluster.nowhereConfig, err = write("kubeconfig-nowhere", ctxNowhere)
	return err
}

// result is one run of the plugin.
type result struct {
	args           string
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("kubectl tag %s: exit %d\nstdout:\n%s\nstderr:\n%s", r.args, r.code, r.stdout, r.stderr)
}

// kubectlTag runs the plugin in-process with a command line as a user types
// it after `kubectl tag` (split on spaces; the test paths have none).
func kubectlTag(t *testing.T, cmdline string) result {
	t.Helper()
	return kubectlTagArgs(t, strings.Fields(cmdline)...)
}

// kubectlTagArgs runs the plugin in-process with args as they are, for
// arguments with spaces or empty ones (a completion of an empty word).
func kubectlTagArgs(t *testing.T, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	code := kubectltag.Run(context.Background(), args, &out, &errOut, kubectltag.Options{})
	cmdline := strings.Join(args, " ")
	r := result{args: cmdline, stdout: out.String(), stderr: errOut.String(), code: code}
	t.Logf("$ kubectl tag %s  (exit %d)\n%s%s", cmdline, code, r.stdout, r.stderr)
	return r
}

// ok runs a command that must succeed and write nothing to stderr.
func ok(t *testing.T, cmdline string) string {
	t.Helper()
	r := kubectlTag(t, cmdline)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("want success with an empty stderr: %s", r)
	}
	return r.stdout
}

// fails runs a command that must exit 1 with stderr containing want and
// nothing on stdout.
func fails(t *testing.T, cmdline, want string) result {
	t.Helper()
	r := kubectlTag(t, cmdline)
	if r.code != 1 || !strings.Contains(r.stderr, want) {
		t.Fatalf("want exit 1 and stderr containing %q: %s", want, r)
	}
	return r
}

func deleteTagOnCleanup(t *testing.T, c client.Client, name string) {
	t.Cleanup(func() {
		tag := &v1alpha1.Tag{}
		tag.Name = name
		_ = c.Delete(context.Background(), tag)
	})
}

// waitTimeout bounds what the tests wait for beyond the plugin's own waits.
const waitTimeout = 30 * time.Second
