package lifecycle

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/internal/rig/cluster"
)

// pullCounts is what the pull loops saw.
type pullCounts struct {
	pinned, unpinned, failed atomic.Int64
}

// pinnedPull is an image reference and the digest pinned for it.
type pinnedPull struct{ image, digest string }

// upgradeUnderPulls (scenario d): while a loop on every node pulls each
// pinned tag afresh through the CRI (image removed, then pulled), `helm
// upgrade` moves tagger to a new image tag, which rolls the node agent
// DaemonSet. No pull may return an unpinned digest, for a registry with
// an upstream fallback and for a strict one. It returns the counts.
func (s *suite) upgradeUnderPulls(ctx context.Context, pulls []pinnedPull, newTag string) *pullCounts {
	t := s.t
	s.retagTaggerImage("v1", newTag)
	loopCtx, stop := context.WithCancel(ctx)
	var counts pullCounts
	var wg sync.WaitGroup
	var mu sync.Mutex
	var wrong []string
	for _, n := range s.cl.Nodes() {
		wg.Add(1)
		go func(n *cluster.Node) {
			defer wg.Done()
			// Paced, so the loops leave the 2-core machine's kubelets and
			// agents room to work: about 8 pulls a second per node at most.
			pace := time.NewTicker(125 * time.Millisecond)
			defer pace.Stop()
			for loopCtx.Err() == nil {
				for _, p := range pulls {
					select {
					case <-loopCtx.Done():
						return
					case <-pace.C:
					}
					got, err := pullAfresh(loopCtx, n, p.image)
					switch {
					case loopCtx.Err() != nil:
						return
					case err != nil:
						counts.failed.Add(1)
						mu.Lock()
						wrong = append(wrong, fmt.Sprintf("%s %s: %v", n.Name(), p.image, err))
						mu.Unlock()
					case got == p.digest:
						counts.pinned.Add(1)
					default:
						counts.unpinned.Add(1)
						mu.Lock()
						wrong = append(wrong, fmt.Sprintf("%s %s: got %s, pinned %s", n.Name(), p.image, got, p.digest))
						mu.Unlock()
					}
				}
			}
		}(n)
	}
	// Some pulls before the upgrade, so the loops are known to work.
	rig.WaitFor(t, time.Minute, "pull loops running", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return counts.pinned.Load() >= int64(2*len(s.cl.Nodes())), fmt.Sprintf("%d pinned, %d unpinned, %d failed; last wrong: %v",
			counts.pinned.Load(), counts.unpinned.Load(), counts.failed.Load(), wrong[max(0, len(wrong)-3):])
	})
	if out, err := s.helm.Run(ctx, "upgrade", release, "deploy/chart/tagger", "--namespace", namespace,
		"--values", s.values, "--set", "image.tag="+newTag, "--wait", "--timeout", "5m"); err != nil {
		t.Fatalf("helm upgrade: %v\n%s", err, out)
	}
	s.waitInstalled(ctx)
	s.waitAgentsOn(ctx, newTag)
	stop()
	wg.Wait()
	total := counts.pinned.Load() + counts.unpinned.Load() + counts.failed.Load()
	if counts.unpinned.Load() > 0 {
		t.Errorf("during the upgrade: %d unpinned and %d failed of %d pulls: %v", counts.unpinned.Load(), counts.failed.Load(), total, wrong)
	} else if counts.failed.Load() > 0 {
		// A request on a keep-alive connection the old agent closes as it
		// stops is reset (docs/install.md, "Upgrades"): containerd takes a
		// blob from the next host, or a strict registry's pull fails and
		// the kubelet retries. Never an unpinned digest; reported, not hidden.
		t.Logf("during the upgrade: %d of %d pulls failed (none unpinned): %v", counts.failed.Load(), total, wrong)
	}
	return &counts
}

// pullAfresh removes image from the node's containerd, pulls it through
// the CRI, as a kubelet on a node without it does, and returns the manifest
// digest containerd recorded for it.
func pullAfresh(ctx context.Context, n *cluster.Node, image string) (string, error) {
	ctd := n.Containerd()
	if err := ctd.RemoveImage(ctx, image); err != nil {
		return "", fmt.Errorf("remove: %w", err)
	}
	if _, err := ctd.Pull(ctx, image); err != nil {
		return "", err
	}
	d, _, err := ctd.ImageDigest(ctx, image)
	return d, err
}
