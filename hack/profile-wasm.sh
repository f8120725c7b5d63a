#!/usr/bin/env bash
# profile-wasm.sh [REQUESTS] [TOP]
#
# Where the filter's time goes in WebAssembly, by guest function: the
# filter's BenchmarkRequest (host profile envoy-1.33, the typical request)
# run under Linux perf, with wazero's `perfmap` build tag, which makes
# wazero write /tmp/perf-PID.map naming the machine code of every function
# it compiles. Prints the TOP (default 40) functions of the filter's module
# in µs per request, and each module's total (the filter's and the
# pass-through's, which the benchmark alternates with it).
#
# perf's own sampling inflates every figure by about a fifth, and the
# benchmark's host emulator is in the profile too (its functions are not
# listed): compare functions within one profile, and revisions only with
# hack/bench-pair.sh or hack/bench-ab.sh. Figures per function include what is inlined into it;
# the modules' totals include starting the plugin (configuration, model),
# which the benchmark does anew every 2,000 requests, untimed.
#
# Needs perf (Debian: linux-perf) and kernel.perf_event_paranoid ≤ 2, and
# build/meshward.wasm and build/passthrough.wasm (make wasm
# build/passthrough.wasm).
set -euo pipefail
requests=${1:-100000}
top=${2:-40}
root=$(git rev-parse --show-toplevel)
command -v perf >/dev/null || { echo "profile-wasm: perf is not installed (apt-get install linux-perf)" >&2; exit 1; }
for f in meshward.wasm passthrough.wasm; do
  [ -f "$root/build/$f" ] || { echo "profile-wasm: build/$f missing (make wasm build/passthrough.wasm)" >&2; exit 1; }
done
tmp=$(mktemp -d)
trap 'rm -f /tmp/perf-"$(cat "$tmp/pid" 2>/dev/null || echo none)".map; rm -rf "$tmp"' EXIT
(cd "$root" && go test -c -tags perfmap -o "$tmp/plugin.test" ./filter/plugin/)
# No compilation cache: wazero names functions only when it compiles them.
(cd "$root/filter/plugin" && env -u MESHWARD_WASM_CACHE MESHWARD_WASM="$root/build/meshward.wasm" \
  MESHWARD_PASSTHROUGH_WASM="$root/build/passthrough.wasm" GOGC=400 \
  perf record -q -e cpu-clock -F 10000 -o "$tmp/perf.data" sh -c 'echo $$ > '"$tmp/pid"'; exec "$0" "$@"' \
  "$tmp/plugin.test" -test.run '^$' -test.bench '^BenchmarkRequest$/wasm-envoy-1.33$' \
  -test.benchtime "${requests}x" -test.count 1 2>&1 |
  grep -oE '[0-9]+ own-cpu-ns/op' | awk '{print "own cost (thread CPU, under perf):", $1, "ns per request"}' || true)
perf report -i "$tmp/perf.data" --no-children --sort sym --stdio -F sample,sym 2>/dev/null |
  awk -v n="$requests" -v top="$top" '
    # A compiled function is named "[INDEX/COUNT].NAME:::::LBLOCK" in the map.
    $2 == "[.]" && match($3, /^\[[0-9]+\/[0-9]+\]\./) {
      mod = substr($3, 2, RLENGTH - 3); sub(/^[0-9]+\//, "", mod)
      name = substr($3, RLENGTH + 1); sub(/:::::L[0-9]+$/, "", name)
      gsub(/github\.com_meshward_meshward_|github\.com_tetratelabs_proxy_wasm_go_sdk_/, "", name)
      t[mod] += $1; f[mod "\t" name] += $1
      if (name ~ /^models\./) filter = mod
    }
    END {
      for (m in t) printf "module of %d functions (%s): %.2f µs per request\n", m, m == filter ? "the filter" : "the pass-through", t[m] * 100 / n
      for (k in f) { split(k, p, "\t"); if (p[1] == filter) printf "%8.3f µs  %s\n", f[k] * 100 / n, p[2] | "sort -rn | head -" top }
    }'
