// Command image builds tagger's image from the Dockerfile with BuildKit, no
// Docker engine needed: `make image` runs it. It is internal/rig/imagebuild
// (the code the tests build the image with) behind flags; run it as root
// with the binaries of `make testbin`. docs/local-cluster.md ("The tagger
// image") says how it works and what differs from a Docker Hub build.
//
//	go run ./hack/image -dest 127.0.0.1:5000/tagger:dev   # push (plain HTTP)
//	go run ./hack/image -oci bin/tagger-image.tar         # OCI layout tarball
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tagger-project/tagger/internal/rig"
	"github.com/tagger-project/tagger/internal/rig/imagebuild"
)

func main() {
	var o imagebuild.Options
	flag.StringVar(&o.Dest, "dest", "", "push the image to this plain-HTTP registry reference, HOST:PORT/repo:tag")
	flag.StringVar(&o.OCIArchive, "oci", "", "write the image as an OCI layout tarball at this path instead")
	flag.StringVar(&o.Version, "version", "", "version stamped into the binaries (Dockerfile default: dev)")
	flag.StringVar(&o.Commit, "commit", "", "commit stamped into the binaries")
	flag.StringVar(&o.Date, "date", "", "build date stamped into the binaries (RFC 3339)")
	flag.StringVar(&o.Platform, "platform", "", "target os/arch (default: this machine's)")
	flag.Parse()
	if o.OCIArchive != "" {
		abs, err := filepath.Abs(o.OCIArchive)
		if err != nil {
			fmt.Fprintln(os.Stderr, "image:", err)
			os.Exit(1)
		}
		o.OCIArchive = abs
		if err := os.MkdirAll(filepath.Dir(abs), 0o755); err != nil {
			fmt.Fprintln(os.Stderr, "image:", err)
			os.Exit(1)
		}
	}
	p := &rig.Program{Prefix: "tagger-image"}
	err := p.Run(func() error {
		r := imagebuild.Build(p, o)
		fmt.Printf("%s@%s\n", r.Ref, r.Digest)
		return nil
	})
	p.Close()
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}
