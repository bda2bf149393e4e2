#!/usr/bin/env python3
"""Bus In at fleet scale (issue 16): 100 agents on one machine, half of them behind a NATS leaf
node in a network namespace of their own, commanded over a 3-server JetStream cluster.

    sudo python3 bench/fleet.py                       # 100 agents x 10 objects, 200 rounds
    sudo python3 bench/fleet.py --agents 20 --rounds 50 --report-seconds 10   # a quick run

What it starts (all on loopback addresses and in two network namespaces it makes itself, joined
by a veth pair whose ends are both inside them; everything is stopped and removed at the end):
  - hub namespace: a 3-server nats-server cluster (JetStream domain `hub`), half the agents;
  - edge namespace: a leaf node (no JetStream of its own) that reaches the hub only over the
    veth link, and the other half of the agents (`jetstream_domain = "hub"`);
  - each agent: its own state dir and cgroup parent, `[bus]`, a `nats` sink, and 10 `process`
    objects (`/bin/sleep`) sampled every 100 ms.

What it measures (one run, one machine, so the ratios are fair):
  - fan-out: `update` of one object on every node over the bus until every reply is in, p50 and
    p99 over --rounds, beside the same update sent to each node in turn over its HTTP API (unix
    socket, a connection per request): crates/nodeagent/examples/fleet_bench.rs;
  - durable delivery: 10 agents stopped, a durable update sent to them, the agents started
    again: the update applied exactly once on each (its audit records counted);
  - reports: every object pushed at 100 ms to JetStream for --report-seconds while one server of
    the three is killed and restarted; then every node's records are read back from the stream
    (examples/jetstream_seqs.rs): records/s, and the sequence gaps (must be 0);
  - footprint: each agent's CPU and RSS while connected and idle (its 10 objects sampled).

Prints a markdown section and writes it into bench/RESULTS.md (between the fleet.py markers).
Needs root, cgroup v1, nats-server, iproute2, and the release build (built if missing).
"""
import argparse, json, os, shutil, signal, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True
from run import UnixHTTP, cpu_seconds, rss_mib  # noqa: E402

