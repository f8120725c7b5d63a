#!/usr/bin/env bash
# Builds kube-apiserver, kubectl (from hack/kube) and etcd (from hack/etcd)
# into a cache directory named by version, and reuses them when the stamp
# there matches. The binaries live outside Go's build cache on purpose: that
# cache was once seen to lose the entries, and a cold build takes minutes.
#
#   MESHWARD_KUBE_CACHE  cache directory (default ~/.cache/meshward/kube-v1.37.2);
#                        the binaries go to $MESHWARD_KUBE_CACHE/bin
set -euo pipefail

# Everything runs from main, so bash has read the whole file before it
# starts: editing the script while a build runs cannot derail the build.
main() {
	KUBE_VERSION=v1.37.2
	ETCD_VERSION=v3.7.3
	here=$(cd "$(dirname "$0")" && pwd)
	etcd_dir=$(cd "$here/../etcd" && pwd)
	cache=${MESHWARD_KUBE_CACHE:-$HOME/.cache/meshward/kube-$KUBE_VERSION}
	bin=$cache/bin
	GO=${GO:-go}

	# The stamp names everything the binaries depend on: versions, the Go
	# toolchain and the exact module graphs.
	stamp=$(
		echo "kubernetes $KUBE_VERSION"
		echo "etcd $ETCD_VERSION"
		"$GO" env GOVERSION
		cat "$here/go.mod" "$here/go.sum" "$etcd_dir/go.mod" "$etcd_dir/go.sum" | sha256sum | cut -d' ' -f1
	)

	# The Prometheus Operator CRDs that internal/kubetest installs come from
	# this module (its example/prometheus-operator-crd); fetch it into the
	# module cache now so tests need no network.
	PROMETHEUS_OPERATOR=github.com/prometheus-operator/prometheus-operator@v0.85.0
	(cd "$here" && "$GO" mod download "$PROMETHEUS_OPERATOR")

	mkdir -p "$cache"
	# One build at a time per cache directory (several worktrees share it).
	exec 9>"$cache/.lock"
	flock 9

	if [[ -x $bin/kube-apiserver && -x $bin/kubectl && -x $bin/etcd && -f $cache/stamp ]] &&
		[[ "$(cat "$cache/stamp")" == "$stamp" ]]; then
		echo "kube: reusing $bin (kube-apiserver, kubectl $KUBE_VERSION; etcd $ETCD_VERSION)"
		exit 0
	fi

	echo "kube: building kube-apiserver and kubectl $KUBE_VERSION, etcd $ETCD_VERSION into $bin (cold: minutes, ~3 GB memory)"
	start=$(date +%s)
	tmp=$(mktemp -d "$cache/build.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT

	minor=${KUBE_VERSION#v1.}
	minor=${minor%%.*}
	pkg=k8s.io/component-base/version
	ldflags="-s -w -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
	(cd "$here" && CGO_ENABLED=0 "$GO" build -trimpath -ldflags "$ldflags" -o "$tmp/" \
		k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl)
	(cd "$etcd_dir" && CGO_ENABLED=0 "$GO" build -trimpath -ldflags "-s -w" -o "$tmp/etcd" .)

	"$tmp/kubectl" version --client >/dev/null
	"$tmp/etcd" --version >/dev/null

	rm -rf "$bin"
	chmod 755 "$tmp"
	mv "$tmp" "$bin"
	trap - EXIT
	echo "$stamp" >"$cache/stamp"
	echo "kube: built in $(($(date +%s) - start)) s"
}

main "$@"
exit
