# hack/lib/revs.sh — sourced by hack/bench-ab.sh and hack/bench-pair.sh:
# the revisions to compare, each checked out and built to .wasm.

# revs_parse NAME DEFAULT_ROUNDS ARGS...: sets revs (two or more revisions)
# and rounds (a last argument of digits only, else DEFAULT_ROUNDS); exits 2
# with NAME's usage otherwise.
revs_parse() {
  local name=$1
  rounds=$2
  shift 2
  revs=("$@")
  if [ ${#revs[@]} -gt 2 ] && [[ ${revs[-1]} =~ ^[0-9]+$ ]]; then
    rounds=${revs[-1]}
    unset 'revs[-1]'
  fi
  [ ${#revs[@]} -ge 2 ] || { echo "usage: $name REV_A REV_B [REV ...] [ROUNDS]" >&2; exit 2; }
}

# revs_build NAME: sets root, pass (the current tree's
# build/passthrough.wasm, which must exist) and tmp, a directory removed on
# exit with its worktrees; checks each revision out into $tmp/r$i and
# builds it to $tmp/r$i.wasm, as make builds it when the revision has
# filter/wasmbuild.
revs_build() {
  local name=$1 i
  root=$(git rev-parse --show-toplevel)
  pass=$root/build/passthrough.wasm
  [ -f "$pass" ] || { echo "$name: $pass missing (make build/passthrough.wasm)" >&2; exit 1; }
  tmp=$(mktemp -d)
  trap 'for i in "${!revs[@]}"; do git -C "$root" worktree remove --force "$tmp/r$i" 2>/dev/null || true; done; rm -rf "$tmp"' EXIT
  for i in "${!revs[@]}"; do
    git -C "$root" worktree add -q --detach "$tmp/r$i" "${revs[$i]}"
    if [ -d "$tmp/r$i/filter/wasmbuild" ]; then
      (cd "$tmp/r$i" && go run ./filter/wasmbuild/cmd/wasmbuild -o "$tmp/r$i.wasm" ./filter)
    else
      (cd "$tmp/r$i" && GOOS=wasip1 GOARCH=wasm go build -trimpath -buildvcs=false -buildmode=c-shared -o "$tmp/r$i.wasm" ./filter)
    fi
  done
}
