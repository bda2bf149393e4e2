#!/usr/bin/env python3
"""The vm kind (issue 18): boot to `running`, and the in-place CPU update of a running guest.

    sudo python3 bench/vm.py [--bin target/release/nodeagent] [--boots 3] [--updates 200]

Needs root, cgroup v1, qemu-system-x86_64 and the cached guest of scripts/vm-guest.sh
(NODEAGENT_TEST_VM_GUEST, or the newest /var/cache/nodeagent-test/vm-guest-*). Starts its own
agent on a private state dir (unix socket only) and the cgroup parent /nodeagent-bench-vm-<pid>;
deletes what it made. Python 3 standard library only. Prints a Markdown table.

- boot: POST ?wait=true until the object is `running`, (a) when QMP says running, (b) with
  `wait_for.console` = the guest's shell prompt marker.
- memory: PATCH vm.memory (balloon, 96Mi <-> 128Mi) until the object shows the size
  `query-balloon` reports, with its sync in_sync.
- cpu update: PATCH resources.cpu (alternating 0.5 / 0.2), the HTTP round trip; the quota is read
  back from cpu.cfs_quota_us after each one (it must be there when the PATCH answers).
"""
import argparse, glob, http.client, json, os, socket, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
READY = "NODEAGENT-GUEST-READY"


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=120)
        self.path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(120)
        s.connect(self.path)
        self.sock = s


def call(sock, method, path, body=None):
    c = UnixHTTP(sock)
    c.request(method, path, body=json.dumps(body) if body is not None else None,
              headers={"content-type": "application/json"})
    r = c.getresponse()
    data = r.read()
    c.close()
    try:
        return r.status, (json.loads(data) if data.strip() else None)
    except ValueError:
        return r.status, data.decode(errors="replace")