PID = os.getpid()
HUB, EDGE = f"na-fleet-hub-{PID}", f"na-fleet-edge-{PID}"
PROCS = []
TMP = tempfile.mkdtemp(prefix="nodeagent-fleet-")
PARENT = f"/nodeagent-fleet-{PID}"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def sh(*args, check=True):
    return subprocess.run(args, check=check, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def spawn(ns, args, log_path):
    p = subprocess.Popen(["nsenter", f"--net=/var/run/netns/{ns}"] + args, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=open(log_path, "ab"))
    PROCS.append(p)
    return p


def wait_port(ns, port, timeout=20):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if sh("nsenter", f"--net=/var/run/netns/{ns}", "bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{port}", check=False).returncode == 0:
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {ns} 127.0.0.1:{port}")


class Nats:
    def __init__(self, i, port, route, leaf, routes):
        self.i, self.port = i, port
        self.dir = os.path.join(TMP, f"hub{i}")
        os.makedirs(self.dir, exist_ok=True)
        self.conf = os.path.join(TMP, f"hub{i}.conf")
        with open(self.conf, "w") as f:
            f.write(f'server_name: hub-{i}\njetstream {{ domain: hub, store_dir: "{self.dir}" }}\n'
                    f'cluster {{ name: hub, listen: "127.0.0.1:{route}", routes: [{routes}] }}\n'
                    f'leafnodes {{ listen: "10.78.0.1:{leaf}" }}\n')
        self.proc = None

    def start(self):
        self.proc = spawn(HUB, ["nats-server", "-a", "127.0.0.1", "-p", str(self.port), "-js", "-c", self.conf],
                          os.path.join(TMP, f"hub{self.i}.log"))
        wait_port(HUB, self.port)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


class Agent:
    def __init__(self, i, ns, url, domain):
        self.i, self.ns, self.name = i, ns, f"n{i:03d}"
        self.state = os.path.join(TMP, self.name)
        os.makedirs(self.state, exist_ok=True)
        self.sock = os.path.join(self.state, "nodeagent.sock")
        self.conf = os.path.join(TMP, f"{self.name}.toml")
        dom = f'\njetstream_domain = "{domain}"' if domain else ""
        with open(self.conf, "w") as f:
            f.write(f'node_name = "{self.name}"\nlisten = "127.0.0.1:{20000 + i}"\nlog_level = "warn"\n'
                    f'[bus]\nurls = ["{url}"]\nlabels = {{ site = "{"edge" if domain else "hub"}" }}\n'
                    f'replicas = 3{dom}\n'
                    f'[[sink]]\nname = "bus"\ntype = "nats"\nurl = "{url}"{dom}\n')
        self.proc = None

    def start(self):
        self.proc = spawn(self.ns, [BIN, "run", "--config", self.conf, "--state-dir", self.state,
                                    "--cgroup-parent", f"{PARENT}/{self.name}"],
                          os.path.join(self.state, "agent.log"))

    def wait_ready(self, timeout=60):
        t0 = time.time()
        while time.time() - t0 < timeout:
            try:
                st, _ = self.call("GET", "/readyz")
                if st == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                tail = open(os.path.join(self.state, "agent.log"), errors="replace").read()[-2000:]
                raise RuntimeError(f"agent {self.name} exited:\n{tail}")
            time.sleep(0.05)
        raise RuntimeError(f"agent {self.name} not ready")

    def call(self, method, path, body=None):
        c = UnixHTTP(self.sock, timeout=30)
        c.request(method, path, body=json.dumps(body) if body is not None else None,
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        b = r.read()
        c.close()
        try:
            return r.status, (json.loads(b) if b.strip() else None)
        except json.JSONDecodeError:
            return r.status, b.decode(errors="replace")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)


def fleet(*args, timeout=60):
    r = subprocess.run(["nsenter", f"--net=/var/run/netns/{HUB}", BIN, "fleet", "--nats", HUB_URL, *args, "-o", "json"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    try:
        return r.returncode, json.loads(r.stdout)
    except json.JSONDecodeError:
        return r.returncode, {"stdout": r.stdout, "stderr": r.stderr}


def setup_netns():
    sh("ip", "netns", "add", HUB)
    sh("ip", "netns", "add", EDGE)
    for ns in (HUB, EDGE):
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "-n", HUB, "link", "add", "veth-h", "type", "veth", "peer", "name", "veth-e", "netns", EDGE)
    sh("ip", "-n", HUB, "addr", "add", "10.78.0.1/30", "dev", "veth-h")
    sh("ip", "-n", HUB, "link", "set", "veth-h", "up")
    sh("ip", "-n", EDGE, "addr", "add", "10.78.0.2/30", "dev", "veth-e")
    sh("ip", "-n", EDGE, "link", "set", "veth-e", "up")


def cleanup():
    for p in PROCS:
        if p.poll() is None:
            p.kill()
    for p in PROCS:
        try:
            p.wait(timeout=10)
        except Exception:
            pass
    # The objects' sleepers keep running after their agents (as workloads do): end them.
    for ctrl in ("freezer", "pids", "memory", "cpu", "cpuacct", "cpuset", "blkio", "devices"):
        top = f"/sys/fs/cgroup/{ctrl}{PARENT}"
        if not os.path.isdir(top):
            continue
        for dirpath, _, files in os.walk(top):
            if "cgroup.procs" in files:
                try:
                    for pid in open(os.path.join(dirpath, "cgroup.procs")).read().split():
                        try:
                            os.kill(int(pid), signal.SIGKILL)
                        except OSError:
                            pass
                except OSError:
                    pass
    time.sleep(0.5)
    for ctrl in os.listdir("/sys/fs/cgroup"):
        top = f"/sys/fs/cgroup/{ctrl}{PARENT}"
        if os.path.isdir(top) and not os.path.islink(f"/sys/fs/cgroup/{ctrl}"):
            for dirpath, _, _ in sorted(os.walk(top, topdown=False), key=lambda x: -x[0].count("/")):
                try:
                    os.rmdir(dirpath)
                except OSError:
                    pass
    for ns in (HUB, EDGE):
        sh("ip", "netns", "del", ns, check=False)
    shutil.rmtree(TMP, ignore_errors=True)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round((len(xs) - 1) * p))] if xs else 0


