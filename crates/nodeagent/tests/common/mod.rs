//! Helpers for the end-to-end tests: start the real `nodeagent` binary, talk HTTP to it, read
//! the real cgroup files, and clean up everything it created, even when a test fails.
//!
//! These tests need root and cgroup v1 at /sys/fs/cgroup (DESIGN.md §5). When either is missing
//! they fail with a message saying so; they never skip.
//!
//! TCP needs the bearer token (issue 7). Every helper that talks HTTP to a daemon started here
//! sends the token from the daemon's `<state-dir>/token`, found by port, so tests written before
//! the token existed keep working unchanged; [`raw_http`] sends exactly the headers it is given,
//! for tests of the authentication itself. [`grpc_client`] does the same for gRPC.

#![allow(dead_code, clippy::unwrap_used)]

pub mod k8s;
pub mod nats;
pub mod netns;

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The token file of each daemon started by these helpers, by port, so that [`try_http`] (which
/// only has a port) can authenticate.
static TOKEN_FILES: Mutex<BTreeMap<u16, PathBuf>> = Mutex::new(BTreeMap::new());

/// The token the daemon on `port` wrote, if one of these helpers started it and it has.
pub fn token_for(port: u16) -> Option<String> {
    let path = TOKEN_FILES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&port)
        .cloned()?;
    let t = std::fs::read_to_string(path).ok()?;
    let t = t.trim();
    (!t.is_empty()).then(|| t.to_string())
}

pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Panics (the test fails) unless the v1 controllers the agent drives are mounted and writable.
pub fn require_cgroup_v1() {
    for c in ["cpu", "memory", "pids", "freezer"] {
        let dir = Path::new(CGROUP_ROOT).join(c);
        let probe = if c == "cpu" {
            "cpu.cfs_quota_us"
        } else {
            "cgroup.procs"
        };
        assert!(
            dir.join(probe).exists(),
            "cgroup v1 controller {c:?} is not mounted at {} (no {probe}); these tests need a \
             cgroup v1 host (Debian 12 in hybrid mode) and root",
            dir.display()
        );
    }
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(uid, 0, "the end-to-end tests create cgroups and need root");
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

pub fn random_suffix() -> String {
    let mut b = [0u8; 6];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_nodeagent")
}

/// A `nodeagent` command with the caller's environment cleared of the agent's own variables,
/// so that a developer's NODEAGENT_LISTEN cannot change what a test tests.
pub fn command() -> Command {
    let mut cmd = Command::new(bin());
    for (k, _) in std::env::vars_os() {
        if let Some(k) = k.to_str() {
            if k.starts_with("NODEAGENT_") || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
    }
    cmd
}

pub struct Daemon {
    child: Option<Child>,
    pub port: u16,
    pub state_dir: PathBuf,
    pub cgroup_parent: String,
    log: PathBuf,
    _tmp: tempfile::TempDir,
}

/// How to start a daemon beyond the defaults the helper always sets (`--state-dir` in a temp
/// dir, `--cgroup-parent /nodeagent-e2e-<random>`).
#[derive(Default)]
pub struct Opts {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Pass `--listen 127.0.0.1:<port>`; when false, the test sets the address itself and
    /// names the port to expect in `port`.
    pub no_listen_flag: bool,
    pub port: Option<u16>,
    /// Use this state dir instead of a fresh one.
    pub state_dir: Option<PathBuf>,
    /// Use this cgroup parent instead of a fresh `/nodeagent-e2e-<random>` (a restart on the
    /// same state dir must find its cgroups again).
    pub cgroup_parent: Option<String>,
    /// The daemon's token file when the test moves it (`--token-file`); default
    /// `<state-dir>/token`.
    pub token_file: Option<PathBuf>,
}

impl Daemon {
    /// Starts the daemon on a free port and waits until `/readyz` answers 200.
    pub fn start() -> Daemon {
        Daemon::start_with(Opts::default())
    }

    pub fn start_with(opts: Opts) -> Daemon {
        let mut d = Daemon::spawn(opts);
        d.wait_ready();
        d
    }

    /// Starts the daemon without waiting for it.
    pub fn spawn(opts: Opts) -> Daemon {
        let tmp = tempfile::tempdir().unwrap();
        let state_dir = opts
            .state_dir
            .clone()
            .unwrap_or_else(|| tmp.path().join("state"));
        let cgroup_parent = opts
            .cgroup_parent
            .clone()
            .unwrap_or_else(|| format!("/nodeagent-e2e-{}", random_suffix()));
        let port = opts.port.unwrap_or_else(free_port);
        let log = tmp.path().join("daemon.log");
        let mut cmd = command();
        cmd.arg("run")
            .arg("--state-dir")
            .arg(&state_dir)
            .arg("--cgroup-parent")
            .arg(&cgroup_parent)
            .arg("--log-level")
            .arg("info");
        if !opts.no_listen_flag {
            cmd.arg("--listen").arg(format!("127.0.0.1:{port}"));
        }
        cmd.args(&opts.args);
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let token_file = opts
            .token_file
            .clone()
            .unwrap_or_else(|| state_dir.join("token"));
        TOKEN_FILES
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(port, token_file);
        let log_file = std::fs::File::create(&log).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file));
        let child = cmd.spawn().unwrap();
        Daemon {
            child: Some(child),
            port,
            state_dir,
            cgroup_parent,
            log,
            _tmp: tmp,
        }
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for `/readyz` = 200 on `self.port`; panics with the daemon's log otherwise.
    pub fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Ok((200, _)) = try_http(self.port, "GET", "/readyz", None) {
                return;
            }
            if self.exited() {
                panic!(
                    "the daemon exited before it was ready; its log:\n{}",
                    self.log()
                );
            }
            if start.elapsed() > READY_TIMEOUT {
                panic!(
                    "the daemon was not ready on port {} within {:?}; its log:\n{}",
                    self.port,
                    READY_TIMEOUT,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the daemon has exited (reaping it if so).
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            None => true,
            Some(c) => !matches!(c.try_wait(), Ok(None)),
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.state_dir.join("nodeagent.sock")
    }

    /// The API token the daemon wrote (`<state-dir>/token` unless the test moved it).
    pub fn token(&self) -> String {
        token_for(self.port).unwrap_or_else(|| {
            panic!(
                "no token file for the daemon on port {}; log:\n{}",
                self.port,
                self.log()
            )
        })
    }

    /// One HTTP request over TCP; the body is JSON.
    pub fn http(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let text = body.map(|b| b.to_string());
        let (status, body) = try_http(self.port, method, path, text.as_deref())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}; daemon log:\n{}", self.log()));
        let v = if body.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&body).unwrap_or(Value::String(body))
        };
        (status, v)
    }

    /// The text of a GET (e.g. `/metrics`).
    pub fn get_text(&self, path: &str) -> (u16, String) {
        try_http(self.port, "GET", path, None)
            .unwrap_or_else(|e| panic!("GET {path}: {e}; daemon log:\n{}", self.log()))
    }

    /// Runs the CLI against this daemon's unix socket.
    pub fn cli(&self, args: &[&str]) -> Output {
        command()
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    /// Waits for the daemon to exit, up to `timeout`; returns its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                self.child = None;
                return Some(st);
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the daemon with SIGKILL (its workloads keep running) and reaps it. The cgroup tree
    /// stays until this `Daemon` drops.
    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        assert!(
            self.wait_exit(Duration::from_secs(10)).is_some(),
            "the daemon did not die of SIGKILL"
        );
    }

    /// Stops the daemon with SIGTERM and returns its exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        match self.wait_exit(Duration::from_secs(20)) {
            Some(st) => st,
            None => panic!(
                "the daemon did not stop within 20 s of SIGTERM; log:\n{}",
                self.log()
            ),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal(libc::SIGTERM);
            if self.wait_exit(Duration::from_secs(10)).is_none() {
                if let Some(c) = self.child.as_mut() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
        }
        remove_cgroup_tree(&self.cgroup_parent);
        TOKEN_FILES
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.port);
    }
}

