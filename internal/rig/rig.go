// Package rig is tagger's one test rig: the real components the tests, the
// benchmarks and the demo run against, and the helpers that drive them.
//
//   - binaries: BinDir, RequireBins and RequireRoot find what hack/testbin.sh
//     builds (a skip on a developer machine, a failure under CI=true);
//     Commands builds tagger's own commands once per process.
//   - processes: StartProcess, TailBuffer, FreePorts and WaitFor, the one poll
//     loop for conditions.
//   - registry: NewRegistry runs the distribution registry (with basic or
//     token auth, or S3 storage), PushImage and PushIndex push random images
//     and indexes to it, CountingProxy counts what a client asked for.
//   - object store: NewS3 runs SeaweedFS's S3 gateway.
//   - containerd: NewContainerd runs a containerd and pulls through its CRI
//     (internal/rig/cluster starts its nodes' containerds with it too).
//   - Kubernetes: NewKube and StartKube run an apiserver and etcd (envtest)
//     with tagger's CRDs (internal/rig/inproc adds the controller and node
//     agent in-process); the Tag helpers create, read and wait on Tags.
//   - files: SnapshotDir records a directory tree for before/after checks.
//
// Program implements T outside a test, for the demo and the benchmarks.
// The several-node cluster (kubelets, a control plane) is internal/rig/cluster;
// docs/local-cluster.md explains it.
package rig

// T is what the rig needs of a test: testing.TB implements it, and so does
// Program outside one (the demo, the benchmarks).
type T interface {
	Helper()
	Fatalf(format string, args ...any)
	Errorf(format string, args ...any)
	Logf(format string, args ...any)
	Skipf(format string, args ...any)
	Cleanup(func())
	TempDir() string
	Failed() bool
}
