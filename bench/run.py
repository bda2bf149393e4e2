#!/usr/bin/env python3
"""nodeagent beside its peers: control latency, sampling cost, scale, reporting, start-up.

    sudo python3 bench/run.py            # the full run (about 15 minutes)
    sudo python3 bench/run.py --quick    # reduced counts, a smoke run (about 3 minutes)
    sudo python3 bench/run.py --only control,sampling   # some of: control sampling scale reporting startup

(`bash bench/run.sh [--quick]` does the same after `cargo build --release`.)

It builds nothing itself: it runs target/release/nodeagent. It needs root, cgroup v1, a running
dockerd with the image busybox:local (scripts/test.sh sets both up), nats-server and
prometheus-node-exporter (bench/run.sh installs them). Python 3 standard library only; the gRPC
client is a minimal HTTP/2 client in bench/h2grpc.py.

It writes bench/RESULTS.md (machine, tables, targets) and bench/control-latency.svg, and keeps the
raw figures in bench/results.json. Only loopback addresses, private state dirs and the cgroup
parent /nodeagent-bench-<pid> are used; everything it creates is removed at the end.
"""
import argparse, http.client, json, os, shutil, signal, socket, struct, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no __pycache__ in bench/
import h2grpc  # noqa: E402
import chart  # noqa: E402

ROOT = os.path.dirname(HERE)
BIN = os.path.join(ROOT, "target", "release", "nodeagent")
DOCKER_SOCK = "/var/run/docker.sock"
NODE_EXPORTER = shutil.which("prometheus-node-exporter") or "/usr/bin/prometheus-node-exporter"
NATS = shutil.which("nats-server") or "/usr/sbin/nats-server"
RUN_ID = os.getpid()
PARENT = f"/nodeagent-bench-{RUN_ID}"
CLK = os.sysconf("SC_CLK_TCK")

PROCS = []      # every child process we started, killed at the end
CONTAINERS = []  # docker names we created
TMPDIRS = []


# ---------------------------------------------------------------- helpers

def log(*a):
    print(f"[{time.strftime('%H:%M:%S')}] load {load():.2f} |", *a, flush=True)


def load():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def cpu_seconds(pid):
    """CPU time of a process: the sum of its threads' run time in /proc/<pid>/task/*/schedstat
    (nanoseconds), or at least utime + stime from /proc/<pid>/stat, whose 10 ms ticks are too
    coarse for an idle agent (threads that exited count only in the latter)."""
    ns = 0
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                ns += int(f.read().split()[0])
    except OSError:
        ns = 0
    return max(ns / 1e9, cpu_ticks(pid))


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / CLK  # utime + stime


def status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])


def rss_mib(pid):
    return status(pid, "VmRSS") / 1024


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def summary(xs_us):
    return {"n": len(xs_us), "p50": pct(xs_us, 50), "p99": pct(xs_us, 99), "max": max(xs_us)}


def spawn(cmd, **kw):
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, **kw)
    PROCS.append(p)
    return p


