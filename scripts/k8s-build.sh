#!/usr/bin/env bash
# Builds the test cluster's Kubernetes 1.20 control plane once, outside the clone, and prints
# its directory:
#
#   /var/cache/nodeagent-test/k8s-<version>-r<recipe>/bin/{kube-apiserver,kube-scheduler,
#                                                         kube-controller-manager,kubectl}
#
# No registry here ships a kube-apiserver, so it is built from Debian's source package
# `kubernetes` (1.20.5+really1.20.2, whose binary package only carries kubectl):
#   1. deb-src for bookworm is enabled (a sources file of its own) and `apt-get source` fetches
#      and unpacks the tree with Debian's patches applied;
#   2. the vendored reflect2 v1.0.1 predates Go 1.18's map layout and crashes at run time under
#      Debian's Go 1.19: Debian's golang-github-modern-go-reflect2-dev (1.0.2) replaces it;
#   3. the vendored openapi-gen writes pkg/generated/openapi (the tarball has no generated
#      OpenAPI definitions; without them the build fails on openapi.GetOpenAPIDefinitions);
#   4. `go build` in GOPATH mode (GO111MODULE=off), with the version ldflags that /version
#      reports (otherwise v0.0.0).
# kubectl is Debian's kubernetes-client of the same source (1.20.5), unpacked with dpkg-deb -x
# (nothing is installed on the host: /usr/bin/kubectl may be someone else's).
#
# A directory whose version and recipe match is reused as it is. The build takes ~12 min of
# two cores and ~1.7 GB of memory; its work tree (~2 GB) is removed afterwards.
#
# Usage: scripts/k8s-build.sh [CACHE_ROOT]   (default /var/cache/nodeagent-test)
set -euo pipefail

ROOT=${1:-/var/cache/nodeagent-test}
SRC_VERSION=1.20.5+really1.20.2-1.1+deb12u1
# What the binaries report on /version (the source is 1.20.2; Debian's 1.20.5 is a label).
GIT_VERSION=v1.20.2
# RECIPE changes when this script builds differently (the cache is then rebuilt).
RECIPE=1
DIR="$ROOT/k8s-1.20.2-r$RECIPE"
BINS="kube-apiserver kube-scheduler kube-controller-manager"

die() { echo "k8s-build.sh: $*" >&2; exit 1; }

done_already() {
    local b
    for b in $BINS kubectl; do [ -x "$DIR/bin/$b" ] || return 1; done
    [ -x /usr/bin/etcd ] || return 1
}
if done_already; then
    echo "$DIR"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
SRCLIST=/etc/apt/sources.list.d/nodeagent-deb-src.sources
if ! apt-cache showsrc kubernetes 2>/dev/null | grep -q "^Version: $SRC_VERSION"; then
    if [ ! -f "$SRCLIST" ]; then
        cat >"$SRCLIST" <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    fi
    apt-get update -qq >&2 || die "apt-get update failed"
fi
need=""
for p in golang-go etcd-server golang-github-modern-go-reflect2-dev dpkg-dev; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need="$need $p"
done
if [ -n "$need" ]; then
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $need >&2 || die "apt-get install$need failed"
fi
command -v go >/dev/null || die "no go after installing golang-go"

WORK=$(mktemp -d /var/tmp/nodeagent-k8s-build.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/gopath/src/k8s.io" "$WORK/dl"
(cd "$WORK/dl" && apt-get source -qq "kubernetes=$SRC_VERSION" >&2) || die "apt-get source kubernetes failed"
tree=$(find "$WORK/dl" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -1)
[ -n "$tree" ] || die "apt-get source left no kubernetes-* tree"
mv "$tree" "$WORK/gopath/src/k8s.io/kubernetes"
rm -rf "$WORK/dl"
K="$WORK/gopath/src/k8s.io/kubernetes"

rm -rf "$K/vendor/github.com/modern-go/reflect2"
cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 "$K/vendor/github.com/modern-go/reflect2"

export GOPATH="$WORK/gopath" GO111MODULE=off GOCACHE="$WORK/gocache"
cd "$K"

# The packages tagged for openapi-gen, as hack/make-rules/../Makefile.generated_files finds them.
inputs=$(grep -rl --include='*.go' -e '+k8s:openapi-gen=' pkg staging/src/k8s.io vendor 2>/dev/null \
    | xargs -n1 dirname | sed -e 's,^vendor/,,' -e 's,^staging/src/,,' -e 's,^pkg/,k8s.io/kubernetes/pkg/,' \
    | sort -u | paste -sd, -)
[ -n "$inputs" ] || die "found no packages tagged +k8s:openapi-gen"
go build -o "$WORK/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen >&2
"$WORK/openapi-gen" --input-dirs "$inputs" \
    --input-dirs "k8s.io/apimachinery/pkg/apis/meta/v1,k8s.io/apimachinery/pkg/runtime,k8s.io/apimachinery/pkg/version" \
    --output-package k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi \
    --go-header-file hack/boilerplate/boilerplate.generatego.txt \
    --report-filename "$WORK/openapi-violations.txt" >&2 || die "openapi-gen failed"

ld="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    p="k8s.io/kubernetes/vendor/$pkg"
    ld="$ld -X $p.gitVersion=$GIT_VERSION -X $p.gitMajor=1 -X $p.gitMinor=20 -X $p.gitTreeState=clean"
    ld="$ld -X $p.buildDate=1970-01-01T00:00:00Z"
done
mkdir -p "$WORK/out"
for b in $BINS; do
    echo "k8s-build.sh: building $b" >&2
    go build -ldflags "$ld" -o "$WORK/out/$b" "./cmd/$b" >&2 || die "go build ./cmd/$b failed"
done

(cd "$WORK" && apt-get download -qq "kubernetes-client=$SRC_VERSION" >&2) || die "apt-get download kubernetes-client failed"
dpkg-deb -x "$WORK"/kubernetes-client_*.deb "$WORK/client"
mkdir -p "$DIR.tmp/bin"
cp "$WORK"/out/* "$DIR.tmp/bin/"
cp "$WORK/client/usr/bin/kubectl" "$DIR.tmp/bin/kubectl"
rm -rf "$DIR"
mv "$DIR.tmp" "$DIR"
done_already || die "the build left $DIR incomplete"
echo "$DIR"
