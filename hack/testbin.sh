#!/usr/bin/env bash
# Builds, from the Go module proxy, the real binaries the test suites run against,
# and caches them outside the checkout keyed by version. A second run only checks
# that each cached binary is there. Prints the directory that holds them all.
#
#   hack/testbin.sh [name ...]     # default: every binary
#
# Targets: etcd registry kube (kube-apiserver only) kube-full (kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet and kube-proxy, for
# internal/rig/cluster) containerd crictl seaweedfs (weed, the S3-compatible
# server internal/rig runs) coredns (the cluster DNS the rig's clusters run)
# buildkit (buildkitd and buildctl, which build the Dockerfile without a Docker
# engine) promtool (checks and unit-tests the alerting rules) krew (krew and
# validate-krew-manifest, for the release test). The default builds them all; the
# Debian packages the cluster also needs come from hack/ci-deps.sh.
#
# Layout: $TESTBIN_DIR/<name>-<version>/<binaries>, plus $TESTBIN_DIR/bin with
# symlinks to the current versions (envtest's BinaryAssetsDirectory points there).
set -euo pipefail

KUBE_VERSION=v1.37.2
STAGING_VERSION=v0.37.2
ETCD_VERSION=v3.7.3
CONTAINERD_VERSION=v2.4.2
CRICTL_VERSION=v1.37.0
COREDNS_VERSION=v1.15.0
BUILDKIT_VERSION=v0.34.2
REGISTRY_VERSION=v3.1.2
SEAWEEDFS_VERSION=v0.0.0-20261109003541-7506e5f91cd6
PROMETHEUS_VERSION=v0.316.0
KREW_VERSION=v0.4.3

TESTBIN_DIR=${TESTBIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tagger/testbin}
mkdir -p "$TESTBIN_DIR/bin"
export CGO_ENABLED=${CGO_ENABLED:-0} GOFLAGS=-mod=mod GOWORK=off

log() { echo "testbin: $*" >&2; }

# newmod DIR: a throwaway module in the cache, so the product's go.mod never sees these deps.
newmod() {
  rm -rf "$1" && mkdir -p "$1"
  (cd "$1" && go mod init tagger.dev/testbin >/dev/null 2>&1)
}

# done_or_build NAME VERSION BIN... -- returns 0 when every BIN is cached.
cached() {
  local dir=$1; shift
  for b in "$@"; do [ -x "$dir/$b" ] || return 1; done
}

link() {
  local dir=$1; shift
  for b in "$@"; do ln -sfn "$dir/$b" "$TESTBIN_DIR/bin/$b"; done
}

build_kube() {
  # -stamped: the binaries report KUBE_VERSION (helm checks a chart's kubeVersion against
  # the apiserver's), not the unparsable v0.0.0-master of an unstamped source build.
  local out=$TESTBIN_DIR/kubernetes-$KUBE_VERSION-stamped bins=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
  local want=("${bins[@]}")
  [ "${KUBE_FULL:-0}" = 1 ] || want=(kube-apiserver)
  if cached "$out" "${want[@]}"; then link "$out" "${want[@]}"; return; fi
  log "building ${want[*]} $KUBE_VERSION (about 5 minutes cold)"
  local mod=$TESTBIN_DIR/src/kubernetes
  newmod "$mod"
  (
    cd "$mod"
    go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" >/dev/null
    local gomod
    gomod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
    # Every staging module replaced by its published version, as k8s.io/kubernetes' own go.mod lists them.
    grep -E '^\s*k8s.io/[a-z0-9-]+ => ./staging/src/' "$gomod" | awk '{print $1}' | while read -r m; do
      go mod edit -replace "$m=$m@$STAGING_VERSION"
    done
    go mod edit -require "k8s.io/kubernetes@$KUBE_VERSION"
    local pkgs=()
    for b in "${want[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
    printf 'package tools\n\nimport (\n' > tools.go
    for p in "${pkgs[@]}"; do printf '\t_ "%s"\n' "$p" >> tools.go; done
    printf ')\n' >> tools.go
    sed -i '1i //go:build tools\n' tools.go
    go mod tidy -e >/dev/null 2>&1 || true
    mkdir -p "$out"
    local minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
    local v=k8s.io/component-base/version
    local ldflags="-X $v.gitVersion=$KUBE_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean"
    for b in "${want[@]}"; do
      [ -x "$out/$b" ] || go build -tags tools -ldflags "$ldflags" -o "$out/$b" "k8s.io/kubernetes/cmd/$b"
    done
  )
  link "$out" "${want[@]}"
}

