#!/usr/bin/env python3
"""What live views cost the agent (issue 19): its extra CPU with nobody listening, with raw SSE
sample-stream listeners, with one web console open, and with one `nodeagent top`.

    sudo python3 bench/console_cost.py                    # 100 objects at 100 ms, 10 s windows
    sudo python3 bench/console_cost.py --objects 100 --interval 100ms --seconds 20
    sudo python3 bench/console_cost.py --bin /path/to/release/nodeagent --skip-browser

One release agent (run.py's helpers: private state dir, loopback port, cgroup parent
/nodeagent-bench-<pid>) with N `cgroup` objects adopting sleeping processes. Each row measures the
agent's CPU (its threads' schedstat run time) over a window and subtracts the idle row (same
agent, same objects, nobody listening). Listeners run in this process (Python threads reading
raw HTTP) or as child processes (Chromium through playwright-core for the console, tmux for
`top`); their own CPU is not the agent's and is not counted.

Rows:
  idle                      nobody listening
  all-stream x1             one /v1/metrics/stream?every=1s (what `top` and the console use)
  object-stream x1/x10/x100 /v1/objects/{id}/metrics/stream on 1, 10, 100 objects (each sample)
  console: objects view     headless Chromium on /ui/#/objects (100 rows, sparklines, live)
  console: object view      headless Chromium on one object's view (its own stream + events)
  top                       `nodeagent top --interval 1s` in a tmux session of its own

Needs root, cgroup v1; the browser rows need /usr/bin/chromium, node and playwright-core in
/var/cache/nodeagent-test (crates/nodeagent/tests/e2e_browser.rs installs it); the top row needs
tmux. Everything it starts is stopped, and everything it creates removed, at the end.
"""
import argparse, http.client, json, os, subprocess, sys, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True
import run  # noqa: E402
from run import cleanup, cpu_seconds, spawn, sleepers  # noqa: E402

PLAYWRIGHT = "/var/cache/nodeagent-test/playwright-core-1.65.2/node_modules/playwright-core"


class Listener(threading.Thread):
    """One SSE stream read as fast as it comes; counts `data:` lines."""

    def __init__(self, port, auth, path):
        super().__init__(daemon=True)
        self.port, self.auth, self.path = port, auth, path
        self.events = 0
        self.stop = False

    def run(self):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        c.request("GET", self.path, headers={"Authorization": self.auth, "Accept": "text/event-stream"})
        r = c.getresponse()
        if r.status != 200:
            raise RuntimeError(f"{self.path}: {r.status}")
        while not self.stop:
            chunk = r.read1(65536)
            if not chunk:
                break
            self.events += chunk.count(b"\ndata:") + chunk.startswith(b"data:")
        c.close()


def window(ag, seconds):
    c0, t0 = cpu_seconds(ag.pid), time.perf_counter()
    time.sleep(seconds)
    return (cpu_seconds(ag.pid) - c0) / (time.perf_counter() - t0)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--objects", type=int, default=100)
    p.add_argument("--interval", default="100ms")
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--bin", default=run.BIN)
    p.add_argument("--skip-browser", action="store_true")
    a = p.parse_args()
    run.BIN = a.bin
    rows = []
    ag = run.Agent().start()
    try:
        ids = ag.create_cgroups([s.pid for s in sleepers(a.objects)], a.interval)
        time.sleep(3)
        idle = window(ag, a.seconds)
        rows.append(("idle (nobody listening)", idle, None))

        def listeners(paths, label):
            ls = [Listener(ag.port, ag.auth, path) for path in paths]
            for l in ls:
                l.start()
            time.sleep(1)
            e0 = sum(l.events for l in ls)
            cpu = window(ag, a.seconds)
            ev = (sum(l.events for l in ls) - e0) / a.seconds
            for l in ls:
                l.stop = True
            rows.append((label, cpu, ev))
            time.sleep(1.5)

        listeners(["/v1/metrics/stream?every=1s"], "all-stream ×1 (every=1s)")
        listeners([f"/v1/metrics/stream?every={a.interval}"], f"all-stream ×1 (every={a.interval})")
        for n in (1, 10, 100):
            if n <= len(ids):
                listeners([f"/v1/objects/{i}/metrics/stream" for i in ids[:n]], f"object-stream ×{n}")

        if not a.skip_browser:
            script = os.path.join(HERE, "console_open.mjs")
            for label, view in (("console: objects view", "#/objects"), ("console: object view", f"#/objects/{ids[0]}")):
                ag.connect()  # the keep-alive connection may have timed out during a window
                code = ag.json("POST", "/v1/console/codes", {})
                env = dict(os.environ, PLAYWRIGHT_CORE=PLAYWRIGHT, LOGIN_URL=f"http://127.0.0.1:{ag.port}{code['path']}",
                           VIEW=view, SECONDS=str(a.seconds + 8))
                b = spawn(["node", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                line = b.stdout.readline().decode().strip()  # "ready" once the view is live
                if line != "ready":
                    raise RuntimeError(f"console_open.mjs: {line} {b.stdout.read().decode()[:2000]}")
                time.sleep(2)
                rows.append((label, window(ag, a.seconds), None))
                b.wait(timeout=60)
                time.sleep(1.5)

        sock = f"nodeagent-bench-top-{os.getpid()}"
        subprocess.run(["tmux", "-L", sock, "new-session", "-d", "-s", "top", "-x", "160", "-y", "50",
                        f"{a.bin} --state-dir {ag.state} top --interval 1s"], check=True)
        try:
            time.sleep(3)
            rows.append(("top (--interval 1s)", window(ag, a.seconds), None))
        finally:
            subprocess.run(["tmux", "-L", sock, "kill-server"], stderr=subprocess.DEVNULL)
        ag.connect()
        ag.delete_all(ids)
    finally:
        ag.stop()
        cleanup()
    load = open("/proc/loadavg").read().split()[:3]
    print(f"\n{a.objects} cgroup objects at {a.interval}, {a.seconds:g} s windows, load {' '.join(load)}\n")
    print("| listeners | agent CPU (% of a core) | extra over idle | events/s delivered |")
    print("|---|---|---|---|")
    for label, cpu, ev in rows:
        extra = "–" if label.startswith("idle") else f"{100 * (cpu - idle):+.2f} pp"
        print(f"| {label} | {100 * cpu:.2f}% | {extra} | {'–' if ev is None else f'{ev:.0f}'} |")


if __name__ == "__main__":
    main()