/// Kills whatever is left in `parent` (in every v1 hierarchy) and removes its cgroups, deepest
/// first, so a failed test leaves no `sleep 300` or cgroup behind.
pub fn remove_cgroup_tree(parent: &str) {
    let Ok(hierarchies) = std::fs::read_dir(CGROUP_ROOT) else {
        return;
    };
    let mut dirs = Vec::new();
    for h in hierarchies.flatten() {
        let top = h.path().join(parent.trim_start_matches('/'));
        if top.is_dir() && !h.path().is_symlink() {
            collect_dirs(&top, &mut dirs);
        }
    }
    for d in &dirs {
        if let Ok(procs) = std::fs::read_to_string(d.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        // A frozen cgroup's processes cannot die until it is thawed.
        let _ = std::fs::write(d.join("freezer.state"), "THAWED");
    }
    // Deepest first: collect_dirs pushes parents before children.
    for _ in 0..50 {
        let mut left = false;
        for d in dirs.iter().rev() {
            if d.exists() && std::fs::remove_dir(d).is_err() {
                left = true;
            }
        }
        if !left {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

/// The state letter of `/proc/<pid>/stat` (R, S, Z, ...), or None if there is no such process.
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.trim_start().chars().next()
}

/// Whether the process is gone: not in /proc, or only a zombie waiting to be reaped.
pub fn process_gone(pid: u32) -> bool {
    matches!(proc_state(pid), None | Some('Z') | Some('X'))
}

/// controller → cgroup path of a process, from `/proc/<pid>/cgroup` (v1 lines only).
pub fn cgroups_of(pid: u32) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/cgroup: {e}"));
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
        if let (Some(controllers), Some(path)) = (controllers, path) {
            for c in controllers.split(',').filter(|c| !c.is_empty()) {
                out.insert(c.to_string(), path.to_string());
            }
        }
    }
    out
}

/// The directory of `pid`'s cgroup in the v1 hierarchy of `controller`.
pub fn cgroup_dir(pid: u32, controller: &str) -> PathBuf {
    let cgs = cgroups_of(pid);
    let path = cgs
        .get(controller)
        .unwrap_or_else(|| panic!("pid {pid} has no {controller} cgroup: {cgs:?}"));
    Path::new(CGROUP_ROOT)
        .join(controller)
        .join(path.trim_start_matches('/'))
}

pub fn read_trim(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .trim()
        .to_string()
}

/// Polls `f` until it returns Some, or panics after `timeout` with `what`.
pub fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A minimal HTTP/1.1 exchange over TCP (`Connection: close`, chunked bodies decoded), so the
/// tests check the wire format themselves rather than trusting a client library's leniency.
/// Sends the bearer token of the daemon on `port` when one of these helpers started it.
pub fn try_http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let auth = token_for(port).map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    raw_http(port, method, path, body, &headers)
}

