// Command kubectl-tag is the `kubectl tag` plugin: put it on PATH and kubectl
// runs it for `kubectl tag ...`; started as kubectl_complete-tag (a link to
// it) it answers kubectl's completion requests. All logic lives in
// pkg/kubectltag.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/tagger-project/tagger/pkg/kubectltag"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := kubectltag.Run(ctx, kubectltag.Args(os.Args[0], os.Args[1:]), os.Stdout, os.Stderr, kubectltag.Options{})
	stop()
	os.Exit(code)
}