def sleepers(n):
    out = []
    for _ in range(n):
        out.append(spawn(["/bin/sleep", "86400"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return out


def nofile(pid):
    """Soft limit on open files of a process. The agent raises its own at start (it keeps about
    8 counter files open per object), so 10,000 objects need no help from the harness."""
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    return None


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def kill_all(ps):
    for p in ps:
        if p.poll() is None:
            p.kill()
    for p in ps:
        try:
            p.wait(timeout=10)
        except Exception:
            pass


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path, timeout=60):
        super().__init__("localhost", timeout=timeout)
        self.upath = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.upath)
        self.sock = s


class Docker:
    def __init__(self):
        self.c = UnixHTTP(DOCKER_SOCK)

    def call(self, method, path, body=None):
        self.c.request(method, "/v1.41" + path, body=json.dumps(body) if body is not None else None,
                       headers={"Content-Type": "application/json"})
        r = self.c.getresponse()
        return r.status, r.read()


class Agent:
    """The release binary on a loopback port, with a private state dir and cgroup parent."""

    def __init__(self, state=None, config=None, extra=(), nice=0):
        self.port = free_port()
        self.nice = nice
        self.state = state or tempfile.mkdtemp(prefix="nodeagent-bench-")
        TMPDIRS.append(self.state)
        self.config = config
        self.extra = list(extra)
        self.proc = None

    def start(self):
        args = [BIN, "run", "--listen", f"127.0.0.1:{self.port}", "--state-dir", self.state,
                "--cgroup-parent", PARENT, "--log-level", "warn", "--stop-grace", "1s"] + self.extra
        if self.config:
            args += ["--config", self.config]
        t0 = time.perf_counter()
        nice = self.nice
        self.proc = spawn(args, stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.state, "agent.log"), "ab"),
                          preexec_fn=(lambda: os.nice(nice)) if nice else None)
        self.ready_s = self.wait_ready(t0)
        with open(os.path.join(self.state, "token")) as f:
            self.auth = "Bearer " + f.read().strip()
        self.connect()
        return self

    def wait_ready(self, t0):
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited: see {self.state}/agent.log")
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                c.request("GET", "/readyz")
                r = c.getresponse()
                r.read()
                c.close()
                if r.status == 200:
                    return time.perf_counter() - t0
            except OSError:
                pass
            if time.perf_counter() - t0 > 120:
                raise RuntimeError("agent not ready after 120 s")
            time.sleep(0.001)

    def connect(self):
        self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        self.c.connect()
        # TCP_NODELAY on the client too, or a small request may wait for a delayed ACK.
        self.c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @property
    def pid(self):
        return self.proc.pid

    def call(self, method, path, body=None, ok=(200, 201, 202, 204)):
        self.c.request(method, path, body=json.dumps(body) if body is not None else None,
                       headers={"Content-Type": "application/json", "Authorization": self.auth})
        r = self.c.getresponse()
        b = r.read()
        if ok and r.status not in ok:
            raise RuntimeError(f"{method} {path}: {r.status} {b[:300]!r}")
        return r.status, b

    def json(self, method, path, body=None):
        return json.loads(self.call(method, path, body)[1] or b"null")

    def stop(self):
        """SIGTERM; returns seconds until exit."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        try:
            self.c.close()
        except Exception:
            pass
        t0 = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return time.perf_counter() - t0

    def create_cgroups(self, pids, interval, prefix="cg"):
        ids = []
        for i, p in enumerate(pids):
            o = self.json("POST", "/v1/objects?wait=true", {
                "name": f"{prefix}-{i}", "kind": "cgroup", "cgroup": {"pids": [p]},
                "collect": {"interval": interval}})
            ids.append(o["id"])
        return ids

    def delete_all(self, ids):
        for i in ids:
            self.call("DELETE", f"/v1/objects/{i}?wait=true", ok=None)


def build_ctl():
    """Compiles bench/ctl.c (gcc, as the test suite installs it) into a temp dir."""
    d = tempfile.mkdtemp(prefix="nodeagent-bench-ctl-")
    TMPDIRS.append(d)
    out = os.path.join(d, "ctl")
    subprocess.run(["gcc", "-O2", "-o", out, os.path.join(HERE, "ctl.c")], check=True)
    return out


def cpu_quota_file(pid):
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, ctrls, path = line.strip().split(":", 2)
            if "cpu" in ctrls.split(","):
                return f"/sys/fs/cgroup/{ctrls if os.path.isdir('/sys/fs/cgroup/' + ctrls) else 'cpu'}{path}/cpu.cfs_quota_us"
    raise RuntimeError(f"no cpu cgroup for {pid}")


def read_int(path):
    with open(path) as f:
        return int(f.read())


def wait_quota(path, want, t0):
    """Reads the quota until it is `want`; returns µs since t0 and whether the first read had it."""
    first = True
    while True:
        if read_int(path) == want:
            return (time.perf_counter() - t0) * 1e6, first
        first = False
        if time.perf_counter() - t0 > 10:
            raise RuntimeError(f"{path} never became {want}")


def machine():
    m = {}
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                m["cpu"] = line.split(":", 1)[1].strip()
                break
    m["cores"] = os.cpu_count()
    m["kernel"] = os.uname().release
    with open("/proc/meminfo") as f:
        m["memory_gib"] = round(int(f.readline().split()[1]) / 1024 / 1024, 1)
    try:
        m["os"] = [l.split("=", 1)[1].strip().strip('"') for l in open("/etc/os-release")
                   if l.startswith("PRETTY_NAME=")][0]
    except Exception:
        m["os"] = "?"
    try:
        m["docker"] = json.loads(Docker().call("GET", "/version")[1])["Version"]
    except Exception:
        m["docker"] = "?"
    for name, cmd in (("node_exporter", [NODE_EXPORTER, "--version"]), ("nats", [NATS, "--version"])):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            m[name] = (out.stdout + out.stderr).strip().splitlines()[0]
        except Exception:
            m[name] = "?"
    m["rev"] = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
    return m


# ---------------------------------------------------------------- 1. control latency

def bench_control(a, R):
    n = a.updates
    ag = Agent().start()
    d = Docker()
    res = {"load_start": load()}
    try:
        proc = ag.json("POST", "/v1/objects?wait=true", {
            "name": "ctl-proc", "kind": "process", "process": {"command": ["/bin/sleep", "86400"]},
            "resources": {"cpu": 1}})
        name = f"nodeagent-bench-{RUN_ID}-ctl"
        CONTAINERS.append(name)
        cont = ag.json("POST", "/v1/objects?wait=true", {
            "name": name, "kind": "container", "labels": {"nodeagent-bench": str(RUN_ID)},
            "container": {"image": "busybox:local", "command": ["sleep", "86400"]},
            "resources": {"cpu": 1}})
        targets = {
            "process": (proc["id"], cpu_quota_file(proc["pid"])),
            "container": (cont["id"], f"/sys/fs/cgroup/cpu{cont['cgroup']}/cpu.cfs_quota_us"),
        }
        cid = cont["container"]["id"]
        g = h2grpc.Client("127.0.0.1", ag.port, ag.auth)

        def series(label, fn, quota, count):
            lat, stale = [], 0
            for i in range(count):
                cpu = round(0.5 + (i % 10) / 10, 2)
                want = round(cpu * 100000)
                t0 = time.perf_counter()
                fn(cpu)
                us, first = wait_quota(quota, want, t0)
                stale += 0 if first else 1
                lat.append(us)
            res[label] = dict(summary(lat), stale=stale, load=load(), raw=lat)
            s = res[label]
            log(f"control {label}: n={s['n']} p50 {s['p50']:.0f} µs p99 {s['p99']:.0f} µs "
                f"max {s['max']:.0f} µs (stale at answer {stale})")

        ctl = build_ctl()

        def ctl_series(label, args, count):
            """The same series through bench/ctl.c (a C client: the figure is the server's)."""
            p = subprocess.run([ctl] + args + [str(count)], capture_output=True, text=True)
            if p.returncode != 0:
                raise RuntimeError(f"ctl {label}: {p.stderr.strip()}")
            lat, stale = [], 0
            for line in p.stdout.split("\n"):
                if line:
                    us, first = line.split()
                    lat.append(float(us))
                    stale += 0 if first == "1" else 1
            res[label] = dict(summary(lat), stale=stale, load=load(), raw=lat, client="C")
            s = res[label]
            log(f"control {label}: n={s['n']} p50 {s['p50']:.0f} µs p99 {s['p99']:.0f} µs "
                f"max {s['max']:.0f} µs (stale at answer {stale})")

        token = ag.auth.split(" ", 1)[1]
        for kind, (oid, quota) in targets.items():
            ctl_series(f"http/{kind}", ["agent", f"tcp:127.0.0.1:{ag.port}", token, oid, quota], n)
            series(f"grpc/{kind}", lambda cpu, oid=oid: g.update(oid, cpu, wait=True), quota, n)
            series(f"http-py/{kind}", lambda cpu, oid=oid: ag.call(
                "PATCH", f"/v1/objects/{oid}?wait=true", {"resources": {"cpu": cpu}}), quota, a.py_updates)
        # Let the agent's Docker sync settle so that Docker's own updates run alone.
        for _ in range(400):
            if ag.json("GET", f"/v1/objects/{cont['id']}")["container"].get("sync") == "in_sync":
                break
            time.sleep(0.01)

        def docker_update(cpu):
            st, b = d.call("POST", f"/containers/{cid}/update", {"NanoCpus": round(cpu * 100000) * 10000})
            if st != 200:
                raise RuntimeError(b)
        ctl_series("docker/container", ["docker", f"unix:{DOCKER_SOCK}", cid, targets["container"][1]],
                   a.docker_updates)
        series("docker-py/container", docker_update, targets["container"][1], a.py_updates)
        g.close()
        ag.call("DELETE", f"/v1/objects/{cont['id']}?wait=true", ok=None)
        ag.call("DELETE", f"/v1/objects/{proc['id']}?wait=true", ok=None)
    finally:
        ag.stop()
    R["control"] = res


# ---------------------------------------------------------------- 2. sampling cost

def bench_sampling(a, R):
    res = {"rows": [], "window_s": a.window}
    ag = Agent().start()
    try:
        time.sleep(1)
        # The agent with no objects: host sampling (1 s) and heartbeat only.
        c0, t0 = cpu_seconds(ag.pid), time.time()
        time.sleep(a.window * 3)
        c1, t1 = cpu_seconds(ag.pid), time.time()
        res["idle"] = {"cpu_pct": 100 * (c1 - c0) / (t1 - t0), "host_sample_us": 1e6 * (c1 - c0) / (t1 - t0),
                       "rss_mib": rss_mib(ag.pid), "threads": status(ag.pid, "Threads"), "load": load()}
        log(f"sampling idle: {res['idle']}")
        for n in a.objects:
            ps = sleepers(n)
            for interval, per_s in (("1s", 1), ("100ms", 10), ("10ms", 100)):
                ids = ag.create_cgroups([p.pid for p in ps], interval)
                time.sleep(max(1.0, 3 * (1 / per_s)))
                probe = ids[:: max(1, n // 10)]
                seq0 = [last_seq(ag, i) for i in probe]
                c0, t0 = cpu_seconds(ag.pid), time.time()
                time.sleep(a.window)
                c1, t1 = cpu_seconds(ag.pid), time.time()
                seq1 = [last_seq(ag, i) for i in probe]
                cpu = c1 - c0
                # Samples actually taken (the seq of a few objects' latest), not the schedule's.
                taken = n * sum(b - a for a, b in zip(seq0, seq1)) / len(probe)
                nominal = taken if taken > 0 else n * per_s * (t1 - t0)
                row = {"objects": n, "interval": interval, "cpu_pct": 100 * cpu / (t1 - t0),
                       "us_per_sample": 1e6 * cpu / nominal,
                       "us_per_sample_net": 1e6 * max(0.0, cpu - res["idle"]["cpu_pct"] / 100 * (t1 - t0)) / nominal,
                       "rss_mib": rss_mib(ag.pid), "threads": status(ag.pid, "Threads"),
                       "samples_per_s": n * per_s, "taken_per_s": taken / (t1 - t0), "fds": fds(ag.pid),
                       "load": load()}
                if n >= 100 and interval == "1s":
                    # The agent's answer to "latest stats of one object", beside Docker's stats.
                    lat = []
                    for j in range(a.stats_calls):
                        t0 = time.perf_counter()
                        ag.call("GET", f"/v1/objects/{ids[j % n]}/metrics?limit=1")
                        lat.append((time.perf_counter() - t0) * 1e6)
                    res["agent_latest"] = dict(summary(lat), objects=n, load=load())
                res["rows"].append(row)
                log(f"sampling {n} @ {interval}: {row}")
                ag.delete_all(ids)
            kill_all(ps)
            for p in ps:
                PROCS.remove(p)
    finally:
        ag.stop()

    # Peer: Docker's stats API, one shot per container.
    d = Docker()
    name = f"nodeagent-bench-{RUN_ID}-stats"
    CONTAINERS.append(name)
    st, b = d.call("POST", f"/containers/create?name={name}", {
        "Image": "busybox:local", "Cmd": ["sleep", "86400"], "Labels": {"nodeagent-bench": str(RUN_ID)}})
    cid = json.loads(b)["Id"]
    d.call("POST", f"/containers/{cid}/start")
    lat = []
    for _ in range(a.stats_calls):
        t0 = time.perf_counter()
        st, b = d.call("GET", f"/containers/{cid}/stats?stream=false&one-shot=true")
        lat.append((time.perf_counter() - t0) * 1e6)
        assert st == 200, b
    res["docker_stats"] = dict(summary(lat), load=load())
    # Docker's stats collector ticks every second and a call that finds it running waits for the
    # next tick; a call with no other subscriber answers at once. So also time spaced calls.
    spaced = []
    for _ in range(a.stats_spaced):
        time.sleep(2.5)
        t0 = time.perf_counter()
        st, b = d.call("GET", f"/containers/{cid}/stats?stream=false&one-shot=true")
        spaced.append((time.perf_counter() - t0) * 1e6)
    if spaced:
        res["docker_stats_spaced"] = dict(summary(spaced), load=load())
    log(f"docker stats one-shot: {res['docker_stats']}")
    d.call("DELETE", f"/containers/{cid}?force=true")

    # Peer: node_exporter, CPU per scrape of host metrics.
    port = free_port()
    ne = spawn([NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{port}"],
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(500):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                c.request("GET", "/metrics")
                c.getresponse().read()
                break
            except OSError:
                time.sleep(0.02)
        for _ in range(3):  # warm up
            c.request("GET", "/metrics")
            body = c.getresponse().read()
        lat = []
        c0 = cpu_seconds(ne.pid)
        for _ in range(a.scrapes):
            t0 = time.perf_counter()
            c.request("GET", "/metrics")
            body = c.getresponse().read()
            lat.append((time.perf_counter() - t0) * 1e6)
        c1 = cpu_seconds(ne.pid)
        res["node_exporter"] = {"cpu_us_per_scrape": 1e6 * (c1 - c0) / a.scrapes, "scrapes": a.scrapes,
                                "latency": summary(lat), "bytes": len(body), "rss_mib": rss_mib(ne.pid),
                                "threads": status(ne.pid, "Threads"), "load": load()}
        log(f"node_exporter: {res['node_exporter']}")
    finally:
        ne.terminate()
        ne.wait()
    R["sampling"] = res


# ---------------------------------------------------------------- 3. scale

def bench_scale(a, R):
    n = a.scale
    res = {"objects": n, "requested": a.scale}
    ag = Agent().start()
    ps = []
    try:
        base_threads = status(ag.pid, "Threads")
        res["nofile"] = nofile(ag.pid)
        ps = sleepers(n)
        t0 = time.perf_counter()
        ids = ag.create_cgroups([p.pid for p in ps], "1s", prefix="sc")
        res["create_s"] = time.perf_counter() - t0
        log(f"scale: created {n} objects in {res['create_s']:.1f} s")
        time.sleep(3)
        c0, w0 = cpu_seconds(ag.pid), time.time()
        lat_get, lat_patch = [], []
        m = a.scale_calls
        for i in range(m):
            oid = ids[(i * 7919) % n]
            t0 = time.perf_counter()
            ag.call("GET", f"/v1/objects/{oid}")
            lat_get.append((time.perf_counter() - t0) * 1e6)
            cpu = round(0.5 + (i % 10) / 10, 2)
            t0 = time.perf_counter()
            ag.call("PATCH", f"/v1/objects/{oid}?wait=true", {"resources": {"cpu": cpu}})
            lat_patch.append((time.perf_counter() - t0) * 1e6)
        t0 = time.perf_counter()
        ag.call("GET", "/v1/objects")
        list_us = (time.perf_counter() - t0) * 1e6
        time.sleep(max(0.0, 10 - (time.time() - w0)))
        c1, w1 = cpu_seconds(ag.pid), time.time()
        res.update({"threads_idle": base_threads, "threads": status(ag.pid, "Threads"), "fds": fds(ag.pid),
                    "rss_mib": rss_mib(ag.pid), "cpu_pct": 100 * (c1 - c0) / (w1 - w0),
                    "get": summary(lat_get), "patch": summary(lat_patch), "list_all_ms": list_us / 1000,
                    "load": load()})
        log(f"scale: threads {res['threads']} rss {res['rss_mib']:.1f} MiB cpu {res['cpu_pct']:.1f}% "
            f"GET p99 {res['get']['p99']:.0f} µs PATCH p99 {res['patch']['p99']:.0f} µs")
        if a.scale_fill_s > 0:
            # Every ring full (120 samples at 1 s): the steady-state footprint, and the API again.
            time.sleep(max(0.0, a.scale_fill_s - (time.time() - w0)))
            c0, w0 = cpu_seconds(ag.pid), time.time()
            lat_patch2 = []
            for i in range(m):
                oid = ids[(i * 7919) % n]
                t0 = time.perf_counter()
                ag.call("PATCH", f"/v1/objects/{oid}?wait=true", {"resources": {"cpu": round(0.5 + (i % 10) / 10, 2)}})
                lat_patch2.append((time.perf_counter() - t0) * 1e6)
            time.sleep(max(0.0, 10 - (time.time() - w0)))
            c1, w1 = cpu_seconds(ag.pid), time.time()
            res["full"] = {"after_s": a.scale_fill_s, "rss_mib": rss_mib(ag.pid), "threads": status(ag.pid, "Threads"),
                           "cpu_pct": 100 * (c1 - c0) / (w1 - w0), "patch": summary(lat_patch2), "load": load()}
            log(f"scale, rings full: {res['full']}")
    finally:
        res["shutdown_s"] = ag.stop()
        kill_all(ps)
        for p in ps:
            PROCS.remove(p)
    R["scale"] = res


# ---------------------------------------------------------------- 4. reporting

def _sink_list(ag):
    j = ag.json("GET", "/v1/sinks")
    if isinstance(j, dict):
        for k in ("items", "sinks", "data"):
            if k in j:
                return j[k]
    return j


def bench_reporting(a, R):
    res = {}
    gport, nport = free_port(), free_port()
    work = tempfile.mkdtemp(prefix="nodeagent-bench-rep-")
    TMPDIRS.append(work)
    cfg = os.path.join(work, "agent.toml")
    with open(cfg, "w") as f:
        f.write(f'[[sink]]\nname = "up"\ntype = "grpc"\naddress = "http://127.0.0.1:{gport}"\n'
                f'spool_fsync = "1s"\n\n'
                f'[[sink]]\nname = "nats"\ntype = "nats"\nurl = "nats://127.0.0.1:{nport}"\n'
                f'spool_fsync = "1s"\n')
    ag = Agent(config=cfg).start()
    ps = sleepers(a.rep_objects)
    recv = natsp = None
    try:
        ids = ag.create_cgroups([p.pid for p in ps], "10ms", prefix="rp")

        def drain(sink, start_peer):
            # Backlog: every object pushes to the sink every 10 ms while the upstream is down.
            for i in ids:
                ag.call("POST", f"/v1/objects/{i}/push-on", {"sink": sink, "interval": "10ms"})
            time.sleep(a.backlog_s)
            for i in ids:
                ag.call("POST", f"/v1/objects/{i}/push-off", {"sink": sink}, ok=None)
            time.sleep(0.5)
            s0 = _sinks(ag)[sink]
            log(f"reporting {sink}: backlog {s0}")
            peer = start_peer()
            # Poll every ms; the drain starts after the last poll that saw nothing acknowledged.
            a0 = s0.get("acked", 0)
            t_zero = time.perf_counter()
            t_end = time.time() + 300
            last = (t_zero, a0)
            while time.time() < t_end:
                before = time.perf_counter()
                s = _sinks(ag)[sink]
                now = time.perf_counter()
                acked = s.get("acked", 0)
                if acked == a0:
                    t_zero = before
                last = (now, acked)
                if acked > a0 and s.get("queue_depth", 1) == 0 and s.get("spool_records", 1) == 0:
                    break
                time.sleep(0.001)
            rate = (last[1] - a0) / (last[0] - t_zero) if last[0] > t_zero else float("nan")
            out = {"backlog": s0, "records": last[1] - a0, "samples_per_s": rate, "load": load(),
                   "agent_rss_mib": rss_mib(ag.pid), "agent_threads": status(ag.pid, "Threads")}
            log(f"reporting {sink}: drained {out['records']} records at {rate:.0f}/s")
            return peer, out

        def start_receiver():
            out = os.path.join(work, "received.jsonl")
            p = spawn([BIN, "sink", "--listen", f"127.0.0.1:{gport}", "--out", out],
                      stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "sink.log"), "ab"))
            return p

        def start_nats():
            os.makedirs(os.path.join(work, "nats"), exist_ok=True)
            return spawn([NATS, "-js", "-a", "127.0.0.1", "-p", str(nport), "-sd", os.path.join(work, "nats")],
                         stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "nats.log"), "ab"))

        recv, res["grpc"] = drain("up", start_receiver)
        natsp, res["nats"] = drain("nats", start_nats)

        # Latency at a steady rate: rep_objects × 100/s to the running receiver.
        out = os.path.join(work, "received.jsonl")
        size0 = os.path.getsize(out) if os.path.exists(out) else 0
        for i in ids:
            ag.call("POST", f"/v1/objects/{i}/push-on", {"sink": "up", "interval": "10ms"})
        time.sleep(1)
        lat = []
        start = time.time()
        with open(out, "rb") as f:
            f.seek(0, 2)
            buf = b""
            while time.time() - start < a.latency_s:
                chunk = f.read()
                now = time.time()
                if not chunk:
                    time.sleep(0.0005)
                    continue
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    # A byte search, not json.loads + strptime: at 10,000 lines/s those took a
                    # good part of a core, and a starved tailer measures its own lag.
                    t = sample_ts(line)
                    if t is not None:
                        lat.append((now - t) * 1e3)
        for i in ids:
            ag.call("POST", f"/v1/objects/{i}/push-off", {"sink": "up"}, ok=None)
        res["latency"] = dict(summary(lat) if lat else {"n": 0}, rate_per_s=len(lat) / a.latency_s,
                              agent_cpu_pct=None, load=load())
        log(f"reporting latency: {res['latency']}")
        ag.delete_all(ids)
    finally:
        ag.stop()
        kill_all(ps + [p for p in (recv, natsp) if p])
    R["reporting"] = res


def _sinks(ag):
    return {s["name"]: s for s in _sink_list(ag)}


def parse_ts(ts):
    # RFC 3339 with nanoseconds, 'Z'.
    import datetime
    base, _, frac = ts.rstrip("Z").partition(".")
    frac = frac.split("+")[0]
    t = datetime.datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc).timestamp()
    return t + (float("0." + frac) if frac else 0.0)


