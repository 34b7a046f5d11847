package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tagger-project/tagger/internal/rig"
)

// TestConvergenceAfterContainerdRestart: containerd re-creates its socket
// when it restarts; the node agent's CRI client reconnects to the new one,
// so local images still converge on a rollback afterwards. (The chart mounts
// the socket's directory for the same reason: a file mount would keep the
// old socket.)
func TestConvergenceAfterContainerdRestart(t *testing.T) {
	r := newRig(t, rigOptions{})
	ref := r.up.Host() + "/restart/app:v1"
	gen1 := r.up.PushImage(t, "restart/app", "v1", rig.ImageOptions{})
	rig.CreateTag(t, r.c, rig.NewTag("restart-app", ref))
	r.waitServed("restart-app", ref, gen1.Digest.String())
	gen2 := r.up.PushImage(t, "restart/app", "v1", rig.ImageOptions{})
	rig.AnnotateCheck(t, r.c, "restart-app", "moved")
	r.waitServed("restart-app", ref, gen2.Digest.String())
	if got := r.freshPull(ref); got != gen2.Digest.String() {
		t.Fatalf("pulled %s, want generation 2 %s", got, gen2.Digest)
	}

	r.ctd.Stop()
	if err := r.ctd.Start(); err != nil {
		t.Fatalf("restart containerd: %v", err)
	}

	rig.PatchTag(t, r.c, "restart-app", `{"spec":{"generation":1}}`)
	rig.WaitFor(t, time.Minute, "node record converged to generation 1 after the containerd restart", func() (bool, string) {
		d, ok, err := r.ctd.ImageDigest(context.Background(), ref)
		return ok && err == nil && d == gen1.Digest.String(), fmt.Sprintf("recorded %s (%v, %v)", d, ok, err)
	})
}
