#!/usr/bin/env python3
"""Container update latency: nodeagent's fast path against Docker's own update API.

    cargo build --release && sudo python3 bench/container_update.py [--updates 1000]

Needs a running dockerd and the image busybox:local (scripts/test.sh sets both up). It starts
the release binary on a loopback port with a private cgroup parent, creates one busybox
container through it, and measures:

  1. HTTP PATCH of `cpu`: request sent -> answer received, then the quota read back from the
     container's cgroup file right after (it must already hold the new value);
  2. the time from a PATCH's answer until Docker's stored config agrees (`NanoCpus` in the
     engine's inspect, polled over the socket every 0.5 ms), and until the object says `in_sync`;
  3. Docker's own update API (POST /containers/{id}/update over the unix socket, no CLI), the
     same change, for comparison; and `docker update --cpus` through the CLI.

Only loopback and the Docker socket are used; the container and the agent are removed at the end.
"""
import argparse, http.client, json, os, socket, statistics, subprocess, tempfile, time

BIN = os.path.join(os.path.dirname(__file__), "..", "target", "release", "nodeagent")
DOCKER_SOCK = "/var/run/docker.sock"


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.path)
        self.sock = s


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def row(name, xs_s):
    ms = [x * 1000 for x in xs_s]
    print(f"{name:<46} n={len(ms):<5} p50={pct(ms, 50):8.3f} ms  p99={pct(ms, 99):8.3f} ms  "
          f"max={max(ms):8.3f} ms")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--updates", type=int, default=1000)
    ap.add_argument("--agree", type=int, default=50, help="PATCHes timed until Docker agrees")
    ap.add_argument("--docker-updates", type=int, default=200)
    ap.add_argument("--cli-updates", type=int, default=20)
    a = ap.parse_args()

    port = free_port()
    state = tempfile.mkdtemp(prefix="nodeagent-bench-")
    parent = f"/nodeagent-bench-{os.getpid()}"
    name = f"nae2e-bench-{os.getpid()}"
    agent = subprocess.Popen(
        [BIN, "run", "--listen", f"127.0.0.1:{port}", "--state-dir", state,
         "--cgroup-parent", parent, "--log-level", "warn", "--stop-grace", "1s"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    c = None
    try:
        for _ in range(200):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                c.request("GET", "/readyz")
                r = c.getresponse()
                r.read()
                if r.status == 200:
                    break
            except OSError:
                c = None
            time.sleep(0.05)
        with open(os.path.join(state, "token")) as f:
            auth = "Bearer " + f.read().strip()
        # TCP_NODELAY on the client too, or a small request may wait for a delayed ACK.
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def call(method, path, body=None):
            c.request(method, path, body=json.dumps(body) if body is not None else None,
                      headers={"Content-Type": "application/json", "Authorization": auth})
            r = c.getresponse()
            return r.status, r.read()

        st, body = call("POST", "/v1/objects?wait=true", {
            "name": name, "kind": "container", "labels": {"test": "nodeagent-e2e"},
            "container": {"image": "busybox:local", "command": ["sleep", "3600"]},
            "resources": {"cpu": 1}})
        assert st == 201, body
        obj = json.loads(body)
        oid, cid = obj["id"], obj["container"]["id"]
        quota = f"/sys/fs/cgroup/cpu{obj['cgroup']}/cpu.cfs_quota_us"
        d = UnixHTTP(DOCKER_SOCK)

        def docker(method, path, body=None):
            d.request(method, "/v1.41" + path, body=json.dumps(body) if body is not None else None,
                      headers={"Content-Type": "application/json"})
            r = d.getresponse()
            return r.status, r.read()

        def nano():
            st, b = docker("GET", f"/containers/{cid}/json")
            assert st == 200, b
            return json.loads(b)["HostConfig"]["NanoCpus"]

        # 1. PATCH latency, and the quota in the file when the answer arrives.
        lat, stale = [], 0
        for i in range(a.updates):
            cpu = 0.5 + (i % 10) / 10
            t0 = time.perf_counter()
            st, b = call("PATCH", f"/v1/objects/{oid}", {"resources": {"cpu": cpu}})
            t1 = time.perf_counter()
            assert st == 200, b
            with open(quota) as f:
                if int(f.read()) != round(cpu * 100000):
                    stale += 1
            lat.append(t1 - t0)
        print(f"container {name} ({cid[:12]}): {a.updates} PATCHes of cpu back to back over HTTP "
              f"(Docker syncs running alongside)")
        row("agent PATCH cpu (HTTP round trip)", lat)
        print(f"{'quota read back stale right after the answer':<46} {stale} of {a.updates}")

        # 2. Until Docker agrees, and until the object says so.
        for _ in range(2000):
            st, b = call("GET", f"/v1/objects/{oid}")
            if json.loads(b)["container"]["sync"] == "in_sync":
                break
            time.sleep(0.005)
        agree, insync, spaced, spaced_stale = [], [], [], 0
        for i in range(a.agree):
            cpu = 1.0 + (i % 2) * 0.5 + 0.01 * (i % 7)
            want = round(cpu * 100000) * 10000
            t0 = time.perf_counter()
            st, b = call("PATCH", f"/v1/objects/{oid}", {"resources": {"cpu": cpu}})
            t1 = time.perf_counter()
            spaced.append(t1 - t0)
            with open(quota) as f:
                if int(f.read()) != round(cpu * 100000):
                    spaced_stale += 1
            while nano() != want:
                time.sleep(0.0005)
            agree.append(time.perf_counter() - t1)
            while json.loads(call("GET", f"/v1/objects/{oid}")[1])["container"]["sync"] != "in_sync":
                time.sleep(0.0005)
            insync.append(time.perf_counter() - t1)
        print(f"{a.agree} PATCHes one at a time (each after the previous sync finished)")
        row("agent PATCH cpu (HTTP round trip)", spaced)
        print(f"{'quota read back stale right after the answer':<46} {spaced_stale} of {a.agree}")
        row("PATCH answered -> docker inspect agrees", agree)
        row("PATCH answered -> object says in_sync", insync)

        # 3. Docker's own update, over the API and through the CLI.
        dl = []
        for i in range(a.docker_updates):
            cpu = 0.5 + (i % 10) / 10
            t0 = time.perf_counter()
            st, b = docker("POST", f"/containers/{cid}/update", {"NanoCpus": int(cpu * 1e9)})
            dl.append(time.perf_counter() - t0)
            assert st == 200, b
        row("docker update API (POST /containers/{id}/update)", dl)
        cl = []
        for i in range(a.cli_updates):
            t0 = time.perf_counter()
            subprocess.run(["docker", "update", "--cpus", str(0.5 + (i % 10) / 10), cid],
                           check=True, stdout=subprocess.DEVNULL)
            cl.append(time.perf_counter() - t0)
        row("docker update --cpus (CLI)", cl)
        print(f"speed-up of the agent's p50 over Docker's API p50: "
              f"{pct(dl, 50) / pct(lat, 50):.0f}x")

        call("DELETE", f"/v1/objects/{oid}?wait=true")
    finally:
        subprocess.run(["docker", "rm", "-f", name], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        agent.terminate()
        agent.wait(timeout=30)
        for ctrl in os.listdir("/sys/fs/cgroup"):
            p = os.path.join("/sys/fs/cgroup", ctrl, parent.lstrip("/"))
            if os.path.isdir(p):
                try:
                    os.rmdir(p)
                except OSError:
                    pass


if __name__ == "__main__":
    main()