SAMPLE = b'"sample":{'
TS = b'"ts":"'
_secs = {}


def sample_ts(line):
    """The sample time of a record line, or None (an event line). The same as
    `parse_ts(json.loads(line)["sample"]["ts"])`, without parsing the whole line and with the
    seconds part cached: json.loads and strptime for 10,000 lines a second took a good part of a
    core, and a starved tailer reads late and measures its own delay."""
    i = line.find(SAMPLE)
    if i < 0:
        return None
    i = line.find(TS, i)
    if i < 0:
        return None
    i += len(TS)
    j = line.find(b'"', i)
    ts = line[i:j]
    base = ts[:19]
    t = _secs.get(base)
    if t is None:
        if len(_secs) > 1000:
            _secs.clear()
        t = _secs[base] = parse_ts(base.decode() + "Z")
    frac = ts[20:].rstrip(b"Z") if ts[19:20] == b"." else b""
    return t + (float(b"0." + frac) if frac else 0.0)


# ---------------------------------------------------------------- 5. start-up and shutdown

def bench_startup(a, R):
    res = {"runs": []}
    for n in (0, a.startup_objects):
        ready, stop, populated = [], [], []
        for rep in range(a.startup_reps):
            state = tempfile.mkdtemp(prefix="nodeagent-bench-")
            ag = Agent(state=state).start()
            ps = []
            if n:
                ps = sleepers(n)
                t0 = time.perf_counter()
                ag.create_cgroups([p.pid for p in ps], "1s", prefix="st")
                create_s = time.perf_counter() - t0
                # With a durable store the objects come back on restart: measure that start.
                ag.stop()
                ag2 = Agent(state=state)
                ag2.port = ag.port
                ag2.start()
                have = len(_list(ag2))
                populated.append({"create_s": create_s, "restored": have})
                ag = ag2
                ready.append(ag.ready_s)
            else:
                ready.append(ag.ready_s)
            time.sleep(1.5)
            stop.append(ag.stop())
            kill_all(ps)
            for p in ps:
                PROCS.remove(p)
            cleanup_cgroups()
        res["runs"].append({"objects": n, "ready_ms": [x * 1000 for x in ready],
                            "stop_ms": [x * 1000 for x in stop], "populated": populated, "load": load()})
        log(f"startup {n}: ready {[round(x * 1000, 1) for x in ready]} ms, stop {[round(x * 1000, 1) for x in stop]} ms {populated}")

    # Peer: node_exporter start to first /metrics answer, and SIGTERM to exit.
    ready, stop = [], []
    for _ in range(a.startup_reps):
        port = free_port()
        t0 = time.perf_counter()
        ne = spawn([NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{port}"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                c.request("GET", "/")
                c.getresponse().read()
                break
            except OSError:
                time.sleep(0.001)
        ready.append((time.perf_counter() - t0) * 1000)
        time.sleep(1.5)
        t0 = time.perf_counter()
        ne.terminate()
        ne.wait()
        stop.append((time.perf_counter() - t0) * 1000)
    res["node_exporter"] = {"ready_ms": ready, "stop_ms": stop, "load": load()}
    log(f"startup node_exporter: {res['node_exporter']}")
    R["startup"] = res


def last_seq(ag, oid):
    j = ag.json("GET", f"/v1/objects/{oid}/metrics?limit=1")
    xs = j.get("samples", []) if isinstance(j, dict) else j
    return xs[-1]["seq"] if xs else 0


def _list(ag):
    j = ag.json("GET", "/v1/objects")
    if isinstance(j, dict):
        for k in ("items", "objects", "data"):
            if k in j:
                return j[k]
    return j


# ---------------------------------------------------------------- cleanup

def cleanup_cgroups():
    for ctrl in os.listdir("/sys/fs/cgroup"):
        top = os.path.join("/sys/fs/cgroup", ctrl, PARENT.lstrip("/"))
        if not os.path.isdir(top) or os.path.islink(os.path.join("/sys/fs/cgroup", ctrl)):
            continue
        for dirpath, dirnames, _ in sorted(os.walk(top, topdown=False), key=lambda x: -x[0].count("/")):
            try:
                os.rmdir(dirpath)
            except OSError:
                pass


def cleanup():
    kill_all(PROCS)
    try:
        d = Docker()
        st, b = d.call("GET", "/containers/json?all=1&filters=" + json.dumps(
            {"label": [f"nodeagent-bench={RUN_ID}"]}).replace(" ", ""))
        for c in json.loads(b):
            d.call("DELETE", f"/containers/{c['Id']}?force=true")
    except Exception as e:
        print("docker cleanup:", e)
    for n in CONTAINERS:
        subprocess.run(["docker", "rm", "-f", n], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    cleanup_cgroups()
    for t in TMPDIRS:
        shutil.rmtree(t, ignore_errors=True)


# ---------------------------------------------------------------- main

def main():
    global BIN
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="reduced counts: a smoke run of every benchmark")
    ap.add_argument("--only", default="control,sampling,scale,reporting,startup")
    ap.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"))
    ap.add_argument("--bin", default=BIN, help="the nodeagent binary to measure (for A/B runs)")
    ap.add_argument("--raw", default=os.path.join(HERE, "results.json"), help="where the raw results go")
    a = ap.parse_args()
    BIN = a.bin
    q = a.quick
    a.updates = 500 if q else 10000
    a.docker_updates = 200 if q else 10000
    a.py_updates = 200 if q else 2000  # the same series through Python's http.client, for reference
    a.window = 3.0 if q else 10.0
    a.objects = [1, 100] if q else [1, 100, 1000]
    a.stats_calls = 10 if q else 30  # back to back, ~1 s each (Docker's collector tick)
    a.scrapes = 20 if q else 200
    a.stats_spaced = 3 if q else 8
    a.scale = 1000 if q else 10000
    a.scale_calls = 300 if q else 2000
    a.scale_fill_s = 0 if q else 130
    a.rep_objects = 100
    a.backlog_s = 5.0 if q else 20.0
    a.latency_s = 5.0 if q else 20.0
    a.startup_objects = 1000
    a.startup_reps = 1 if q else 3
    if os.geteuid() != 0:
        sys.exit("run as root (cgroups, docker)")
    if not os.access(BIN, os.X_OK):
        sys.exit(f"{BIN} missing: cargo build --release")
    # Run a private copy: other builds may replace target/release/nodeagent during a run.
    src = BIN
    bdir = tempfile.mkdtemp(prefix="nodeagent-bench-bin-")
    TMPDIRS.append(bdir)
    BIN = os.path.join(bdir, "nodeagent")
    shutil.copy2(src, BIN)
    import hashlib
    with open(BIN, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    R = {"mode": "quick" if q else "full", "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
         "machine": machine(), "load_start": os.getloadavg(),
         "binary": {"sha256": digest, "built": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(os.path.getmtime(src)))}}
    raw_path = a.raw
    benches = {"control": bench_control, "sampling": bench_sampling, "scale": bench_scale,
               "reporting": bench_reporting, "startup": bench_startup}
    try:
        for name in a.only.split(","):
            log(f"== {name}")
            try:
                benches[name](a, R)
            except Exception as e:  # keep the others going; the report says what failed
                import traceback
                traceback.print_exc()
                R.setdefault("errors", {})[name] = repr(e)
            cleanup_cgroups()
            with open(raw_path + ".partial", "w") as f:  # survives an interrupted run
                json.dump(strip_raw(R), f, indent=1)
    finally:
        cleanup()
    R["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    R["load_end"] = os.getloadavg()
    # Keep figures of benchmarks not run this time from the previous results.json.
    try:
        old = json.load(open(raw_path))
        for k in benches:
            if k not in R and k in old:
                R[k] = old[k]
                R.setdefault("carried", []).append(k)
    except Exception:
        pass
    raw = {k: v for k, v in R.items()}
    with open(raw_path, "w") as f:
        json.dump(strip_raw(raw), f, indent=1)
    if os.path.exists(raw_path + ".partial"):
        os.remove(raw_path + ".partial")
    if "control" in R:
        chart.write(os.path.join(HERE, "control-latency.svg"), R["control"])
    import report
    with open(a.out, "w") as f:
        f.write(report.render(R))
    log(f"wrote {a.out}")


def strip_raw(R):
    out = json.loads(json.dumps(R, default=str))
    for k, v in out.get("control", {}).items():
        if isinstance(v, dict) and "raw" in v:
            # keep a decimated copy for the chart on re-render
            v["raw"] = sorted(v["raw"])[:: max(1, len(v["raw"]) // 2000)]
    return out


if __name__ == "__main__":
    main()