/// [`try_http`] with exactly the extra headers given, and no token unless among them.
pub fn raw_http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nAccept: application/json\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    } else if method != "GET" {
        req.push_str("Content-Length: 0\r\n");
    }
    req.push_str("\r\n");
    if let Some(b) = body {
        req.push_str(b);
    }
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> std::io::Result<(u16, String)> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if !chunked {
        return Ok((status, body.to_string()));
    }
    let mut out = String::new();
    let mut rest = body;
    loop {
        let (size, after) = rest.split_once("\r\n").ok_or_else(|| bad("bad chunk"))?;
        let n = usize::from_str_radix(size.trim(), 16).map_err(|_| bad("bad chunk size"))?;
        if n == 0 {
            break;
        }
        out.push_str(after.get(..n).ok_or_else(|| bad("short chunk"))?);
        rest = after.get(n + 2..).unwrap_or("");
    }
    Ok((status, out))
}

/// Adds the daemon's bearer token to every gRPC call.
#[derive(Clone)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub type GrpcClient = nodeagent_api::proto::agent_client::AgentClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>,
>;

/// A gRPC client of the daemon on `port` that sends its token (see [`try_http`]).
pub async fn grpc_client(port: u16) -> GrpcClient {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap_or_else(|e| panic!("gRPC connect to 127.0.0.1:{port}: {e}"));
    let bearer = Bearer(token_for(port).map(|t| format!("Bearer {t}").parse().unwrap()));
    nodeagent_api::proto::agent_client::AgentClient::with_interceptor(channel, bearer)
}

/// A process spec as the contract writes it.
pub fn sleep_spec(name: &str, cpu: f64, memory: &str) -> Value {
    serde_json::json!({
        "name": name,
        "kind": "process",
        "labels": {"test": "e2e"},
        "process": {"command": ["/bin/sleep", "300"]},
        "resources": {"cpu": cpu, "memory": memory},
        "collect": {"interval": "100ms"},
    })
}

/// The test image scripts/test.sh builds FROM scratch with busybox-static.
pub const TEST_IMAGE: &str = "busybox:local";

/// The docker CLI; a missing CLI fails the test.
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().unwrap()
}

/// Fails the test (never skips it) unless a Docker engine answers and the test image exists.
pub fn require_docker() {
    require_cgroup_v1();
    let out = Command::new("docker")
        .args(["version", "--format", "{{.Server.APIVersion}}"])
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "no Docker engine answers on /var/run/docker.sock ({}): start dockerd (Debian's \
             docker.io), or run scripts/test.sh, which installs and starts it",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!(
            "the docker CLI is missing ({e}): apt-get install docker.io, or run scripts/test.sh"
        ),
    }
    let img = docker(&["image", "inspect", "--format", "{{.Id}}", TEST_IMAGE]);
    assert!(
        img.status.success(),
        "the test image {TEST_IMAGE} is missing: scripts/test.sh builds it FROM scratch with \
         busybox-static"
    );
}

/// The object's recent samples (`GET /v1/objects/{key}/metrics`).
pub fn samples(d: &Daemon, key: &str) -> Vec<nodeagent_types::Sample> {
    let (status, m) = d.http("GET", &format!("/v1/objects/{key}/metrics"), None);
    assert_eq!(status, 200, "{m}");
    serde_json::from_value(m["samples"].clone()).unwrap()
}

/// CPU in cores over the samples of the last `window`.
pub fn cores(s: &[nodeagent_types::Sample], window: Duration) -> f64 {
    let last = s.last().unwrap();
    let first = s
        .iter()
        .find(|x| last.ts.as_nanos() - x.ts.as_nanos() <= window.as_nanos() as u64)
        .unwrap();
    let dt = (last.ts.as_nanos() - first.ts.as_nanos()) as f64;
    let du = (last.cpu_usage_ns.unwrap() - first.cpu_usage_ns.unwrap()) as f64;
    du / dt
}
