#!/usr/bin/env python3
"""Quick figures for nodeagent alone (no peer yet; the benchmark issue adds the side-by-side
harness): in-place update latency over HTTP on loopback, and the agent's CPU, RSS and threads
while it samples N objects.

    cargo build --release && sudo python3 bench/quick.py [--updates 2000] [--objects 100]

Only loopback addresses and a private cgroup parent are used; everything created is deleted.
"""
import argparse, http.client, json, os, socket, statistics, subprocess, sys, tempfile, time

BIN = os.path.join(os.path.dirname(__file__), "..", "target", "release", "nodeagent")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def proc_stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    ticks = int(rest[11]) + int(rest[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


def status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return line.split()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--updates", type=int, default=2000)
    ap.add_argument("--objects", type=int, default=100)
    ap.add_argument("--interval", default="100ms")
    ap.add_argument("--seconds", type=float, default=10)
    a = ap.parse_args()
    port = free_port()
    state = tempfile.mkdtemp(prefix="nodeagent-bench-")
    parent = f"/nodeagent-bench-{os.getpid()}"
    agent = subprocess.Popen(
        [BIN, "run", "--listen", f"127.0.0.1:{port}", "--state-dir", state,
         "--cgroup-parent", parent, "--log-level", "warn"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    c = None
    try:
        for _ in range(200):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/readyz")
                if c.getresponse().read() is not None:
                    break
            except OSError:
                time.sleep(0.05)

        # TCP needs the bearer token the agent wrote on start (issue 7).
        with open(os.path.join(state, "token")) as f:
            auth = "Bearer " + f.read().strip()

        def call(method, path, body=None):
            c.request(method, path, body=json.dumps(body) if body is not None else None,
                      headers={"Content-Type": "application/json", "Authorization": auth})
            r = c.getresponse()
            return r.status, r.read()

        st, body = call("POST", "/v1/objects?wait=true", {
            "name": "bench-target", "kind": "process",
            "process": {"command": ["/bin/sleep", "3600"]}, "resources": {"cpu": 1}})
        assert st == 201, body
        obj = json.loads(body)
        with open(f"/proc/{obj['pid']}/cgroup") as f:
            cpu_path = [l.split(":")[2].strip() for l in f if l.split(":")[1] == "cpu"][0]
        quota = f"/sys/fs/cgroup/cpu{cpu_path}/cpu.cfs_quota_us"
        lat = []
        for i in range(a.updates):
            cpu = 0.25 if i % 2 else 0.5
            t0 = time.perf_counter()
            st, body = call("PATCH", f"/v1/objects/{obj['id']}?wait=true", {"resources": {"cpu": cpu}})
            with open(quota) as f:
                got = int(f.read())
            t1 = time.perf_counter()
            assert st == 200 and got == int(cpu * 100000), (st, body, got)
            lat.append((t1 - t0) * 1e6)
        lat.sort()
        q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
        print(f"update over HTTP (send → quota readable), n={len(lat)}: "
              f"p50 {q(0.5):.0f} µs, p99 {q(0.99):.0f} µs, max {lat[-1]:.0f} µs")

        # Sampling cost: N sleeping processes adopted as cgroup objects at one interval.
        sleepers = [subprocess.Popen(["/bin/sleep", "3600"]) for _ in range(a.objects)]
        for i, p in enumerate(sleepers):
            st, body = call("POST", "/v1/objects?wait=true", {
                "name": f"bench-{i}", "kind": "cgroup", "cgroup": {"pids": [p.pid]},
                "collect": {"interval": a.interval}})
            assert st == 201, body
        time.sleep(1)
        c0, t0 = proc_stat(agent.pid), time.time()
        time.sleep(a.seconds)
        c1, t1 = proc_stat(agent.pid), time.time()
        ms = int(a.interval.rstrip("ms")) if a.interval.endswith("ms") else 1000 * int(a.interval.rstrip("s"))
        samples = a.objects * (t1 - t0) * 1000 / ms + (t1 - t0)  # + host at 1 s
        cpu = c1 - c0
        print(f"sampling {a.objects} objects at {a.interval}: agent CPU {100 * cpu / (t1 - t0):.2f}% of one core, "
              f"{1e6 * cpu / samples:.1f} µs per sample (incl. the idle API), "
              f"RSS {int(status(agent.pid, 'VmRSS')) / 1024:.1f} MiB, threads {status(agent.pid, 'Threads')}")
        for i in range(a.objects):
            call("DELETE", f"/v1/objects/bench-{i}?wait=true")
        for p in sleepers:
            p.kill()
            p.wait()
        call("DELETE", f"/v1/objects/{obj['id']}?wait=true")
    finally:
        agent.terminate()
        agent.wait(timeout=10)
        for ctrl in os.listdir("/sys/fs/cgroup"):
            d = f"/sys/fs/cgroup/{ctrl}{parent}"
            if os.path.isdir(d):
                try:
                    os.rmdir(d)
                except OSError:
                    pass


if __name__ == "__main__":
    sys.exit(main())
