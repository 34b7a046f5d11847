// Package integration runs the controller against the real rig: a real
// kube-apiserver and etcd (envtest, binaries from hack/testbin.sh) with the
// CRD from deploy/crds, and real distribution registries as upstreams.
package integration

import (
	"os"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tagger-project/tagger/internal/rig/inproc"
)

// shared is one apiserver and one controller for the package's tests; each
// test uses its own Tag names and its own registry.
var shared inproc.Shared

func TestMain(m *testing.M) { os.Exit(shared.Stop(m.Run())) }

// startCluster starts (once) the apiserver and the controller and returns a client.
func startCluster(t *testing.T) client.Client {
	t.Helper()
	return shared.Get(t).Client
}
