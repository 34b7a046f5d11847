// Package cripull holds BenchmarkCRIPull (cripull_test.go): the wall time of
// a real containerd pulling a 5-layer, ~200 MiB image through its CRI image
// service, the path kubelet's pulls take,
//
//	(a) direct: hosts.toml names only the upstream registry;
//	(b) through the node mirror, the bundled registry empty: hosts.toml is
//	    written by a real node agent (mirror first, upstream fallback), the
//	    mirror answers the tag from its pin table and 404s the content, which
//	    containerd then fetches from the upstream by digest;
//	(c) through the node mirror with the image in the bundled registry, which
//	    the mirror streams.
//
// It needs root and the rig binaries (make testbin: kube-apiserver, etcd,
// registry, containerd), and runs only as a benchmark, so `go test ./...`
// and CI never start it:
//
//	go test -run '^$' -bench CRIPull -benchtime 1x -timeout 60m ./hack/bench/cripull/
//
// Flags (after the package): -cripull.reps (measured pulls per case,
// default 11), -cripull.layers, -cripull.layer-mib, -cripull.snapshotter.
// Results and how to read them: docs/benchmarks.md.
package cripull
