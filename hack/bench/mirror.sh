#!/usr/bin/env bash
# Runs the node-mirror benchmark (hack/bench/mirror; results and how to read
# them: docs/benchmarks.md), then the mirror's Go micro-benchmarks, then the
# CRI pull benchmark (hack/bench/cripull: real containerd pulls, direct and
# through a real node agent; it needs root and `make testbin`, and says so
# and skips otherwise).
#
#   hack/bench/mirror.sh [flags of hack/bench/mirror]     # what `make bench` runs
#
# Needs the registry binary (`make testbin`) and a wrk that can measure HEAD.
# Stock wrk cannot (wg/wrk#198: after a HEAD response carrying a
# Content-Length it waits for a body that never comes, so it reports 0
# requests), so this script builds Debian's wrk once with a three-line fix
# (see wrk_patch below) and caches it outside the checkout, next to the rig
# binaries. Build needs: apt-get install -y wrk dpkg-dev gcc make patch
# pkg-config luajit libluajit-5.1-dev libssl-dev.
#
# Environment:
#   WRK=/path/to/wrk   use this wrk instead (it must handle HEAD)
#   BENCH_MICRO=0      skip `go test -bench` of pkg/mirror
#   BENCH_CRI=0        skip the CRI pull benchmark
#   BENCH_JSON=FILE    also write the raw measurements to FILE
set -euo pipefail
cd "$(dirname "$0")/../.."

CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/tagger/bench
log() { echo "bench: $*" >&2; }

# wrk_patch: headers_complete returns 1 for a HEAD request, which tells
# http_parser that the response has no body (its documented contract); GET
# parsing is unchanged.
wrk_patch() {
  cat <<'EOF'
--- a/src/wrk.c
+++ b/src/wrk.c
@@ -31,7 +31,15 @@
     .readable = sock_readable
 };
 
+static int headers_complete(http_parser *parser) {
+    connection *c = parser->data;
+    /* A response to HEAD has no body whatever its Content-Length says: 1 tells
+     * http_parser not to wait for one (wg/wrk#198). */
+    return c->request != NULL && c->length >= 5 && memcmp(c->request, "HEAD ", 5) == 0;
+}
+
 static struct http_parser_settings parser_settings = {
+    .on_headers_complete = headers_complete,
     .on_message_complete = response_complete
 };
 
EOF
}

# build_wrk prints the path of the patched wrk, building it on first use from
# the Debian source of the wrk version installed (apt-get source, with a
# private deb-src list: the system's apt configuration is not touched).
build_wrk() {
  local ver codename out work
  ver=$(dpkg-query -W -f='${Version}' wrk 2>/dev/null || true)
  if [ -z "$ver" ]; then
    log "wrk is not installed: apt-get install -y wrk"
    return 1
  fi
  out=$CACHE/wrk-$ver-head/wrk
  if [ -x "$out" ]; then
    echo "$out"
    return 0
  fi
  local missing=()
  for t in apt-get dpkg-source dpkg-buildflags gcc make patch pkg-config luajit; do
    command -v "$t" >/dev/null || missing+=("$t")
  done
  pkg-config --exists luajit 2>/dev/null || missing+=(libluajit-5.1-dev)
  [ -e /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
  if [ ${#missing[@]} -gt 0 ]; then
    log "building a wrk that can measure HEAD needs: ${missing[*]}"
    log "  apt-get install -y dpkg-dev gcc make patch pkg-config luajit libluajit-5.1-dev libssl-dev"
    return 1
  fi
  codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
  work=$(mktemp -d)
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" RETURN
  log "building wrk $ver with the HEAD fix (once; cached in $CACHE)"
  mkdir -p "$work/lists/partial"
  echo "deb-src http://deb.debian.org/debian $codename main" >"$work/sources.list"
  local apt=(apt-get -q -o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$work/lists" -o Debug::NoLocking=1)
  "${apt[@]}" update >"$work/log" 2>&1 || { cat "$work/log" >&2; return 1; }
  (cd "$work" && "${apt[@]}" source "wrk=$ver") >>"$work/log" 2>&1 || { cat "$work/log" >&2; return 1; }
  local src
  src=$(find "$work" -maxdepth 1 -type d -name 'wrk-*' -print -quit)
  wrk_patch | (cd "$src" && patch -p1) >>"$work/log" 2>&1 || { cat "$work/log" >&2; return 1; }
  # Debian's own flags (debian/rules: hardening=+all), so only the fix differs.
  (
    cd "$src"
    export DEB_BUILD_MAINT_OPTIONS=hardening=+all
    CFLAGS=$(dpkg-buildflags --get CFLAGS) CPPFLAGS=$(dpkg-buildflags --get CPPFLAGS) \
      LDFLAGS=$(dpkg-buildflags --get LDFLAGS) \
      make WITH_LUAJIT=/usr WITH_OPENSSL=/usr "VER=debian/$ver+head"
  ) >>"$work/log" 2>&1 || { cat "$work/log" >&2; return 1; }
  mkdir -p "$(dirname "$out")"
  cp "$src/wrk" "$out.tmp" && mv "$out.tmp" "$out"
  echo "$out"
}

wrk=${WRK:-}
if [ -z "$wrk" ]; then
  wrk=$(build_wrk)
fi

bindir=$(mktemp -d)
trap 'rm -rf "$bindir"' EXIT
go build -o "$bindir/mirror-bench" ./hack/bench/mirror
args=(-wrk "$wrk")
[ -n "${BENCH_JSON:-}" ] && args+=(-json "$BENCH_JSON")
"$bindir/mirror-bench" "${args[@]}" "$@"

if [ "${BENCH_MICRO:-1}" != 0 ]; then
  echo
  echo "## Go micro-benchmarks: go test -bench . -benchmem -run '^\$' -count 3 ./pkg/mirror/"
  echo
  go test -bench . -benchmem -run '^$' -count 3 ./pkg/mirror/
fi

if [ "${BENCH_CRI:-1}" != 0 ]; then
  echo
  echo "## CRI pull: go test -run '^\$' -bench CRIPull -benchtime 1x ./hack/bench/cripull/"
  echo
  go test -run '^$' -bench CRIPull -benchtime 1x -timeout 60m ./hack/bench/cripull/
fi
