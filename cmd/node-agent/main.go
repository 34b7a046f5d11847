// Command node-agent will serve the pin-aware containerd mirror on every node
// (see DESIGN.md section 3). Until then it parses its flags and exits, so the
// image and chart can already ship it.
package main

import (
	"flag"
	"fmt"
	"os"
)

func main() {
	fs := flag.NewFlagSet("node-agent", flag.ContinueOnError)
	fs.String("kubeconfig", "", "path to a kubeconfig; in-cluster config when empty")
	fs.String("listen", "127.0.0.1:5050", "address of the mirror containerd asks first")
	fs.String("hosts-dir", "/etc/containerd/certs.d", "containerd hosts.toml directory (config_path)")
	fs.String("registry-url", "", "URL of the bundled registry")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	fmt.Fprintln(os.Stderr, "node-agent: the mirror is not implemented yet (issue: node agent)")
	os.Exit(1)
}
