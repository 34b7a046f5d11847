#!/usr/bin/env bash
# Runs every Go native fuzz target (func FuzzXxx in a *_test.go under pkg/)
# for FUZZTIME each, one at a time (go test accepts one -fuzz target per
# run). The seed corpora are in each package's testdata/fuzz; a failing
# input the fuzzer finds is written there too: commit it with the fix, it
# is a seed from then on and `go test` replays it.
#   FUZZTIME=30s (default) hack/fuzz.sh [package-dir ...]
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-30s}
parallel=${FUZZPARALLEL:-2}
dirs=("$@")
if [ ${#dirs[@]} -eq 0 ]; then
	mapfile -t dirs < <(grep -rl --include='*_test.go' '^func Fuzz' pkg | xargs -n1 dirname | sort -u)
fi
failed=0
for d in "${dirs[@]}"; do
	for target in $(grep -h '^func Fuzz' "$d"/*_test.go | sed -E 's/^func (Fuzz[A-Za-z0-9_]*).*/\1/' | sort -u); do
		echo "== $d $target ($fuzztime)"
		if ! go test "./$d" -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" -parallel "$parallel"; then
			failed=1
		fi
	done
done
exit $failed