def main():
    global BIN, HUB_URL
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=100)
    ap.add_argument("--objects", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--http-rounds", type=int, default=50)
    ap.add_argument("--report-seconds", type=float, default=20)
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("fleet.py needs root (network namespaces, cgroups)")
    log("building the release binary and the bench examples ...")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "nodeagent", "--bin", "nodeagent",
                    "--example", "fleet_bench", "--example", "jetstream_seqs"], cwd=ROOT, check=True)
    BIN = os.path.join(ROOT, "target/release/nodeagent")
    ex = os.path.join(ROOT, "target/release/examples")
    R = {"agents": a.agents, "objects": a.objects}
    try:
        setup_netns()
        base = 14000 + (PID % 500) * 10
        ports = [(base + i, base + 3 + i, base + 6 + i) for i in range(3)]
        routes = ", ".join(f'"nats-route://127.0.0.1:{p[1]}"' for p in ports)
        servers = [Nats(i, p[0], p[1], p[2], routes) for i, p in enumerate(ports)]
        for s in servers:
            s.start()
        HUB_URL = ",".join(f"nats://127.0.0.1:{p[0]}" for p in ports)
        leaf_conf = os.path.join(TMP, "leaf.conf")
        remotes = ", ".join(f'"nats-leaf://10.78.0.1:{p[2]}"' for p in ports)
        with open(leaf_conf, "w") as f:
            f.write(f"leafnodes {{ remotes: [ {{ urls: [{remotes}] }} ] }}\n")
        spawn(EDGE, ["nats-server", "-a", "127.0.0.1", "-p", "4222", "-c", leaf_conf], os.path.join(TMP, "leaf.log"))
        wait_port(EDGE, 4222)
        t0 = time.time()
        while True:
            rc, _ = fleet("init", "--replicas", "3")
            if rc == 0:
                break
            if time.time() - t0 > 60:
                raise RuntimeError("the JetStream cluster did not come up")
            time.sleep(0.5)
        # The reports' stream, with three replicas so that it outlives a server.
        agents = []
        half = a.agents // 2
        for i in range(a.agents):
            edge = i >= half
            agents.append(Agent(i, EDGE if edge else HUB, "nats://127.0.0.1:4222" if edge else HUB_URL.split(",")[i % 3],
                                "hub" if edge else None))
        log(f"starting {a.agents} agents ({half} in the hub namespace, {a.agents - half} behind the leaf node) ...")
        t0 = time.time()
        for ag in agents:
            ag.start()
        for ag in agents:
            ag.wait_ready()
        for ag in agents:
            for j in range(a.objects):
                st, b = ag.call("POST", "/v1/objects?wait=true", {
                    "name": f"obj-{j}", "kind": "process", "process": {"command": ["/bin/sleep", "86400"]},
                    "resources": {"cpu": 0.2, "memory": "16Mi"}, "collect": {"interval": "100ms"}})
                if st != 201:
                    raise RuntimeError(f"{ag.name} create: {st} {b}")
        R["setup_s"] = time.time() - t0
        t0 = time.time()
        while True:
            rc, v = fleet("nodes")
            up = sum(1 for n in v.get("nodes", []) if n.get("state") == "up")
            if up == a.agents:
                break
            if time.time() - t0 > 60:
                raise RuntimeError(f"only {up} of {a.agents} nodes registered")
            time.sleep(0.5)

        # Footprint: connected and idle (the objects are sampled at 100 ms).
        time.sleep(2)
        c0 = {ag.name: cpu_seconds(ag_pid(ag)) for ag in agents}
        time.sleep(10)
        cpu = [(cpu_seconds(ag_pid(ag)) - c0[ag.name]) / 10 for ag in agents]
        rss = [rss_mib(ag_pid(ag)) for ag in agents]
        R["idle_cpu_pct_mean"] = 100 * sum(cpu) / len(cpu)
        R["idle_cpu_pct_max"] = 100 * max(cpu)
        R["rss_mib_mean"] = sum(rss) / len(rss)
        R["rss_mib_max"] = max(rss)
        log(f"footprint: cpu {R['idle_cpu_pct_mean']:.2f}% mean, rss {R['rss_mib_mean']:.1f} MiB mean")

        # Fan-out, beside sequential HTTP.
        socks = os.path.join(TMP, "sockets.txt")
        with open(socks, "w") as f:
            f.write("\n".join(ag.sock for ag in agents) + "\n")
        out = subprocess.run(["nsenter", f"--net=/var/run/netns/{HUB}", os.path.join(ex, "fleet_bench"), HUB_URL.split(",")[0],
                              str(a.rounds), str(a.http_rounds), socks, "obj-0"],
                             check=True, stdout=subprocess.PIPE, text=True).stdout
        R["fanout"] = json.loads(out)
        log("fan-out:", R["fanout"])

        # Durable delivery to 10 stopped agents, 5 from each side.
        picks = agents[:5] + agents[half:half + 5]
        for ag in picks:
            ag.stop()
        names = ",".join(ag.name for ag in picks)
        rc, v = fleet("update", "obj-1", "--cpu", "0.4", "--nodes", names, "--durable", "--timeout", "1s")
        queued = sum(1 for c in v.get("commands", []) if c.get("result") is None)
        t0 = time.time()
        for ag in picks:
            ag.start()
        for ag in picks:
            ag.wait_ready()
        applied = 0
        while time.time() - t0 < 60:
            applied = 0
            for ag in picks:
                st, o = ag.call("GET", "/v1/objects/obj-1")
                applied += st == 200 and o["spec"]["resources"].get("cpu") == 0.4
            if applied == len(picks):
                break
            time.sleep(0.2)
        R["durable_s"] = time.time() - t0
        effects = 0
        for ag in picks:
            _, ev = ag.call("GET", "/v1/events")
            effects += sum(1 for e in ev["events"] if e["kind"] == "audit" and e["data"].get("transport") == "bus"
                           and e["data"].get("method") == "PATCH" and e.get("name") == "obj-1"
                           and "durable" in e["data"].get("subject", ""))
        R["durable"] = {"nodes": len(picks), "queued": queued, "applied": applied, "effects": effects}
        log("durable:", R["durable"])

        # Reports at 100 ms into JetStream while a server is killed and restarted.
        for ag in agents:
            for j in range(a.objects):
                ag.call("POST", f"/v1/objects/obj-{j}/push-on", {"sink": "bus", "interval": "100ms"})
        T = a.report_seconds
        t0 = time.time()
        time.sleep(T / 3)
        servers[1].kill()
        log("killed hub-1")
        time.sleep(T / 3)
        servers[1].start()
        log("restarted hub-1")
        time.sleep(max(0, T - (time.time() - t0)))
        for ag in agents:
            for j in range(a.objects):
                ag.call("POST", f"/v1/objects/obj-{j}/push-off", {"sink": "bus"})
        pushed_s = time.time() - t0
        # Every sink acknowledged everything it spooled.
        t1 = time.time()
        while time.time() - t1 < 120:
            pending = sum(1 for ag in agents for k in bus_sinks(ag) if k.get("acked_seq") != k.get("last_seq"))
            if pending == 0:
                break
            time.sleep(0.5)
        R["drain_s"] = time.time() - t1
        dropped = sum(k.get("dropped", 0) for ag in agents for k in bus_sinks(ag))
        out = subprocess.run(["nsenter", f"--net=/var/run/netns/{HUB}", os.path.join(ex, "jetstream_seqs"), HUB_URL.split(",")[0],
                              "NODEAGENT"], check=True, stdout=subprocess.PIPE, text=True).stdout
        seqs = json.loads(out)
        R["reports"] = {
            "seconds": pushed_s,
            "nodes_in_stream": len(seqs),
            "records": sum(v["distinct"] for v in seqs.values()),
            "duplicates": sum(v["records"] - v["distinct"] for v in seqs.values()),
            "gaps": sum(v["gaps"] for v in seqs.values()),
            "dropped": dropped,
        }
        R["reports"]["records_per_s"] = R["reports"]["records"] / pushed_s
        log("reports:", R["reports"])
    finally:
        cleanup()
    R["load"] = open("/proc/loadavg").read().split()[:3]
    md = render(R)
    print(md)
    if not a.no_write:
        write_section(md)


