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

step() { printf '\n==> %s\n' "$*"; }
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

# --- run ------------------------------------------------------------------------------------

step "host checks"
check_root
check_cgroup_v1
check_toolchain

step "packages"
# What the build needs from Debian: a C compiler and libc headers for crates that build C.
ensure_pkg gcc libc6-dev
# Prometheus's `promtool` checks the agent's /metrics exposition (tests/e2e_prometheus.rs).
ensure_pkg prometheus
echo "packages: ok"

sweep_test_cgroups
trap sweep_test_cgroups EXIT

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo build --release"
cargo build --release

# Tests run in the debug profile: it shares nothing with the release build above, but it
# compiles faster and keeps debug assertions (overflow checks) on while the tests run.
step "cargo test --workspace"
cargo test --workspace

step "all checks passed"