# gobuild NAME VERSION MODULE PKG... : build packages of MODULE@VERSION into the cache.
# REPLACES (space-separated OLD=NEW@VERSION) carries a replace directive the
# module's own go.mod has, since replaces do not apply to dependents; GOTAGS
# are build tags.
gobuild() {
  local name=$1 version=$2 module=$3; shift 3
  local out=$TESTBIN_DIR/$name-$version bins=()
  for p in "$@"; do bins+=("$(basename "$p")"); done
  if cached "$out" "${bins[@]}"; then link "$out" "${bins[@]}"; return; fi
  log "building ${bins[*]} $version"
  local mod=$TESTBIN_DIR/src/$name
  newmod "$mod"
  (
    cd "$mod"
    for r in ${REPLACES:-}; do go mod edit -replace "$r"; done
    go get "$module@$version" >/dev/null 2>&1 || go get "$module@$version"
    mkdir -p "$out"
    for p in "$@"; do go build ${GOTAGS:+-tags "$GOTAGS"} -o "$out/$(basename "$p")" "$p"; done
  )
  link "$out" "${bins[@]}"
}

build_etcd() {
  local out=$TESTBIN_DIR/etcd-$ETCD_VERSION
  if cached "$out" etcd; then link "$out" etcd; return; fi
  log "building etcd $ETCD_VERSION"
  local mod=$TESTBIN_DIR/src/etcd
  newmod "$mod"
  (
    cd "$mod"
    cat > main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1
    go mod tidy >/dev/null 2>&1
    mkdir -p "$out"
    go build -o "$out/etcd" .
  )
  link "$out" etcd
}

build_registry() {
  gobuild registry "$REGISTRY_VERSION" github.com/distribution/distribution/v3 \
    github.com/distribution/distribution/v3/cmd/registry
}

build_containerd() {
  gobuild containerd "$CONTAINERD_VERSION" github.com/containerd/containerd/v2 \
    github.com/containerd/containerd/v2/cmd/containerd \
    github.com/containerd/containerd/v2/cmd/ctr \
    github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2
}

build_crictl() {
  gobuild crictl "$CRICTL_VERSION" sigs.k8s.io/cri-tools sigs.k8s.io/cri-tools/cmd/crictl
}

build_coredns() {
  gobuild coredns "$COREDNS_VERSION" github.com/coredns/coredns github.com/coredns/coredns
}

# buildkit's go.mod has exclude directives, so `go install ...@v` refuses it;
# gobuild's throwaway module builds it.
build_buildkit() {
  gobuild buildkit "$BUILDKIT_VERSION" github.com/moby/buildkit \
    github.com/moby/buildkit/cmd/buildkitd github.com/moby/buildkit/cmd/buildctl
}

build_seaweedfs() {
  # As the module's own go.mod does: a dependency's replace directives do not apply here.
  REPLACES="github.com/tyler-smith/go-bip39=github.com/cosmos/go-bip39@v1.0.0" \
    gobuild seaweedfs "$SEAWEEDFS_VERSION" github.com/seaweedfs/seaweedfs \
    github.com/seaweedfs/seaweedfs/weed
}

# promtool checks and unit-tests the PrometheusRule alerts (deploy/monitoring).
# The Go module's v0.N.x versions are Prometheus 3.N.x releases. remove_all_sd
# leaves out the service discovery plugins (cloud SDKs): rule checks and unit
# tests need none, and the build is minutes instead of most of an hour.
build_promtool() {
  GOTAGS=remove_all_sd gobuild promtool "$PROMETHEUS_VERSION" github.com/prometheus/prometheus \
    github.com/prometheus/prometheus/cmd/promtool
}

# krew (the kubectl plugin manager) and its manifest validator: the release
# test validates and installs the generated tag.yaml with them (hack/release).
build_krew() {
  gobuild krew "$KREW_VERSION" sigs.k8s.io/krew \
    sigs.k8s.io/krew/cmd/krew sigs.k8s.io/krew/cmd/validate-krew-manifest
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(etcd registry kube-full containerd crictl seaweedfs coredns buildkit promtool krew)
for t in "${targets[@]}"; do
  case $t in
    kube|kube-apiserver) build_kube ;;
    kube-full) KUBE_FULL=1 build_kube ;;
    etcd) build_etcd ;;
    registry) build_registry ;;
    containerd) build_containerd ;;
    crictl) build_crictl ;;
    seaweedfs|weed) build_seaweedfs ;;
    coredns) build_coredns ;;
    buildkit) build_buildkit ;;
    promtool) build_promtool ;;
    krew) build_krew ;;
    *) echo "testbin: unknown target $t" >&2; exit 2 ;;
  esac
done
echo "$TESTBIN_DIR/bin"
