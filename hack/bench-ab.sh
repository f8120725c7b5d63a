#!/usr/bin/env bash
# bench-ab.sh REV_A REV_B [ROUNDS]
#
# Compares the filter's own cost (BenchmarkRequest/wasm-envoy-1.33, formerly wasm-direct) of two
# revisions in the same minutes: each revision is checked out into a
# temporary worktree and built to .wasm, then the two run in turn, ROUNDS
# times (default 5) three runs each, with the same pass-through plugin (the
# current tree's build/passthrough.wasm, `make build/passthrough.wasm`).
# Prints the median, mean and minimum of the own cost in thread CPU time
# per revision. On a shared machine a single run varies by ±10 % and the
# machine's speed drifts during the day: only compare figures taken like
# this.
set -euo pipefail
a=${1:?usage: bench-ab.sh REV_A REV_B [ROUNDS]}
b=${2:?usage: bench-ab.sh REV_A REV_B [ROUNDS]}
rounds=${3:-5}
root=$(git rev-parse --show-toplevel)
pass=$root/build/passthrough.wasm
[ -f "$pass" ] || { echo "bench-ab: $pass missing (make build/passthrough.wasm)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'for r in a b; do git -C "$root" worktree remove --force "$tmp/$r" 2>/dev/null || true; done; rm -rf "$tmp"' EXIT
for r in a b; do
  rev=$a; [ $r = b ] && rev=$b
  git -C "$root" worktree add -q --detach "$tmp/$r" "$rev"
  # Built as make builds it when the revision has filter/wasmbuild.
  if [ -d "$tmp/$r/filter/wasmbuild" ]; then
    (cd "$tmp/$r" && go run ./filter/wasmbuild/cmd/wasmbuild -o "$tmp/$r.wasm" ./filter)
  else
    (cd "$tmp/$r" && GOOS=wasip1 GOARCH=wasm go build -trimpath -buildvcs=false -buildmode=c-shared -o "$tmp/$r.wasm" ./filter)
  fi
done
for _ in $(seq "$rounds"); do
  for r in a b; do
    pkg=./filter/; [ -d "$tmp/$r/filter/plugin" ] && pkg=./filter/plugin/
    (cd "$tmp/$r" && MESHWARD_WASM=$tmp/$r.wasm MESHWARD_PASSTHROUGH_WASM=$pass GOGC=400 \
      go test -run '^$' -bench '^BenchmarkRequest$/wasm-(direct|envoy-1.33)$' -benchtime 20000x -count 3 "$pkg" 2>&1 |
      grep -oE '[0-9]+ own-cpu-ns/op' | awk '{print $1}' >> "$tmp/$r.txt")
  done
done
for r in a b; do
  rev=$a; [ $r = b ] && rev=$b
  sort -n "$tmp/$r.txt" | awk -v rev="$rev" '{v[NR]=$1; s+=$1} END {
    printf "%s: n=%d median=%d ns mean=%.0f ns min=%d ns\n", rev, NR, v[int((NR+1)/2)], s/NR, v[1] }'
done
