"""Renders bench/RESULTS.md from the figures bench/run.py gathered (also: python3 bench/report.py
re-renders from bench/results.json)."""
import json, math, os

TARGETS_NOTE = "Targets are those of issue 6."


def us(x):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x / 1000:.2f} ms" if x >= 1000 else f"{x:.0f} µs"


def mark(ok):
    if ok is None:
        return "**not measured**"
    return "**met**" if ok else "**missed**"


def render(R):
    m = R["machine"]
    L = []
    w = L.append
    w("# nodeagent benchmarks\n")
    w(f"Written by `bench/run.py` ({R['mode']} mode), {R['started']} to {R.get('finished', '?')}, "
      f"nodeagent at `{m.get('rev', '?')}` (release build). Raw figures: `bench/results.json`; "
      f"chart: [control-latency.svg](control-latency.svg). Reproduce with `bash bench/run.sh` "
      f"(full) or `bash bench/run.sh --quick` (reduced counts).\n")
    if R.get("carried"):
        w(f"Sections {', '.join(R['carried'])} are carried over from an earlier run of the same "
          f"harness (`--only` ran the rest).\n")
    b = R.get("binary")
    if b:
        w(f"Binary: `target/release/nodeagent` built {b['built']}, sha256 `{b['sha256']}…` (run from a copy).\n")
    w("## Machine\n")
    w("| | |\n|---|---|")
    w(f"| CPU | {m['cpu']} |\n| cores | {m['cores']} |\n| memory | {m['memory_gib']} GiB |"
      f"\n| kernel | {m['kernel']} ({m['os']}), cgroup v1 |\n| Docker Engine | {m['docker']} |"
      f"\n| node_exporter | {m['node_exporter']} |\n| NATS | {m['nats']} |")
    w(f"| load average at start / end | {fmt_load(R.get('load_start'))} / {fmt_load(R.get('load_end'))} |\n")
    w("The machine is a 2-core VM shared with other engineers' builds, so absolute figures are "
      "noisy; each row gives the 1-minute load average when it was taken, and the comparisons "
      "are between series measured in the same run, minutes apart.\n")
    T = []  # (target, figure, met, limit)

    c = R.get("control")
    if c:
        w("## 1. Control latency\n")
        w("In-place `cpu` updates, each timed from sending the request until the new quota is "
          "readable in `cpu.cfs_quota_us` (read right after the answer, polled if not there yet). "
          "One client, one request at a time, keep-alive connection, loopback. HTTP: `PATCH "
          "/v1/objects/{id}?wait=true`, and Docker: `POST /containers/{id}/update` with `NanoCpus` "
          "over its unix socket on the same container, both sent by `bench/ctl.c`, a small C "
          "client, so that the figures are the servers' (rows `http-py`/`docker-py`: the same "
          "through Python's `http.client`, which adds ~0.2–0.3 ms of its own to each request); "
          "gRPC: `nodeagent.v1.Agent/Update` with `wait` through `bench/h2grpc.py`, a minimal "
          "HTTP/2 client in Python's standard library (so it carries that client's overhead too). The `stale` column counts answers after which the file did not yet "
          "hold the value (the time counted is then until it does; it should be 0: a container "
          "PATCH that meets the agent's own Docker sync in flight waits for it, since Docker's "
          "update writes its older value into the cgroup at a moment the agent cannot see).\n")
        d = c.get("docker/container")
        w("| series | n | p50 | p99 | max | stale | Docker p50 / p99 ÷ this | load |\n|---|---|---|---|---|---|---|---|")
        for k in ("http/process", "grpc/process", "http/container", "grpc/container", "docker/container",
                  "http-py/process", "http-py/container", "docker-py/container"):
            s = c.get(k)
            if not s:
                continue
            ratio = f"{d['p50'] / s['p50']:.0f}× / {d['p99'] / s['p99']:.0f}×" if d and k != "docker/container" else "1×"
            w(f"| {k} | {s['n']} | {us(s['p50'])} | {us(s['p99'])} | {us(s['max'])} | {s.get('stale', 0)} | {ratio} | {s.get('load', 0):.2f} |")
        w("")
        eq = c.get("earlier_quick")
        if eq:
            w(f"For comparison, {eq['when']} ({eq['n']:,} updates a series) gave "
              + "; ".join(f"{k} p50 {us(v[0])}, p99 {us(v[1])}" for k, v in eq["series"].items())
              + ". The tails move with the machine's load (1.7–3.5 then); the p50s, lower with the older "
              "binary at a higher load, suggest the newer binary adds ~0.15 ms to each update "
              "(not isolated here: the durable store's write of the change is the likely cause).\n")
        w("![control latency CDF](control-latency.svg)\n")
        for k in ("http/process", "http/container"):
            s = c.get(k)
            if s:
                g = c.get("grpc/" + k.split("/")[1])
                T.append((f"control p99 ≤ 1 ms over HTTP ({k.split('/')[1]})",
                          f"{us(s['p99'])} (load {s['load']:.1f}); gRPC in the same run {us(g['p99']) if g else '–'} "
                          f"(through a Python client)",
                          s["p99"] <= 1000, LIMIT_CONTROL))
        if d and c.get("http/container"):
            r = d["p99"] / c["http/container"]["p99"]
            r50 = d["p50"] / c["http/container"]["p50"]
            T.append(("control ≥ 20× lower than Docker's update API (container, HTTP)",
                      f"p50 {r50:.0f}×, p99 {r:.0f}×", r >= 20,
                      LIMIT_CONTROL))

    s = R.get("sampling")
    if s:
        w("## 2. Sampling cost\n")
        w(f"`cgroup` objects, each adopting one sleeping process, at one interval at a time; the "
          f"agent's CPU (its threads' run time summed from `/proc/<pid>/task/*/schedstat`, in ns; "
          f"utime + stime from `/proc/<pid>/stat` if larger: its 10 ms ticks alone are too coarse here) over a {s['window_s']:.0f} s "
          f"window, divided by the samples taken (from the `seq` of every tenth object's latest sample; the host's "
          f"1 s sample and the idle API are included, so this is an upper bound). "
          f"'net' subtracts the agent's idle CPU with no objects. RSS and threads from "
          f"`/proc/<pid>/status` at the end of the window. RSS grows until each object's ring of "
          f"samples is full (120 samples, delta-encoded, about 2.2 KiB an object): at 1 s that takes two "
          f"minutes, longer than the window (§3 waits for full rings); the rows run one after another "
          f"in one agent, so a later row also carries the earlier rows' freed but retained heap.\n")
        i = s.get("idle", {})
        w("| objects | interval | samples/s asked / taken | agent CPU (% of a core) | µs CPU / sample | net µs / sample | RSS | threads | load |\n|---|---|---|---|---|---|---|---|---|")
        w(f"| 0 | – (host 1 s) | 1 | {i.get('cpu_pct', 0):.3f}% | – | – | {i.get('rss_mib', 0):.1f} MiB | {i.get('threads')} | {i.get('load', 0):.2f} |")
        for r in s["rows"]:
            w(f"| {r['objects']} | {r['interval']} | {r['samples_per_s']:,} / {r.get('taken_per_s', float('nan')):,.0f} | {r['cpu_pct']:.2f}% | {r['us_per_sample']:.1f} | "
              f"{r['us_per_sample_net']:.1f} | {r['rss_mib']:.1f} MiB | {r['threads']} | {r['load']:.2f} |")
        w("")
        ds, ne = s.get("docker_stats"), s.get("node_exporter")
        w("Peers, same run:\n")
        w("| peer | figure | nodeagent's equivalent | ratio |\n|---|---|---|---|")
        cand = [r for r in s["rows"] if r["objects"] >= 100 and r["us_per_sample"] > 0]
        best = min(cand, key=lambda r: r["us_per_sample"]) if cand else None
        al = s.get("agent_latest")
        if ds and al:
            w(f"| Docker stats API, one-shot (`GET /containers/{{id}}/stats?stream=false&one-shot=true`) | "
              f"latest stats of one container: p50 {us(ds['p50'])}, p99 {us(ds['p99'])} (n={ds['n']}) | "
              f"latest sample of one object, `GET /v1/objects/{{id}}/metrics?limit=1` with {al['objects']} objects at 1 s: "
              f"p50 {us(al['p50'])}, p99 {us(al['p99'])} | {ds['p50'] / al['p50']:,.0f}× (p50) |")
        dss = s.get("docker_stats_spaced")
        if dss and al:
            w(f"| Docker stats API, one-shot, calls 2.5 s apart (its collector idle) | p50 {us(dss['p50'])}, "
              f"max {us(dss['max'])} (n={dss['n']}) | the same agent figure | {dss['p50'] / al['p50']:,.0f}× (p50) |")
        if ds and best:
            w(f"| (the same Docker figure) | | agent CPU per object sample: {best['us_per_sample']:.1f} µs "
              f"({best['objects']} @ {best['interval']}) | – |")
        if ne:
            host = i.get("host_sample_us")
            w(f"| node_exporter, CPU per scrape of host metrics (`/metrics`, {ne['bytes'] // 1024} KiB, n={ne['scrapes']}) | "
              f"{ne['cpu_us_per_scrape']:.0f} µs CPU, RSS {ne['rss_mib']:.1f} MiB, {ne['threads']} threads | "
              f"agent's whole idle CPU per second, i.e. per host sample (an upper bound) {host:.0f} µs | "
              f"{ne['cpu_us_per_scrape'] / host:.1f}× |" if host else "")
        w("")
        w("Docker's stats calls back to back each wait for its collector's next 1 s tick; a call "
          "that finds no collection running answers in milliseconds. Either way it is a request "
          "per container to the engine, where the agent has already read the sample.\n")
        r1000 = [r for r in s["rows"] if r["objects"] == max(x["objects"] for x in s["rows"])]
        per = [r for r in s["rows"] if r["objects"] >= 100]
        if per:
            worst = max(per, key=lambda r: r["us_per_sample_net"])
            T.append(("sampling ≤ 20 µs CPU per object sample (net of the idle agent; worst row with ≥ 100 objects)",
                      f"{worst['us_per_sample_net']:.1f} µs ({worst['objects']} @ {worst['interval']}, load {worst['load']:.1f}); "
                      f"best {min(r['us_per_sample_net'] for r in per):.1f} µs",
                      worst["us_per_sample_net"] <= 20, LIMIT_SAMPLING))
        for r in r1000:
            if r["objects"] >= 1000 and r["interval"] == "1s":
                T.append(("1,000 objects at 1 s ≤ 2% of one core", f"{r['cpu_pct']:.2f}% (load {r['load']:.1f})",
                          r["cpu_pct"] <= 2, "1,000 × the per-sample cost: 20 µs a sample is exactly 2%"))
                full = [x for x in s["rows"] if x["objects"] == r["objects"] and x["interval"] != "1s"]
                top = max([r["rss_mib"]] + [x["rss_mib"] for x in full])
                T.append(("RSS ≤ 32 MB (read as MiB) with 1,000 objects",
                          f"{r['rss_mib']:.1f} MiB at 1 s after 10 s (rings not full); {top:.1f} MiB with full rings "
                          f"(the 100 ms / 10 ms rows)", top <= 32, LIMIT_RING))
        if ne and i.get("host_sample_us"):
            rr = ne["cpu_us_per_scrape"] / i["host_sample_us"]
            T.append(("host metrics ≥ 20× less CPU per sample than node_exporter per scrape", f"{rr:.1f}×",
                      rr >= 20, LIMIT_HOST if rr < 20 else ""))
        th = [r["threads"] for r in s["rows"]] + [i.get("threads", 0)]
        T.append(("OS threads ≤ 8 (sampling runs)", f"{max(th)}", max(th) <= 8, ""))

    sc = R.get("scale")
    if sc and "threads" in sc:
        w("## 3. Scale\n")
        w(f"{sc['objects']:,} `cgroup` objects (one sleeping process each), all sampled at 1 s. API "
          f"latency with a keep-alive client, one request at a time, objects picked across the whole "
          f"set; `PATCH` is a `cpu` update with `wait=true`. Created through the API in "
          f"{sc['create_s']:.0f} s.\n")
        w("| figure | value |\n|---|---|")
        w(f"| OS threads, no objects → {sc['objects']:,} objects | {sc['threads_idle']} → {sc['threads']} |")
        w(f"| RSS | {sc['rss_mib']:.1f} MiB |")
        if sc.get("fds"):
            w(f"| open file descriptors (the agent raises its own RLIMIT_NOFILE, to {sc.get('nofile') or '?':,}) | {sc['fds']:,} |")
        w(f"| agent CPU while sampling all at 1 s (and serving the calls) | {sc['cpu_pct']:.1f}% of a core |")
        w(f"| `GET /v1/objects/{{id}}` p50 / p99 / max (n={sc['get']['n']}) | {us(sc['get']['p50'])} / {us(sc['get']['p99'])} / {us(sc['get']['max'])} |")
        w(f"| `PATCH` cpu, wait, p50 / p99 / max (n={sc['patch']['n']}) | {us(sc['patch']['p50'])} / {us(sc['patch']['p99'])} / {us(sc['patch']['max'])} |")
        w(f"| `GET /v1/objects` (all {sc['objects']:,}) | {sc['list_all_ms']:.0f} ms |")
        w(f"| SIGTERM → exit with {sc['objects']:,} objects | {sc['shutdown_s'] * 1000:.0f} ms |")
        w(f"| load | {sc['load']:.2f} |")
        fu = sc.get("full")
        if fu:
            w(f"| after {fu['after_s']:.0f} s (every ring full): RSS | {fu['rss_mib']:.1f} MiB |")
            w(f"| after {fu['after_s']:.0f} s: threads | {fu['threads']} |")
            w(f"| after {fu['after_s']:.0f} s: agent CPU | {fu['cpu_pct']:.1f}% of a core |")
            w(f"| after {fu['after_s']:.0f} s: `PATCH` p50 / p99 / max (n={fu['patch']['n']}) | {us(fu['patch']['p50'])} / {us(fu['patch']['p99'])} / {us(fu['patch']['max'])} |")
            w(f"| after {fu['after_s']:.0f} s: load | {fu['load']:.2f} |")
        if c and c.get("http/process"):
            w(f"\nPeer, same run: the same PATCH with one object (§1 http/process) p99 {us(c['http/process']['p99'])}; "
              f"Docker's update API p99 {us(c.get('docker/container', {}).get('p99'))}.")
        w("")
        T.append((f"OS threads ≤ 8 with {sc['objects']:,} objects (no growth)", f"{sc['threads_idle']} → {sc['threads']}",
                  sc["threads"] <= 8, ""))
        if sc["objects"] >= 10000:
            top = max(sc["rss_mib"], (fu or {}).get("rss_mib", 0))
            T.append(("RSS ≤ 128 MB (read as MiB) with 10,000 objects",
                      f"{top:.1f} MiB" + (" (rings full)" if fu else " (rings not yet full)"),
                      top <= 128, LIMIT_RING))
        else:
            idle = (R.get("sampling") or {}).get("idle", {}).get("rss_mib", 14)
            per = (sc["rss_mib"] - idle) / sc["objects"]
            ext = idle + per * 10000
            T.append(("RSS ≤ 128 MB with 10,000 objects",
                      f"{sc['rss_mib']:.1f} MiB at {sc['objects']:,}; {per * 1024:.0f} KiB an object, "
                      f"so about {ext:.0f} MiB at 10,000 (extrapolated)", None, LIMIT_RING))
        T.append((f"API p99 with {sc['objects']:,} objects sampled at 1 s (PATCH, ≤ 1 ms)", us(sc["patch"]["p99"]),
                  sc["patch"]["p99"] <= 1000, LIMIT_SCALE if sc["objects"] >= 10000 else LIMIT_CONTROL))

    rp = R.get("reporting")
    if rp:
        w("## 4. Reporting\n")
        w("Throughput: 100 objects push every 10 ms to one sink while its upstream is not running, "
          "so the records wait in the spool; then the upstream starts and the agent drains the "
          "backlog. Samples/s = records acknowledged ÷ time from the first acknowledgement to an "
          "empty spool (`GET /v1/sinks`). gRPC goes to the reference receiver (`nodeagent sink`, "
          "which writes each record as a JSON line); NATS to `nats-server -js` (JetStream, file "
          "storage), both on loopback. Latency: the same 100 objects push every 10 ms "
          "(10,000 samples/s nominal) to the running receiver; the time from the sample's "
          "timestamp until its line is read back from the receiver's output file.\n")
        w("| upstream | records | samples/s | agent RSS | load |\n|---|---|---|---|---|")
        for k in ("grpc", "nats"):
            x = rp.get(k)
            if x:
                w(f"| {k} | {x['records']:,} | {x['samples_per_s']:,.0f} | {x['agent_rss_mib']:.1f} MiB | {x['load']:.2f} |")
        lt = rp.get("latency")
        if lt and lt.get("n"):
            w(f"\nSample → receiver at {lt['rate_per_s']:,.0f} samples/s measured (n={lt['n']:,}): "
              f"p50 {lt['p50']:.1f} ms, p99 {lt['p99']:.1f} ms, max {lt['max']:.1f} ms (load {lt['load']:.2f}).\n")
            T.append(("p99 sample → receiver ≤ 20 ms at 10,000/s", f"{lt['p99']:.1f} ms (load {lt['load']:.1f})",
                      lt["p99"] <= 20,
                      "not isolated in this run: the in-process bench (`cargo bench -p nodeagent-engine "
                      "--bench upstream`) gives p99 ~10 ms (batch_age 5 ms), so the rest is the "
                      "end-to-end path on 2 loaded cores: the agent sampling and pushing 100 objects "
                      "every 10 ms, the receiver's JSON-line file writes, and the harness tailing that file"))
        if rp.get("grpc"):
            g = rp["grpc"]["samples_per_s"]
            T.append(("reporting ≥ 200,000 samples/s to the gRPC receiver", f"{g:,.0f}/s", g >= 200000, LIMIT_REPORT))
        if rp.get("grpc") and rp.get("nats"):
            w(f"gRPC ÷ NATS throughput: {rp['grpc']['samples_per_s'] / rp['nats']['samples_per_s']:.1f}×.\n")

    st = R.get("startup")
    if st:
        w("## 5. Start-up and shutdown\n")
        w("Start: from spawning the process until `GET /readyz` answers 200 (polled every ms). Stop: "
          "SIGTERM until the process has exited. With objects: the agent is started, the objects "
          "are created, the agent is stopped and started again on the same state dir; the "
          "'restored' column says how many objects it came back with from its durable store "
          "(issue 5), the host object included (1: nothing restored, a binary without the store); "
          "the start timed is that second start. Peer: node_exporter, from spawn until "
          "its first HTTP answer, and SIGTERM until exit.\n")
        w("| process | objects | start → ready (each run) | SIGTERM → exit (each run) | restored | load |\n|---|---|---|---|---|---|")
        for r in st["runs"]:
            rest = ", ".join(str(p["restored"]) for p in r["populated"]) or "–"
            w(f"| nodeagent | {r['objects']:,} | {', '.join(f'{x:.0f} ms' for x in r['ready_ms'])} | "
              f"{', '.join(f'{x:.0f} ms' for x in r['stop_ms'])} | {rest} | {r['load']:.2f} |")
        for e in st.get("earlier", []):
            w(f"| nodeagent, {e['label']} | {e['objects']:,} | {', '.join(f'{x:.0f} ms' for x in e['ready_ms'])} | "
              f"{', '.join(f'{x:.0f} ms' for x in e['stop_ms'])} | {e['restored']} | {e['load']:.2f} |")
        ne = st.get("node_exporter")
        if ne:
            w(f"| node_exporter | – | {', '.join(f'{x:.0f} ms' for x in ne['ready_ms'])} | "
              f"{', '.join(f'{x:.0f} ms' for x in ne['stop_ms'])} | – | {ne['load']:.2f} |")
        w("")

    qq = R.get("quick_quiet")
    if qq:
        w("## A quick run at low load\n")
        w(f"`bash bench/run.sh --quick` at {qq['when']} (binary sha256 `{qq['sha']}…`, with the durable "
          f"store), while the machine was nearly idle (load {qq['load']}). Reduced counts, so tails "
          f"are less certain; figures that bear on the targets:\n")
        w("| figure | value | load |\n|---|---|---|")
        for k, v, l in qq["rows"]:
            w(f"| {k} | {v} | {l} |")
        w("")
    w("## Before and after the profiling work\n")
    w("What issue 6's profiling changed, each figure measured the same way before and after "
      "(before: this harness's first full run and the A/B runs noted in `docs/NOTES.md`; after: "
      "this file). Numbers from a loaded 2-core VM: read the ratios, not the digits.\n")
    w("| figure | before | after | what changed |\n|---|---|---|---|")
    for row in BEFORE_AFTER:
        w("| " + " | ".join(row) + " |")
    w("")
    w("## Targets\n")
    w("| target | measured | | what limits it |\n|---|---|---|---|")
    for t, fig, ok, lim in T:
        w(f"| {t} | {fig} | {mark(ok)} | {lim if not ok else ''} |")
    w("")
    if qq:
        w("In the quick run at low load above, two of the missed targets are met: host metrics "
          "20.7× (≥ 20×) and sample → receiver p99 14.2 ms (≤ 20 ms); the HTTP control p99 there "
          "is 1.74 ms (n=500). The sections carried over ran at load 3–6.\n")
    if R.get("errors"):
        w("## Errors in this run\n")
        for k, v in R["errors"].items():
            w(f"- {k}: `{v}`")
        w("")
    w("## Criterion benchmarks of the hot paths\n")
    w("`cargo bench -p nodeagent-drivers --bench cgroup_read` (the cgroup sample read, v1 and v2, "
      "and `apply` of a CPU change), `cargo bench -p nodeagent-core --bench update` (the update "
      "fast path in process: a PATCH through the core's handle and loop into the cgroup file, "
      "beside the bare file write), `cargo bench -p nodeagent-engine --bench series` (the "
      "per-object ring), `cargo bench -p nodeagent-engine --bench encode` (sample encoding: the JSON record, the upstream protobuf batch and the "
      "spool frame), `cargo bench -p nodeagent-engine --bench upstream` (spool and gRPC "
      "throughput in-process), `cargo bench -p nodeagent-api --bench guard` (auth guard).\n")
    crit = os.path.join(os.path.dirname(os.path.abspath(__file__)), "criterion.txt")
    if os.path.exists(crit):
        w("Last results (`bench/criterion.txt`, written by `bash bench/run.sh --criterion`; each "
          "line: benchmark, then criterion's [low estimate, high estimate] of the time per "
          "iteration):\n")
        w("```")
        for line in open(crit):
            if line.strip():
                w(line.rstrip())
        w("```\n")
    return "\n".join(L) + "\n"


