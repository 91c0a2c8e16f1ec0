#!/bin/sh
# build.sh builds kube-apiserver and etcd from Go modules (the wrapper module in
# testenv/) into a per-version cache directory and prints that directory.
#
#	e2e/cluster/build.sh            # → ~/.cache/podwall-testenv/v1.34.4
#
# The cache is $PODWALL_TESTENV_CACHE, else $XDG_CACHE_HOME/podwall-testenv,
# else ~/.cache/podwall-testenv. An flock(2) on <dir>/.lock serialises builds:
# a second caller waits for the first and then finds the binaries. A cold build
# takes ≈ 10–12 min on 2 cores and ≈ 2.2 GB of GOCACHE; a warm one is a stat.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
version=$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ { print $2; exit }' "$here/testenv/go.mod")
[ -n "$version" ] || { echo "build.sh: no k8s.io/kubernetes version in testenv/go.mod" >&2; exit 1; }
root=${PODWALL_TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/podwall-testenv}
dir=$root/$version
mkdir -p "$dir"

exec 9>"$dir/.lock"
flock 9

if [ -x "$dir/kube-apiserver" ] && [ -x "$dir/etcd" ]; then
	echo "$dir"
	exit 0
fi

echo "build.sh: building kube-apiserver and etcd $version into $dir (cold: ≈ 10–12 min)" >&2
tmp=$(mktemp -d "$dir/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
major=$(echo "$version" | sed 's/^v\([0-9]*\)\..*/\1/')
minor=$(echo "$version" | sed 's/^v[0-9]*\.\([0-9]*\)\..*/\1/')
pkg=k8s.io/component-base/version
cd "$here/testenv"
CGO_ENABLED=0 go build -trimpath \
	-ldflags "-s -w -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean" \
	-o "$tmp/" k8s.io/kubernetes/cmd/kube-apiserver go.etcd.io/etcd/server/v3
# go names the etcd binary after its package directory.
mv "$tmp/server" "$dir/etcd"
mv "$tmp/kube-apiserver" "$dir/kube-apiserver"
echo "$dir"
