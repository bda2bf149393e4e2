#!/usr/bin/env python3
"""Sample-to-receiver latency of the grpc sink at a steady rate, and optionally backlog drain.

    sudo python3 bench/report_latency.py                     # 100 objects x 10 ms, 20 s, once
    sudo python3 bench/report_latency.py --seconds 10 --repeat 3
    sudo python3 bench/report_latency.py --sink-opt batch_age='"5ms"'   # extra [[sink]] lines
    sudo python3 bench/report_latency.py --drain 10          # also: 10 s of backlog, then drain
    sudo python3 bench/report_latency.py --bin target/release/nodeagent --poll  # tail like run.py

It is the steady-rate half of `bench/run.py`'s `bench_reporting` (same config: a grpc sink `up`
with spool_fsync 1s, the reference receiver `nodeagent sink`, N cgroup objects of sleeping
processes sampled every --interval and pushed to `up` every --interval), measured the same way:
the receiver's JSON-lines file is tailed and each line's latency is `time of read - sample.ts`.
Differences from run.py, so that less of the tailer's own delay is in the figure: the tailer
wakes on inotify (IN_MODIFY) instead of polling every 0.5 ms (`--poll` polls), and it finds the
sample time with a byte search instead of json.loads + strptime per line (which took a good part
of a core at 10,000 lines/s: with the CPUs busy, run.py's tailer falls behind and reports its own
lag, hundreds of ms with 4 busy loops on this 2-core VM where this one measures 12-14 ms); it prints
p50/p90/p99/p99.9/max, the rate and the load average, and splits the latency into the spread of
sample times within one collector pass (how long the first sample of a pass waits for the last)
and the latency of the newest sample of each pass (the path after sampling: sink thread, spool,
sender, loopback, receiver, tailer).

Needs root (cgroups). Uses 127.0.0.1 ports, a private state dir, and the cgroup parent
/nodeagent-bench-<pid> (run.py's helpers); kills what it started and removes what it created.
"""
import argparse, ctypes, ctypes.util, json, os, select, shutil, socket
import subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import run  # noqa: E402  (the harness's helpers: agent, processes, clean-up)
from run import TMPDIRS, cleanup, free_port, pct, sample_ts, spawn  # noqa: E402


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


class Agent(run.Agent):
    """run.py's agent, started at once, with the status of one sink."""

    def __init__(self, binary, config, state, nice=0):
        run.BIN = binary
        super().__init__(state=state, config=config, nice=nice)
        self.start()

    def sink(self, name):
        return run._sinks(self)[name]


class Inotify:
    """IN_MODIFY on one file, through libc (standard library only)."""
    IN_MODIFY = 0x2

    def __init__(self, path):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0 or libc.inotify_add_watch(self.fd, path.encode(), self.IN_MODIFY) < 0:
            raise OSError(ctypes.get_errno(), "inotify")
        self.poll = select.poll()
        self.poll.register(self.fd, select.POLLIN)

    def wait(self, timeout_ms):
        if self.poll.poll(timeout_ms):
            try:
                os.read(self.fd, 65536)
            except BlockingIOError:
                pass

    def close(self):
        os.close(self.fd)