BEFORE_AFTER = [
    ("`PATCH` cpu through the core in process (criterion `update/process_cpu`)", "202 µs", "74–96 µs",
     "store commits moved to a writer thread; dirty tracking instead of diffing every object per "
     "turn; `EventLog::since` by binary search instead of a scan"),
    ("HTTP `PATCH` of a container until the quota is in the file, p99", "4.06 ms (Python client)",
     "1.19 ms (C client), 1.24 ms (Python client)",
     "a PATCH that meets the agent's Docker sync waits for it instead of racing Docker's own "
     "cgroup write; syncs at most every 500 ms of a steady stream (was 100 ms)"),
    ("answers after which the container's file still held an older value", "2–4 per 1,000", "0",
     "the same"),
    ("agent CPU per cgroup sample, 1,000 objects at 10 ms / 100 ms (A/B, same load)", "18.1 / 17.3 µs",
     "15.0 / 14.4 µs", "memory limit re-read at most every 900 ms unless the agent wrote one; the "
     "OOM file skipped while the host's `oom_kill` count stands still"),
    ("one host sample (criterion `host_sample`)", "107–142 µs", "67–75 µs",
     "host procfs files kept open and re-read with `pread` (8 syscalls instead of 36)"),
    ("RSS, 1,000 objects, full rings", "45 MiB", "28.6 MiB",
     "delta-encoded ring (13.3 KB → 2.2 KB an object); boxed registry entries; no second copy "
     "of every object for the store diff"),
    ("10,000 objects", "not runnable: EMFILE past ~2,400 objects", "116 MiB, 7 threads",
     "open-file budget (objects past it open their files per read); the agent raises "
     "RLIMIT_NOFILE itself; redb cache capped at 2 MiB; events kept as JSON; adopted pids' "
     "origins in one string"),
    ("sample → receiver at 10,000/s, p50 / p99", "8 / 14 ms (35 ms at load 6)", "1.4 / 4.2 ms",
     "grpc `batch_age` default 0; the reports of one pass sent as one batch right after each "
     "object's sample; the live tail read on the runtime; the receiver writes inline"),
    ("gRPC backlog drain", "287,000–364,000 /s", "500,000 /s", "the same"),
]

