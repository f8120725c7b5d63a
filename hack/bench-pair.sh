#!/usr/bin/env bash
# bench-pair.sh REV_A REV_B [REV ...] [ROUNDS]
#
# Compares the filter's own cost of two or more revisions in one process,
# round by round (BenchmarkRequestPaired, host profile envoy-1.33): each
# revision is checked out into a temporary worktree and built to .wasm as
# make builds it, then the current tree's benchmark serves ROUNDS rounds
# (default 80) of 2,000 typical requests through each build in turn. It
# prints each build's mean own cost and the median and quartiles of its
# rounds' ratios to the first revision's.
#
# Separate processes (hack/bench-ab.sh) differ by ±10 % on this shared
# machine, too much to see a change of a few per cent. Here one revision
# against itself read median ratios of 0.999 and 1.002 (2026-12-07, 40
# and 80 rounds), though single rounds spread by ±13 %: trust a median of
# many rounds, not a round. And a build is also its code's layout: four
# builds that only added a never-called function read 0.933 to 1.000, so a
# difference under about 10 % says nothing about the code. Every revision
# must accept the current tree's configuration and model (the same codec
# version): for older ones, use hack/bench-ab.sh.
set -euo pipefail
source "$(dirname "$0")/lib/revs.sh"
revs_parse bench-pair.sh 80 "$@"
revs_build bench-pair
files=()
for i in "${!revs[@]}"; do files+=("$tmp/r$i.wasm"); done
(cd "$root" && MESHWARD_PAIRED_WASM="${files[*]}" MESHWARD_PASSTHROUGH_WASM=$pass GOGC=400 \
  go test -run '^$' -bench '^BenchmarkRequestPaired$' -benchtime "${rounds}x" -count 1 -v ./filter/plugin/ 2>&1) |
  sed -n 's/^ *bench_test.go:[0-9]*: //p' | tail -n ${#revs[@]} |
  awk -v names="${revs[*]}" -v tmp="$tmp/" 'BEGIN { n = split(names, r, " ") }
    { for (i = 1; i <= n; i++) gsub(tmp "r" (i - 1) ".wasm", r[i]); print }'
