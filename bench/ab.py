#!/usr/bin/env python3
"""A/B of two nodeagent binaries on the same machine, alternated (A B A B ...), so that the
machine's noise falls on both alike:

    sudo python3 bench/ab.py --a /path/to/before/nodeagent --b target/release/nodeagent [--rounds 2]

Each round runs `bench/run.py --quick --only control,sampling` once per binary, into a
temporary directory (the committed RESULTS.md and results.json are not touched), and the
summary prints control p50/p99 (HTTP, process and container) and agent CPU per sample for every
run, and the median of each binary's runs.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def run(binary, out_dir, tag):
    raw = os.path.join(out_dir, f"{tag}.json")
    md = os.path.join(out_dir, f"{tag}.md")
    subprocess.run(
        [sys.executable, os.path.join(HERE, "run.py"), "--quick", "--only", "control,sampling",
         "--bin", binary, "--raw", raw, "--out", md],
        check=True,
    )
    with open(raw) as f:
        return json.load(f)


def figures(r):
    c = r.get("control", {})
    out = {}
    for k in ("http/process", "http/container"):
        v = c.get(k) or {}
        out[f"{k} p50 µs"] = v.get("p50")
        out[f"{k} p99 µs"] = v.get("p99")
    for row in r.get("sampling", {}).get("rows", []):
        if row.get("objects", 0) >= 100:
            out[f"µs/sample {row['objects']}@{row['interval']}"] = row.get("us_per_sample_net")
    out["load"] = (r.get("load_start") or [None])[0]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", required=True, help="binary A (before)")
    ap.add_argument("--b", required=True, help="binary B (after)")
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    out_dir = tempfile.mkdtemp(prefix="nodeagent-ab-")
    runs = {"A": [], "B": []}
    for i in range(a.rounds):
        for tag, binary in (("A", a.a), ("B", a.b)):
            print(f"== round {i + 1}: {tag} ({binary})", flush=True)
            runs[tag].append(figures(run(binary, out_dir, f"{tag}{i + 1}")))
    keys = list(runs["A"][0].keys())
    print(f"\n| figure | {' | '.join(f'A{i + 1}' for i in range(a.rounds))} | "
          f"{' | '.join(f'B{i + 1}' for i in range(a.rounds))} | A median | B median |")
    print("|---" * (2 * a.rounds + 3) + "|")
    for k in keys:
        va = [r.get(k) for r in runs["A"]]
        vb = [r.get(k) for r in runs["B"]]
        fmt = lambda v: "-" if v is None else f"{v:.1f}" if isinstance(v, float) else str(v)
        med = lambda vs: statistics.median([v for v in vs if v is not None]) if any(v is not None for v in vs) else None
        print(f"| {k} | {' | '.join(map(fmt, va))} | {' | '.join(map(fmt, vb))} | {fmt(med(va))} | {fmt(med(vb))} |")
    print(f"\nraw results in {out_dir}")


if __name__ == "__main__":
    main()