LIMIT_CONTROL = ("the agent's own Docker sync: after PATCHes settle (5 ms, or 500 ms into a steady "
                 "stream) the agent tells Docker, and each `docker update` costs dockerd and runc "
                 "10–30 ms of CPU on the same 2 cores the client and the agent use; a PATCH that "
                 "meets a sync in flight also waits for it (so that Docker cannot write an older "
                 "value after the answer). The process rows, with no sync, have p99 0.7 ms")
LIMIT_SCALE = ("this sandbox's hard RLIMIT_NOFILE is 20,000 and cannot be raised (no CAP_SYS_RESOURCE), "
               "so counter files stay open for about 2,250 objects and the other 7,750 open their "
               "files at every sample: the collector then takes ~87% of one of the 2 cores (see "
               "'agent CPU' above) and the API's tail waits for a CPU. Where the agent may raise its "
               "limit (it asks for 262,144), every object keeps its files open: ~15 µs a sample, "
               "~15% of a core for 10,000 objects at 1 s")
LIMIT_RING = ("each object keeps a ring of its last 120 samples (delta-encoded, ~2.2 KB an object), "
              "its registry entry and its open counter files")
LIMIT_SAMPLING = ("perf: ~85% of it is the kernel's read path for the 5–7 cgroupfs files a sample "
                  "reads (criterion `stat_reader_read/v1_real_sample`: ~7 µs); the worst row, 100 "
                  "objects at 1 s, also carries the per-second fixed work (the adopted-exit check, "
                  "timers) over only 100 samples: 1,000 objects at 1 s cost 18 µs a sample")
