package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"runtime/pprof"
	"time"

	"github.com/tagger-project/tagger/pkg/controller/imagecopy"
	"github.com/tagger-project/tagger/pkg/pins"
	"github.com/tagger-project/tagger/pkg/registryclient"
)

// profileCopy runs one copy with pkg/controller/imagecopy in this process, built as
// pkg/controller builds the controller's copier, into a new bundled
// registry, under the CPU profiler (-cpuprofile). It is for finding where
// the copier's CPU goes; its time is not part of the comparison.
func (e *env) profileCopy(ctx context.Context, path string) error {
	tt := newTrialT(e.r)
	defer tt.close()
	bundled, bundledPID := e.startBundled(tt)
	plain, err := pins.HostMatcher([]string{"127.0.0.1:*"})
	if err != nil {
		return err
	}
	cp := &imagecopy.Copier{
		Upstream:      registryclient.New(registryclient.Options{HTTPClient: &http.Client{}, PlainHTTP: plain, UserAgent: "tagger-controller"}),
		Registry:      bundled.URL(),
		MaxConcurrent: e.c.maxCopies,
	}
	ref, err := pins.ParseReference(e.up.Host() + "/" + e.upRepo + ":v1")
	if err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	a := e.read(os.Getpid(), bundledPID)
	if err := pprof.StartCPUProfile(f); err != nil {
		return err
	}
	start := time.Now()
	_, err = cp.Copy(ctx, ref, e.imgA.digest, registryclient.Credentials{}, "profile")
	wall := time.Since(start)
	pprof.StopCPUProfile()
	b := e.read(os.Getpid(), bundledPID)
	if err != nil {
		return err
	}
	var t trial
	t.setCPU(a, b)
	logf("in-process copy (profiled): %.2fs, this process %.2fs CPU, upstream %.2fs, bundled %.2fs; profile in %s (go tool pprof %s)",
		wall.Seconds(), t.CopierCPU, t.UpstreamCPU, t.BundledCPU, path, path)
	fmt.Fprintln(os.Stderr)
	return nil
}
