#!/usr/bin/env bash
# Installs the Debian packages the real-component test rigs need and the Go
# module proxy cannot provide. Idempotent: packages already installed are
# skipped, and when nothing is missing apt is not touched at all. CI runs it
# (as root) before `make test`.
#
#   hack/ci-deps.sh
#
# What needs what:
#   runc                         internal/rig/cluster: the OCI runtime containerd's
#                                runc shim starts pods with (Debian's 1.1.5 works
#                                once containerd sets restrict_oom_score_adj)
#   containernetworking-plugins  internal/rig/cluster: bridge, host-local, loopback
#                                CNI plugins in /usr/lib/cni
#   iptables                     the kubelet creates chains with it; clustertest
#                                removes them when the last cluster stops
#   iproute2                     ip: clustertest deletes the pod bridge with it
#   util-linux, mount, procps   the multi-node cluster enters and makes node namespaces
#                                (nsenter, unshare, mount) and sets a sysctl in each (sysctl)
#   openssl                      certificate handling in developer scripts (the
#                                rigs make their certificates in Go)
#   busybox-static               internal/rig/imagebuild: the static /bin/sh (and
#                                coreutils) of the synthesized golang base image,
#                                since the Dockerfile's RUN steps run /bin/sh -c
#   ca-certificates, tzdata      internal/rig/imagebuild: the CA bundle and
#                                /usr/share/zoneinfo of the synthesized bases
set -euo pipefail

pkgs=(runc containernetworking-plugins iptables iproute2 util-linux mount procps openssl busybox-static ca-certificates tzdata)

installed() {
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

missing=()
for p in "${pkgs[@]}"; do
  installed "$p" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "ci-deps: already installed: ${pkgs[*]}" >&2
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "ci-deps: missing ${missing[*]}; run this script as root to install them" >&2
  exit 1
fi

echo "ci-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends "${missing[@]}"
