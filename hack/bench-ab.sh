#!/usr/bin/env bash
# bench-ab.sh REV_A REV_B [REV ...] [ROUNDS]
#
# Compares the filter's own cost (BenchmarkRequest/wasm-envoy-1.33, formerly
# wasm-direct) of two or more revisions in the same minutes: each revision
# is checked out into a temporary worktree and built to .wasm, then they
# run in turn, ROUNDS times (default 5; a last argument of digits only)
# three runs each, with the same pass-through plugin (the current tree's
# build/passthrough.wasm, `make build/passthrough.wasm`).
# Prints the median, mean and minimum of the own cost in thread CPU time
# per revision, and each revision's ratio to the first, round by round
# (the median of the rounds' ratios). On a shared machine a single run
# varies by ±10 % and the machine's speed drifts during the day: only
# compare figures taken like this, or, for revisions that share a codec
# version, in one process with hack/bench-pair.sh.
set -euo pipefail
source "$(dirname "$0")/lib/revs.sh"
revs_parse bench-ab.sh 5 "$@"
revs_build bench-ab
for round in $(seq "$rounds"); do
  for i in "${!revs[@]}"; do
    pkg=./filter/; [ -d "$tmp/r$i/filter/plugin" ] && pkg=./filter/plugin/
    # A compilation cache per revision (where the revision reads one).
    (cd "$tmp/r$i" && MESHWARD_WASM=$tmp/r$i.wasm MESHWARD_PASSTHROUGH_WASM=$pass MESHWARD_WASM_CACHE=$tmp/cache$i GOGC=400 \
      go test -run '^$' -bench '^BenchmarkRequest$/wasm-(direct|envoy-1.33)$' -benchtime 20000x -count 3 "$pkg" 2>&1 |
      grep -oE '[0-9]+ own-cpu-ns/op' | awk -v r="$round" '{print $1, r}' >> "$tmp/r$i.txt")
  done
done
for i in "${!revs[@]}"; do
  sort -n "$tmp/r$i.txt" | awk -v rev="${revs[$i]}" '{v[NR]=$1; s+=$1} END {
    printf "%s: n=%d median=%d ns mean=%.0f ns min=%d ns\n", rev, NR, v[int((NR+1)/2)], s/NR, v[1] }'
done
# Paired: each round's runs of two revisions are minutes apart, so the
# ratio of their round sums drifts less than the figures themselves.
for i in "${!revs[@]}"; do
  [ "$i" -eq 0 ] && continue
  awk -v a="${revs[0]}" -v b="${revs[$i]}" 'FNR == 1 {f++} f == 1 {x[$2] += $1} f == 2 {y[$2] += $1}
    END { for (r in x) if (y[r] > 0) q[++n] = y[r] / x[r]
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (q[j] < q[i]) {t = q[i]; q[i] = q[j]; q[j] = t}
      printf "%s / %s, round by round: median ratio %.3f (from %.3f to %.3f over %d rounds)\n", b, a, q[int((n+1)/2)], q[1], q[n], n }' \
    "$tmp/r0.txt" "$tmp/r$i.txt"
done