def bus_sinks(ag):
    """The agent's `bus` sink status (`GET /v1/sinks`)."""
    _, s = ag.call("GET", "/v1/sinks")
    return [k for k in s["sinks"] if k["name"] == "bus"]


def ag_pid(ag):
    """The agent's pid (`nsenter --net` execs it, so the child's pid is the agent's; not `ip netns exec`, which remounts /sys and hides the cgroup hierarchies)."""
    return ag.proc.pid


def render(R):
    f, d, r = R["fanout"], R["durable"], R["reports"]
    return f"""## Fleet over NATS (issue 16)

`sudo python3 bench/fleet.py` — {R['agents']} agents, {R['objects']} `process` objects each (sampled every
100 ms), half in one network namespace with a 3-server JetStream cluster, half in another behind a
NATS leaf node; load after the run {' '.join(R['load'])}.

| measure | result |
|---|---|
| fan-out: one `update` to all {f['nodes']} nodes over the bus, until every reply is in | p50 {f['bus_p50_us'] / 1000:.1f} ms, p99 {f['bus_p99_us'] / 1000:.1f} ms ({f['rounds']} rounds, {f['incomplete_rounds']} incomplete) |
| the same update sent to each node in turn over HTTP (unix socket) | p50 {f['http_seq_p50_us'] / 1000:.1f} ms, p99 {f['http_seq_p99_us'] / 1000:.1f} ms ({f['http_rounds']} rounds) |
| ratio, sequential HTTP / bus fan-out (p50) | {f['http_seq_p50_us'] / max(f['bus_p50_us'], 1):.1f}x |
| durable update to {d['nodes']} stopped agents, then started | {d['queued']} queued, {d['applied']} applied, {d['effects']} effects (audit records) in {R['durable_s']:.1f} s from the restart |
| reports at 100 ms, one of three servers killed and restarted mid-run | {r['records']} records from {r['nodes_in_stream']} nodes in {r['seconds']:.0f} s ({r['records_per_s']:.0f}/s), **{r['gaps']} gaps**, {r['duplicates']} duplicates in the stream, {r['dropped']} dropped; all acknowledged {R['drain_s']:.1f} s after the last push |
| footprint per agent, connected and idle (10 objects sampled at 100 ms) | CPU {R['idle_cpu_pct_mean']:.2f}% of a core mean ({R['idle_cpu_pct_max']:.2f}% max), RSS {R['rss_mib_mean']:.1f} MiB mean ({R['rss_mib_max']:.1f} max) |

The fan-out is one publish that every node receives, and the client returns when the last
expected reply (the registry's live nodes) is in; the HTTP column is what a controller that
knows every address does without a bus. Durable effects count the `audit` records of the update
on each node: exactly one each.
"""


BEGIN, END = "<!-- fleet.py begin -->", "<!-- fleet.py end -->"


def write_section(md):
    p = os.path.join(HERE, "RESULTS.md")
    text = open(p).read()
    block = f"{BEGIN}\n{md}{END}\n"
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END) + 1:]
    else:
        text = text.rstrip("\n") + "\n\n" + block
    open(p, "w").write(text)


if __name__ == "__main__":
    main()
