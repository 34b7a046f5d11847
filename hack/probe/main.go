// Command probe attacks a running node agent and the controller's webhook
// receivers the way a process on the node or a peer on the network could:
// hostile paths, methods, ranges, Accept headers and bodies, malformed
// request lines, slow and idle connections and bursts. Everything runs
// in-process on real components (an envtest apiserver, two distribution
// registries, the controller and a node agent, as internal/rig/inproc runs
// them). It prints a report (requests per status class, 5xx, panics, RSS
// and open files before and after) and fails when a handler answered 5xx
// (other than the mirror's documented 503), something panicked, file
// descriptors did not come back, or the pinned tag no longer resolves to its
// digest afterwards. docs/hardening.md has its report for the current code.
//
//	make probe   (or: go run ./hack/probe)
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"github.com/tagger-project/tagger/internal/rig"
)

func main() {
	p := &rig.Program{Prefix: "tagger-probe"}
	code := 0
	if err := p.Run(func() error { return run(p) }); err != nil {
		fmt.Fprintln(os.Stderr, "probe:", err)
		code = 1
	}
	p.Close()
	os.Exit(code)
}

// panics counts lines net/http's servers log for a recovered handler panic.
type panicCounter struct{ n atomic.Int64 }

func (c *panicCounter) Write(b []byte) (int, error) {
	if strings.Contains(string(b), "panic") {
		c.n.Add(1)
		fmt.Fprint(os.Stderr, string(b))
	}
	return len(b), nil
}

func run(p *rig.Program) error {
	bin := rig.BinDir()
	for _, b := range []string{"kube-apiserver", "etcd", "registry"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			return fmt.Errorf("rig binary %s missing in %s: run `make testbin`", b, bin)
		}
	}
	panics := &panicCounter{}
	log.SetOutput(panics) // net/http's servers log recovered panics here
	ctx := context.Background()
	env, err := start(ctx, p, bin)
	if err != nil {
		return err
	}
	rep := &report{}
	before := sample()
	if err := env.resolves(ctx); err != nil {
		return fmt.Errorf("before the probe: %w", err)
	}
	probeMirror(ctx, env, rep)
	probeWebhooks(ctx, env, rep)
	rep.slow = probeSlow(env)
	rep.idle = probeIdle(env)
	after := settle(before)
	resolveErr := env.resolves(ctx)
	rep.print(os.Stdout, before, after, panics.n.Load(), resolveErr)
	return rep.verdict(before, after, panics.n.Load(), resolveErr)
}
