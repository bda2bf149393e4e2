#!/usr/bin/env bash
# The benchmark harness, one command:  sudo bash bench/run.sh [--quick] [--only control,sampling,...]
#
# Builds the release binary, makes sure the peers are there (dockerd with busybox:local as
# scripts/test.sh sets them up; Debian's nats-server and prometheus-node-exporter, installed
# without starting the exporter's service: the harness runs its own on a loopback port), then
# runs bench/run.py, which writes bench/RESULTS.md, bench/control-latency.svg and
# bench/results.json. Add --criterion to also run the criterion benches of the hot paths.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root (cgroups, docker)"; exit 1; }

criterion=0
args=()
for a in "$@"; do
  if [ "$a" = --criterion ]; then criterion=1; else args+=("$a"); fi
done

cargo build --release --bin nodeagent

missing=()
command -v nats-server >/dev/null || missing+=(nats-server)
[ -x /usr/bin/prometheus-node-exporter ] || missing+=(prometheus-node-exporter)
if [ ${#missing[@]} -gt 0 ]; then
  # policy-rc.d 101: the package must not start its service; the harness runs its own exporter.
  rc=/usr/sbin/policy-rc.d; had=0; [ -e $rc ] && had=1
  [ $had = 1 ] || { printf '#!/bin/sh\nexit 101\n' > $rc; chmod +x $rc; }
  apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  [ $had = 1 ] || rm -f $rc
fi

if ! docker version >/dev/null 2>&1 || ! docker image inspect busybox:local >/dev/null 2>&1; then
  echo "dockerd or the image busybox:local is missing: run scripts/test.sh once (it sets both up)"
  exit 1
fi

python3 bench/run.py "${args[@]}"

if [ $criterion = 1 ]; then
  { cargo bench -p nodeagent-drivers --bench cgroup_read; cargo bench -p nodeagent-core --bench update;
    cargo bench -p nodeagent-engine --bench series; cargo bench -p nodeagent-engine --bench encode; } \
    2>&1 | tee bench/criterion.raw
  python3 bench/criterion_summary.py bench/criterion.raw > bench/criterion.txt
  rm -f bench/criterion.raw
  python3 bench/report.py   # re-render RESULTS.md with the criterion lines
fi