def guest():
    d = os.environ.get("NODEAGENT_TEST_VM_GUEST")
    if not d:
        c = sorted(glob.glob("/var/cache/nodeagent-test/vm-guest-*"), key=os.path.getmtime)
        c = [x for x in c if not x.endswith(".tmp")]
        if not c:
            sys.exit("no test guest: run scripts/vm-guest.sh")
        d = c[-1]
    return os.path.join(d, "vmlinuz"), os.path.join(d, "initrd.img")


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "nodeagent"))
    ap.add_argument("--boots", type=int, default=3)
    ap.add_argument("--updates", type=int, default=200)
    ap.add_argument("--balloons", type=int, default=10)
    a = ap.parse_args()
    kernel, initrd = guest()
    tmp = tempfile.mkdtemp(prefix="nodeagent-bench-vm-")
    parent = f"/nodeagent-bench-vm-{os.getpid()}"
    sock = os.path.join(tmp, "nodeagent.sock")
    agent = subprocess.Popen([a.bin, "run", "--state-dir", tmp, "--cgroup-parent", parent,
                              "--log-level", "warn"], stdout=subprocess.DEVNULL,
                             stderr=open(os.path.join(tmp, "agent.log"), "w"))
    try:
        for _ in range(200):
            try:
                if call(sock, "GET", "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.05)
        base = {"kernel": kernel, "initrd": initrd, "memory": "128Mi", "shutdown_grace": "10s"}
        boots = {"qmp": [], "console": []}
        for i in range(a.boots):
            for mode in ("qmp", "console"):
                vm = dict(base)
                if mode == "console":
                    vm["wait_for"] = {"console": READY}
                name = f"b{mode}{i}"
                t = time.perf_counter()
                s, b = call(sock, "POST", "/v1/objects?wait=true",
                            {"name": name, "kind": "vm", "vm": vm})
                dt = time.perf_counter() - t
                assert s in (200, 201), (s, b)
                assert b.get("object", b)["status"] == "running", b
                boots[mode].append(dt)
                accel = b.get("object", b)["vm"]["accel_used"]
                s, _ = call(sock, "DELETE", f"/v1/objects/{name}?wait=true")
                assert s in (200, 204), s
        # CPU updates on one running guest.
        s, b = call(sock, "POST", "/v1/objects?wait=true",
                    {"name": "cpu", "kind": "vm", "vm": dict(base, wait_for={"console": READY})})
        assert s in (200, 201), (s, b)
        obj = b.get("object", b)
        quota = os.path.join("/sys/fs/cgroup/cpu", obj["cgroup"].lstrip("/"), "cpu.cfs_quota_us")
        lat = []
        for i in range(a.updates):
            cpu = 0.5 if i % 2 == 0 else 0.2
            t = time.perf_counter()
            s, b = call(sock, "PATCH", "/v1/objects/cpu", {"resources": {"cpu": cpu}})
            lat.append((time.perf_counter() - t) * 1e6)
            assert s == 200, (s, b)
            with open(quota) as f:
                assert int(f.read()) == int(cpu * 100000)
        call(sock, "DELETE", "/v1/objects/cpu?wait=true")
        # Balloon: PATCH vm.memory until the object shows the guest-visible size (the agent's
        # sync waits for QMP query-balloon to report it), alternating 96Mi / 128Mi.
        s, b = call(sock, "POST", "/v1/objects?wait=true",
                    {"name": "mem", "kind": "vm",
                     "vm": dict(base, balloon=True, wait_for={"console": READY})})
        assert s in (200, 201), (s, b)
        bal = []
        for i in range(a.balloons):
            want = (96 << 20) if i % 2 == 0 else (128 << 20)
            t = time.perf_counter()
            s, b = call(sock, "PATCH", "/v1/objects/mem", {"vm": {"memory": want}})
            assert s == 200, (s, b)
            while True:
                s, o = call(sock, "GET", "/v1/objects/mem")
                if o["vm"].get("memory_actual") == want and o["vm"].get("sync") == "in_sync":
                    break
                if time.perf_counter() - t > 20:
                    sys.exit(f"balloon: not at {want} after 20 s: {o['vm']}")
                time.sleep(0.002)
            bal.append(time.perf_counter() - t)
        call(sock, "DELETE", "/v1/objects/mem?wait=true")
        ms = lambda v: f"{statistics.median(v) * 1000:.0f} ms (min {min(v) * 1000:.0f}, max {max(v) * 1000:.0f})"
        print(f"accel: {accel}; binary: {a.bin}; {a.boots} boots each; {a.updates} cpu updates")
        print("| figure | nodeagent vm kind |")
        print("|---|---|")
        print(f"| boot to `running` (QMP running) | {ms(boots['qmp'])} |")
        print(f"| boot to `running` (console shows the shell) | {ms(boots['console'])} |")
        print(f"| cpu update, PATCH round trip p50 / p99 | {pct(lat, 50):.0f} / {pct(lat, 99):.0f} µs |")
        print(f"| memory by balloon (96Mi <-> 128Mi), PATCH to guest-visible | {ms(bal)} |")
    finally:
        agent.terminate()
        try:
            agent.wait(20)
        except subprocess.TimeoutExpired:
            agent.kill()
        # The agent's shutdown leaves VMs running (by design): kill what is left of ours.
        for f in glob.glob(f"/sys/fs/cgroup/memory/{parent.lstrip('/')}/*/cgroup.procs"):
            for pid in open(f).read().split():
                try:
                    os.kill(int(pid), 9)
                except OSError:
                    pass
        time.sleep(0.5)
        for d in sorted(glob.glob(f"/sys/fs/cgroup/*/{parent.lstrip('/')}"), reverse=True):
            for root, dirs, _ in os.walk(d, topdown=False):
                for x in dirs:
                    try:
                        os.rmdir(os.path.join(root, x))
                    except OSError:
                        pass
            try:
                os.rmdir(d)
            except OSError:
                pass
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