LIMIT_HOST = ("the agent's figure is its whole idle CPU per second (API, heartbeat, timers and "
              "the host sample), an upper bound; node_exporter's scrape is a fixed cost per scrape")
LIMIT_REPORT = ("the receiver (JSON line per record, on the same 2 cores) and the agent's sink "
                "share two cores; see `cargo bench --bench upstream` for the in-process figure")


APPENDED = "<!-- sections below are written by other harnesses; report.py keeps them -->"


def fmt_load(x):
    if not x:
        return "?"
    return " ".join(f"{v:.2f}" for v in x)


if __name__ == "__main__":
    import sys
    sys.dont_write_bytecode = True
    here = os.path.dirname(os.path.abspath(__file__))
    R = json.load(open(os.path.join(here, "results.json")))
    import chart
    if "control" in R:
        chart.write(os.path.join(here, "control-latency.svg"), R["control"])
    # The sections other harnesses wrote (console_cost.py, ab.py, fleet.py) follow this
    # marker; a re-render keeps them.
    out = os.path.join(here, "RESULTS.md")
    kept = ""
    if os.path.exists(out):
        old = open(out).read()
        if APPENDED in old:
            kept = old[old.index(APPENDED):]
    open(out, "w").write(render(R).rstrip("\n") + "\n\n" + (kept or APPENDED + "\n"))