def tail_latency(out, seconds, poll):
    """Reads lines appended to `out` for `seconds`; returns the latencies in ms, and per collector
    pass (a run of lines whose sample times lie within 8 ms of the run's first) the spread of its
    sample times and the latency of its newest sample (the path after sampling), in ms."""
    lat, passes = [], []
    group = None  # [first ts, newest ts, read time of the newest]
    ino = None if poll else Inotify(out)
    start = time.time()
    with open(out, "rb") as f:
        f.seek(0, 2)
        buf = b""
        while time.time() - start < seconds:
            chunk = f.read()
            now = time.time()
            if not chunk:
                if ino:
                    ino.wait(50)
                else:
                    time.sleep(0.0005)
                continue
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                t = sample_ts(line)
                if t is None:
                    continue
                lat.append((now - t) * 1e3)
                if group and abs(t - group[0]) < 0.008:
                    if t >= group[1]:
                        group[1], group[2] = t, now
                else:
                    if group:
                        passes.append(((group[1] - group[0]) * 1e3, (group[2] - group[1]) * 1e3))
                    group = [t, t, now]
    if ino:
        ino.close()
    return lat, passes


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "nodeagent"))
    ap.add_argument("--objects", type=int, default=100)
    ap.add_argument("--interval", default="10ms", help="sampling and push interval")
    ap.add_argument("--seconds", type=float, default=20.0, help="measured time per repetition")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--poll", action="store_true", help="poll the file every 0.5 ms as run.py does")
    ap.add_argument("--sink-opt", action="append", default=[], metavar="KEY=TOML",
                    help="extra option of the grpc sink, e.g. batch_age='\"1ms\"'")
    ap.add_argument("--drain", type=float, default=0.0, metavar="SECONDS",
                    help="first build this much backlog with the receiver down, and time its drain")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    ap.add_argument("--nice-agent", type=int, default=0, metavar="N",
                    help="run the agent at this nice value (diagnosis: e.g. -10)")
    ap.add_argument("--nice-measure", type=int, default=0, metavar="N",
                    help="run the receiver and this tailer at this nice value (diagnosis: e.g. -10)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (cgroups)")
    if not os.access(a.bin, os.X_OK):
        sys.exit(f"{a.bin} missing: cargo build --release")
    work = tempfile.mkdtemp(prefix="nodeagent-latprobe-")
    TMPDIRS.append(work)
    # A private copy: other builds may replace the binary during a run.
    binary = os.path.join(work, "nodeagent")
    shutil.copy2(a.bin, binary)
    gport = free_port()
    cfg = os.path.join(work, "agent.toml")
    with open(cfg, "w") as f:
        f.write(f'[[sink]]\nname = "up"\ntype = "grpc"\naddress = "http://127.0.0.1:{gport}"\n'
                f'spool_fsync = "1s"\n' + "".join(o + "\n" for o in a.sink_opt))
    out = os.path.join(work, "received.jsonl")
    state = os.path.join(work, "state")
    os.makedirs(state)

    def start_receiver():
        p = spawn([binary, "sink", "--listen", f"127.0.0.1:{gport}", "--out", out, "--log-level", "warn"],
                  stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "sink.log"), "ab"),
                  preexec_fn=lambda: os.nice(a.nice_measure))
        t0 = time.time()
        while time.time() - t0 < 20:
            try:
                socket.create_connection(("127.0.0.1", gport), timeout=1).close()
                return p
            except OSError:
                time.sleep(0.01)
        sys.exit("receiver not listening")

    results = {"load_start": loadavg(), "runs": []}
    recv = None
    try:
        ag = Agent(binary, cfg, state, a.nice_agent)
        sleepers = [spawn(["/bin/sleep", "86400"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    for _ in range(a.objects)]
        ids = []
        for i, p in enumerate(sleepers):
            o = ag.json("POST", "/v1/objects?wait=true", {
                "name": f"lp-{i}", "kind": "cgroup", "cgroup": {"pids": [p.pid]},
                "collect": {"interval": a.interval}})
            ids.append(o["id"])

        def push(on):
            for i in ids:
                if on:
                    ag.call("POST", f"/v1/objects/{i}/push-on", {"sink": "up", "interval": a.interval})
                else:
                    ag.call("POST", f"/v1/objects/{i}/push-off", {"sink": "up"}, ok=None)

        if a.drain > 0:
            push(True)
            time.sleep(a.drain)
            push(False)
            time.sleep(0.5)
            s0 = ag.sink("up")
            a0 = s0["acked"]
            recv = start_receiver()
            t_zero, last = time.perf_counter(), None
            t_end = time.time() + 300
            while time.time() < t_end:
                before = time.perf_counter()
                s = ag.sink("up")
                now = time.perf_counter()
                if s["acked"] == a0:
                    t_zero = before
                last = (now, s["acked"])
                if s["acked"] > a0 and s["queue_depth"] == 0 and s["spool_records"] == 0:
                    break
                time.sleep(0.001)
            rate = (last[1] - a0) / (last[0] - t_zero)
            results["drain"] = {"records": last[1] - a0, "samples_per_s": rate, "load": loadavg()}
            print(f"drain: {last[1] - a0} records at {rate:,.0f} samples/s (load {loadavg()})", flush=True)
        if recv is None:
            recv = start_receiver()
            open(out, "ab").close()
        push(True)
        if a.nice_measure:
            os.nice(a.nice_measure)
        time.sleep(1.5)  # connect, register, settle
        for rep in range(a.repeat):
            s0 = ag.sink("up")
            l0 = loadavg()
            lat, passes = tail_latency(out, a.seconds, a.poll)
            s1 = ag.sink("up")
            lat.sort()
            spread = sorted(p[0] for p in passes)
            newest = sorted(p[1] for p in passes)
            r = {"n": len(lat), "rate_per_s": len(lat) / a.seconds, "p50": pct(lat, 50), "p90": pct(lat, 90),
                 "p99": pct(lat, 99), "p99.9": pct(lat, 99.9), "max": lat[-1] if lat else float("nan"),
                 "load_before": l0, "load_after": loadavg(),
                 "sent": s1["sent"] - s0["sent"], "dropped": s1["dropped"] - s0["dropped"],
                 "retried": s1["retried"] - s0["retried"], "passes": len(passes),
                 "pass_spread_p50": pct(spread, 50), "pass_spread_p99": pct(spread, 99),
                 "newest_p50": pct(newest, 50), "newest_p99": pct(newest, 99)}
            results["runs"].append(r)
            print(f"run {rep + 1}: n={r['n']} rate={r['rate_per_s']:.0f}/s  p50={r['p50']:.2f}ms "
                  f"p90={r['p90']:.2f}ms p99={r['p99']:.2f}ms p99.9={r['p99.9']:.2f}ms max={r['max']:.2f}ms  "
                  f"load {r['load_before']} -> {r['load_after']}  dropped={r['dropped']} retried={r['retried']}\n"
                  f"       {r['passes']} collector passes: sample-time spread p50={r['pass_spread_p50']:.2f}ms "
                  f"p99={r['pass_spread_p99']:.2f}ms; newest sample of a pass p50={r['newest_p50']:.2f}ms "
                  f"p99={r['newest_p99']:.2f}ms",
                  flush=True)
        push(False)
        for i in ids:
            ag.call("DELETE", f"/v1/objects/{i}?wait=true", ok=None)
        ag.stop()
    finally:
        if a.json:
            with open(a.json, "w") as f:
                json.dump(results, f, indent=1)
        cleanup()


if __name__ == "__main__":
    main()
