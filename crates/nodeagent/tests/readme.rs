//! The README, run as a new user runs it (issue 21, item 6): every shell block of README.md, in
//! order, in ONE bash session (so `A`, `T` and the files one block writes carry over to the
//! next), in a fresh temporary directory, against the binary cargo built for the tests.
//!
//! What the test does to the blocks, and nothing more:
//!
//! - **Which blocks.** Every fence tagged `sh` (or `bash`, `shell`) runs, unless the line just
//!   before it is `<!-- readme-test: skip: REASON -->`. A block that cannot run here (the test
//!   suite itself, a Kubernetes cluster, a VM guest, an image from a registry, an illustrative
//!   id) says why there; a new block can thus never be left out silently. A marker anywhere else
//!   (not just above a shell fence), an unknown directive or a skip without a reason fails.
//! - **`<!-- readme-test: interrupt: REASON -->`** marks a block whose commands each follow a
//!   stream until Ctrl-C: each command gets [`INTERRUPT_AFTER`], then SIGINT (`timeout -s INT`),
//!   and must still have been running then (a follow that ends by itself fails).
//! - **The binary.** `nodeagent` on PATH is a symlink to `CARGO_BIN_EXE_nodeagent`: `alias`
//!   does not work in a non-interactive bash, so `alias nodeagent=...` lines are dropped,
//!   `target/release/nodeagent` becomes `nodeagent`, and a line starting `cargo run --release --`
//!   starts `nodeagent` instead.
//! - **curl** on PATH is a wrapper that adds `--fail-with-body`: the README's requests are all
//!   meant to succeed, and a 4xx/5xx answer must fail the block, not pass unnoticed.
//! - **The daemon's terminal.** A line that runs `nodeagent run` in the foreground (not ended by
//!   `&`) is what the README asks to type in the daemon's own terminal: the test stops the daemon
//!   it started for an earlier such line with SIGINT (Ctrl-C) and waits for it to exit, starts
//!   this one in the background (output to a log of its own) and waits until it has logged
//!   `nodeagent ready` and its `/readyz` answers 200. Lines ended by `&` run as written.
//! - **Strictness.** The session runs `set -euo pipefail`: any failing command fails its block.
//!   A command the README expects to fail says so itself (`|| echo "exit $?"`).
//! - **Where.** The working directory is a fresh temp dir (`./nodeagent-data` and the files the
//!   blocks write go there). The session runs in a cgroup of its own,
//!   `/nodeagent-e2e-readme-<random>` in every v1 hierarchy, so the agents' default cgroup
//!   parent (`<own cgroup>/nodeagent`) lands beneath it. The README's ports are used as written:
//!   the test checks first that they are free, and fails saying which one is not, rather than
//!   moving the README to other ports.
//!
//! A failing block fails the test with its number, its README line, why, and the tail of its
//! output. Whatever happens, the guard then deletes the objects of every agent still running
//! (found by the `nodeagent.pid` files under the working dir), stops every process the session
//! started, kills what is left in the session's cgroups (and in new cgroup parents named by the
//! config files the blocks wrote) and removes them, and removes the containers the agents created.
//!
//! One test in this binary: the README's ports and names allow one run at a time.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a follow command of an `interrupt` block runs before its Ctrl-C.
const INTERRUPT_AFTER: Duration = Duration::from_secs(2);
/// The longest one part of a block may take.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(180);
/// The longest a foreground daemon may take to be ready, or to stop after SIGINT.
const DAEMON_TIMEOUT: Duration = Duration::from_secs(60);
/// The ports on 127.0.0.1 the README's runnable blocks listen on, checked free before the run.
const README_PORTS: &[(u16, &str)] = &[
    (7464, "the agent of the tour"),
    (7465, "`nodeagent sink` of Reporting upstream"),
    (4222, "`nats-server` of Fleet control over NATS"),
    (7481, "node-a of Fleet control over NATS"),
    (7482, "node-b of Fleet control over NATS"),
];
/// The v1 controllers the agent uses (crates/drivers/src/cgroup/v1.rs).
const CONTROLLERS: &[&str] = &[
    "cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "freezer",
];

#[derive(Debug, Clone, PartialEq)]
enum Mode {
    Run,
    Skip(String),
    Interrupt(String),
}

/// One shell fence of the README.
#[derive(Debug)]
struct Block {
    /// 1-based, among the shell blocks.
    index: usize,
    /// The README line of the opening fence.
    line: usize,
    lines: Vec<String>,
    mode: Mode,
}

/// A part of a block as the test runs it.
#[derive(Debug, PartialEq)]
enum Part {
    /// Lines for the bash session.
    Shell(String),
    /// A foreground `nodeagent run ...` line (comment stripped).
    Daemon(String),
}

fn readme_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md")
}

/// The shell blocks of `text`, with their markers; Err on a misplaced or malformed marker.
fn parse_readme(text: &str) -> Result<Vec<Block>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    let mut used_markers = BTreeSet::new();
    let mut i = 0;
    while i < lines.len() {
        let trimmed = lines[i].trim_start();
        let Some(info) = trimmed.strip_prefix("```") else {
            i += 1;
            continue;
        };
        let info = info.trim().to_string();
        let start = i;
        let mut body = Vec::new();
        i += 1;
        while i < lines.len() && lines[i].trim() != "```" {
            body.push(lines[i].to_string());
            i += 1;
        }
        if i == lines.len() {
            return Err(format!(
                "README.md line {}: the fence is never closed",
                start + 1
            ));
        }
        i += 1;
        let shell = matches!(info.as_str(), "sh" | "bash" | "shell");
        let marker = match start.checked_sub(1) {
            Some(p) => parse_marker(lines[p], p + 1)?.map(|m| (p, m)),
            None => None,
        };
        if let Some((p, _)) = &marker {
            if !shell {
                return Err(format!(
                    "README.md line {}: a readme-test marker above a ```{info} fence, which the \
                     test does not run anyway",
                    p + 1
                ));
            }
            used_markers.insert(*p);
        }
        if shell {
            blocks.push(Block {
                index: blocks.len() + 1,
                line: start + 1,
                lines: body,
                mode: marker.map(|(_, m)| m).unwrap_or(Mode::Run),
            });
        }
    }
    for (n, l) in lines.iter().enumerate() {
        if l.contains("readme-test")
            && l.trim_start().starts_with("<!--")
            && !used_markers.contains(&n)
        {
            return Err(format!(
                "README.md line {}: a readme-test marker must be on the line just before a \
                 ```sh fence: {l}",
                n + 1
            ));
        }
    }
    Ok(blocks)
}

/// `<!-- readme-test: skip: REASON -->` or `<!-- readme-test: interrupt: REASON -->`.
fn parse_marker(line: &str, line_no: usize) -> Result<Option<Mode>, String> {
    let Some(body) = line
        .trim()
        .strip_prefix("<!--")
        .and_then(|b| b.strip_suffix("-->"))
        .and_then(|b| b.trim().strip_prefix("readme-test:"))
    else {
        return Ok(None);
    };
    let body = body.trim();
    let (directive, reason) = body.split_once(':').unwrap_or((body, ""));
    let reason = reason.trim().to_string();
    if reason.is_empty() {
        return Err(format!(
            "README.md line {line_no}: a readme-test marker needs a reason: {line}"
        ));
    }
    match directive.trim() {
        "skip" => Ok(Some(Mode::Skip(reason))),
        "interrupt" => Ok(Some(Mode::Interrupt(reason))),
        other => Err(format!(
            "README.md line {line_no}: unknown readme-test directive {other:?} (skip or \
             interrupt): {line}"
        )),
    }
}

/// The shell's quoting where a line ends: inside a single- or double-quoted string or not.
#[derive(Default, Clone, Copy)]
struct Quoting {
    single: bool,
    double: bool,
}

/// Scans `line` from `q`; returns the state at its end, whether it continues (`\` at the end),
/// the byte offset of a comment (if any), and a heredoc terminator it opens (if any).
fn scan(line: &str, mut q: Quoting) -> (Quoting, bool, Option<usize>, Option<String>) {
    let b = line.as_bytes();
    let mut i = 0;
    let mut heredoc = None;
    let mut comment = None;
    let mut escaped_end = false;
    while i < b.len() {
        let c = b[i];
        if q.single {
            if c == b'\'' {
                q.single = false;
            }
        } else if q.double {
            if c == b'\\' {
                i += 1;
            } else if c == b'"' {
                q.double = false;
            }
        } else {
            match c {
                b'\\' => {
                    if i + 1 == b.len() {
                        escaped_end = true;
                    }
                    i += 1;
                }
                b'\'' => q.single = true,
                b'"' => q.double = true,
                b'#' if i == 0 || b[i - 1].is_ascii_whitespace() => {
                    comment = Some(i);
                    break;
                }
                b'<' if b.get(i + 1) == Some(&b'<') && b.get(i + 2) != Some(&b'<') => {
                    let rest = line[i + 2..].trim_start_matches('-').trim_start();
                    let word: String = rest
                        .trim_start_matches(['\'', '"'])
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !word.is_empty() {
                        heredoc = Some(word);
                    }
                    i += 1;
                }
                _ => {}
            }
        }
        i += 1;
    }
    (q, escaped_end, comment, heredoc)
}

/// The documented substitutions (see the module comment), applied to one line.
fn substitute(line: &str) -> String {
    let trimmed = line.trim_start();
    if trimmed.starts_with("alias nodeagent=") {
        return format!("# (readme test: nodeagent is on PATH) {trimmed}");
    }
    let indent = &line[..line.len() - trimmed.len()];
    let line = match trimmed.strip_prefix("cargo run --release --") {
        Some(rest) => format!("{indent}nodeagent{rest}"),
        None => line.to_string(),
    };
    line.replace("target/release/nodeagent", "nodeagent")
}

/// Splits a runnable block into parts: shell lines, and foreground daemon lines on their own.
/// In an `interrupt` block every command is prefixed with the interrupting wrapper.
fn parts(block: &Block) -> Vec<Part> {
    let interrupt = matches!(block.mode, Mode::Interrupt(_));
    let mut out = Vec::new();
    let mut shell = String::new();
    let mut q = Quoting::default();
    let mut continued = false;
    let mut heredoc: Option<String> = None;
    for raw in &block.lines {
        let line = substitute(raw);
        if let Some(end) = &heredoc {
            if line.trim() == end {
                heredoc = None;
            }
            shell.push_str(&line);
            shell.push('\n');
            continue;
        }
        let starts_command = !continued && !q.single && !q.double;
        let (nq, cont, comment, opens) = scan(&line, q);
        let code = comment.map_or(line.as_str(), |c| &line[..c]).trim();
        if starts_command && !code.is_empty() {
            // One plain command: `nodeagent run ... &`, `... ; ...` and pipes run in the shell.
            let daemon = (code == "nodeagent run" || code.starts_with("nodeagent run "))
                && !code.contains(['&', ';', '|'])
                && !cont
                && opens.is_none();
            if daemon {
                assert!(
                    !interrupt,
                    "README block {} (line {}): a daemon line in an interrupt block",
                    block.index, block.line
                );
                if !shell.trim().is_empty() {
                    out.push(Part::Shell(std::mem::take(&mut shell)));
                }
                shell.clear();
                out.push(Part::Daemon(code.to_string()));
                q = nq;
                continued = cont;
                continue;
            }
            if interrupt {
                shell.push_str("__readme_interrupt ");
            }
        }
        shell.push_str(&line);
        shell.push('\n');
        q = nq;
        continued = cont;
        heredoc = opens;
    }
    if !shell.trim().is_empty() {
        out.push(Part::Shell(shell));
    }
    out
}

/// The last `n` lines of a file.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|e| format!("({}: {e})", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    let mut s = String::new();
    if from > 0 {
        let _ = writeln!(s, "[... {from} earlier lines]");
    }
    for l in &lines[from..] {
        let _ = writeln!(s, "{l}");
    }
    s
}

fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// The first `name` on PATH outside `skip`.
fn which(name: &str, skip: &Path) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .filter(|d| d != skip)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// `GET /readyz` on `addr`: its status code.
fn readyz(addr: SocketAddr) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.split_whitespace().nth(1)?.parse().ok()
}

/// The pid's process group, from `/proc/<pid>/stat`.
fn pgrp_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(2)?.parse().ok()
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}

fn alive(pid: i32) -> bool {
    pid > 0 && !common::process_gone(pid as u32)
}

/// Runs `cmd` with a time limit; its status and stdout (None if it had to be killed).
fn run_limited(cmd: &mut Command, limit: Duration, scratch: &Path) -> Option<(ExitStatus, String)> {
    let out = scratch.join("cleanup.out");
    let file = std::fs::File::create(&out).ok()?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let start = Instant::now();
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some((st, std::fs::read_to_string(&out).unwrap_or_default()));
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The bash session, and everything needed to clean up after it (on drop, even after a failure).
struct Session {
    bash: Child,
    stdin: Option<ChildStdin>,
    pid: i32,
    /// The working directory the blocks run in.
    work: PathBuf,
    /// Scripts, outputs and logs of the test itself (not visible to the blocks).
    scratch: PathBuf,
    /// `nodeagent-e2e-readme-<random>`: the session's cgroup, in every v1 hierarchy.
    cgroup: String,
    /// Top-level cgroup names present in any hierarchy before the run.
    top_before: BTreeSet<String>,
    /// Containers labelled `nodeagent.id` before the run.
    containers_before: BTreeSet<String>,
    /// The foreground daemon (the "daemon's terminal"): pid and log.
    daemon: Option<(i32, PathBuf)>,
    seq: usize,
    _tmp: tempfile::TempDir,
}

fn top_level_cgroups() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    if let Ok(hs) = std::fs::read_dir(common::CGROUP_ROOT) {
        for h in hs.flatten() {
            if let Ok(rd) = std::fs::read_dir(h.path()) {
                for e in rd.flatten() {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        names.insert(e.file_name().to_string_lossy().into_owned());
                    }
                }
            }
        }
    }
    names
}

fn agent_containers() -> Vec<(String, String, String)> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--no-trunc",
            "--filter",
            "label=nodeagent.id",
            "--format",
            "{{.ID}}\t{{.Names}}\t{{.Label \"test\"}}",
        ])
        .stderr(Stdio::null())
        .output();
    let Ok(out) = out else { return Vec::new() };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            Some((
                f.next()?.to_string(),
                f.next().unwrap_or("").to_string(),
                f.next().unwrap_or("").to_string(),
            ))
        })
        .collect()
}

impl Session {
    fn start() -> Session {
        let tmp = tempfile::tempdir().unwrap();
        let work = tmp.path().join("work");
        let bin = tmp.path().join("bin");
        let scratch = tmp.path().join("test");
        for d in [&work, &bin, &scratch] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::os::unix::fs::symlink(common::bin(), bin.join("nodeagent")).unwrap();
        let curl = which("curl", &bin).expect("curl is not on PATH: the README's blocks use it");
        std::fs::write(
            bin.join("curl"),
            format!(
                "#!/bin/sh\n# readme test: a 4xx/5xx answer fails the command\nexec {} \
                 --fail-with-body \"$@\"\n",
                shell_quote(&curl)
            ),
        )
        .unwrap();
        std::fs::set_permissions(
            bin.join("curl"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();

        let top_before = top_level_cgroups();
        let containers_before = agent_containers().into_iter().map(|c| c.0).collect();
        let cgroup = format!("nodeagent-e2e-readme-{}", common::random_suffix());

        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![bin.clone()];
        paths.extend(std::env::split_paths(&path));
        let mut cmd = Command::new("bash");
        cmd.args(["--noprofile", "--norc", "-s"])
            .current_dir(&work)
            .env("PATH", std::env::join_paths(paths).unwrap())
            .stdin(Stdio::piped())
            .stdout(std::fs::File::create(scratch.join("session.log")).unwrap())
            .stderr(std::fs::File::create(scratch.join("session.err")).unwrap())
            .process_group(0);
        for (k, _) in std::env::vars_os() {
            if let Some(k) = k.to_str() {
                if k.starts_with("NODEAGENT_") || k == "RUST_LOG" || k.starts_with("OTEL_") {
                    cmd.env_remove(k);
                }
            }
        }
        // SAFETY: prctl is async-signal-safe, and the closure touches nothing else.
        unsafe {
            cmd.pre_exec(|| {
                // Orphans of the session (a daemon's children once it stops) come back to bash,
                // which reaps them, rather than to init.
                libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
                Ok(())
            });
        }
        let mut bash = cmd.spawn().expect("starting bash");
        let pid = bash.id() as i32;
        let stdin = bash.stdin.take();
        let mut s = Session {
            bash,
            stdin,
            pid,
            work,
            scratch,
            cgroup,
            top_before,
            containers_before,
            daemon: None,
            seq: 0,
            _tmp: tmp,
        };
        s.enter_cgroup();
        s.send(&format!(
            "set -euo pipefail\n\
             __readme_interrupt() {{\n\
               local rc=0\n\
               timeout -s INT {secs} \"$@\" || rc=$?\n\
               if [ \"$rc\" -ne 124 ]; then\n\
                 echo \"readme test: '$*' ended by itself (exit $rc) before its Ctrl-C after \
             {secs} s\" >&2\n\
                 return 1\n\
               fi\n\
             }}\n",
            secs = INTERRUPT_AFTER.as_secs()
        ));
        s
    }

    /// Moves bash (before it runs anything) into the session's cgroup in every v1 hierarchy.
    fn enter_cgroup(&self) {
        let root = Path::new(common::CGROUP_ROOT);
        for h in std::fs::read_dir(root).unwrap().flatten() {
            let name = h.file_name().to_string_lossy().into_owned();
            if h.path().is_symlink() || !name.split(',').any(|c| CONTROLLERS.contains(&c)) {
                continue;
            }
            let dir = h.path().join(&self.cgroup);
            std::fs::create_dir_all(&dir)
                .unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
            if name.split(',').any(|c| c == "cpuset") {
                for f in ["cpuset.cpus", "cpuset.mems"] {
                    let v = std::fs::read_to_string(h.path().join(f)).unwrap();
                    std::fs::write(dir.join(f), v.trim()).unwrap();
                }
            }
            std::fs::write(dir.join("cgroup.procs"), self.pid.to_string())
                .unwrap_or_else(|e| panic!("moving bash into {}: {e}", dir.display()));
        }
    }

    fn send(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("the session's stdin");
        stdin
            .write_all(text.as_bytes())
            .and_then(|_| stdin.flush())
            .unwrap_or_else(|e| panic!("writing to the bash session: {e}"));
    }

    fn bash_exited(&mut self) -> Option<ExitStatus> {
        self.bash.try_wait().ok().flatten()
    }

    /// Runs shell lines in the session; Err(why) with the output's path.
    fn run_shell(&mut self, text: &str) -> (Result<(), String>, PathBuf) {
        self.seq += 1;
        let script = self.scratch.join(format!("part-{}.sh", self.seq));
        let out = self.scratch.join(format!("part-{}.out", self.seq));
        let rc = self.scratch.join(format!("part-{}.rc", self.seq));
        std::fs::write(&script, text).unwrap();
        let (s, o, r) = (shell_quote(&script), shell_quote(&out), shell_quote(&rc));
        self.send(&format!(
            "source {s} < /dev/null > {o} 2>&1; echo $? > {r}.tmp; mv {r}.tmp {r}\n"
        ));
        let start = Instant::now();
        loop {
            if let Ok(code) = std::fs::read_to_string(&rc) {
                let code = code.trim();
                return if code == "0" {
                    (Ok(()), out)
                } else {
                    (Err(format!("it exited with status {code}")), out)
                };
            }
            if let Some(st) = self.bash_exited() {
                return (
                    Err(format!(
                        "a command failed and ended the session (set -e): {st}"
                    )),
                    out,
                );
            }
            if start.elapsed() > BLOCK_TIMEOUT {
                return (
                    Err(format!("it did not finish within {BLOCK_TIMEOUT:?}")),
                    out,
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Stops the foreground daemon as Ctrl-C does.
    fn stop_daemon(&mut self) -> Result<(), String> {
        let Some((pid, log)) = self.daemon.take() else {
            return Ok(());
        };
        signal(pid, libc::SIGINT);
        let start = Instant::now();
        while alive(pid) {
            if start.elapsed() > DAEMON_TIMEOUT {
                self.daemon = Some((pid, log.clone()));
                return Err(format!(
                    "the daemon started before (pid {pid}) did not stop within \
                     {DAEMON_TIMEOUT:?} of SIGINT; its log ends:\n{}",
                    tail(&log, 30)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// A foreground `nodeagent run` line: the daemon's terminal (see the module comment).
    fn run_daemon(&mut self, command: &str) -> (Result<(), String>, PathBuf) {
        self.seq += 1;
        let log = self.scratch.join(format!("daemon-{}.log", self.seq));
        if let Err(e) = self.stop_daemon() {
            return (Err(e), log);
        }
        let script = self.scratch.join(format!("part-{}.sh", self.seq));
        let pidf = self.scratch.join(format!("part-{}.pid", self.seq));
        std::fs::write(&script, format!("exec {command}\n")).unwrap();
        let (s, l, p) = (shell_quote(&script), shell_quote(&log), shell_quote(&pidf));
        self.send(&format!(
            "( source {s} ) < /dev/null > {l} 2>&1 &\necho $! > {p}.tmp; mv {p}.tmp {p}\n"
        ));
        let start = Instant::now();
        let pid = loop {
            if let Some(pid) = std::fs::read_to_string(&pidf)
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
            {
                break pid;
            }
            if self.bash_exited().is_some() || start.elapsed() > DAEMON_TIMEOUT {
                return (Err("the session did not start the daemon".into()), log);
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        self.daemon = Some((pid, log.clone()));
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let addr = text
                .lines()
                .find(|l| l.contains("nodeagent ready"))
                .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("http=")))
                .and_then(|a| a.parse::<SocketAddr>().ok());
            if let Some(addr) = addr {
                if readyz(addr) == Some(200) {
                    return (Ok(()), log);
                }
            }
            if !alive(pid) {
                self.daemon = None;
                return (Err("the daemon exited before it was ready".into()), log);
            }
            if start.elapsed() > DAEMON_TIMEOUT {
                return (
                    Err(format!(
                        "the daemon did not log `nodeagent ready` and answer /readyz 200 within \
                         {DAEMON_TIMEOUT:?}"
                    )),
                    log,
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Deletes the objects of every agent still running under the working dir, through its
    /// socket, so that the agents remove their own workloads, cgroups and containers.
    fn delete_objects(&self) {
        let Ok(rd) = std::fs::read_dir(&self.work) else {
            return;
        };
        for e in rd.flatten() {
            let Ok(pidfile) = std::fs::read_to_string(e.path().join("nodeagent.pid")) else {
                continue;
            };
            let field = |k: &str| {
                pidfile
                    .lines()
                    .find_map(|l| l.strip_prefix(k).map(str::to_string))
            };
            let (Some(pid), Some(socket)) = (field("pid="), field("socket=")) else {
                continue;
            };
            if !pid.parse::<i32>().is_ok_and(alive) {
                continue;
            }
            let socket = self.work.join(socket);
            let cli = |args: &[&str], limit| {
                let mut cmd = common::command();
                cmd.current_dir(&self.work)
                    .arg("--socket")
                    .arg(&socket)
                    .args(args);
                run_limited(&mut cmd, limit, &self.scratch)
            };
            let Some((_, list)) = cli(&["get", "-o", "json"], Duration::from_secs(20)) else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&list) else {
                continue;
            };
            let objects = v["objects"].as_array().cloned().unwrap_or_default();
            for o in objects.iter().filter(|o| o["kind"] != "host") {
                let (Some(id), name) = (o["id"].as_str(), o["name"].as_str().unwrap_or("?")) else {
                    continue;
                };
                let done = cli(&["delete", id, "--wait"], Duration::from_secs(60));
                eprintln!(
                    "readme test clean-up: delete {name} ({id}) on {}: {}",
                    e.file_name().to_string_lossy(),
                    match done {
                        Some((st, _)) if st.success() => "done".to_string(),
                        Some((st, _)) => format!("failed ({st})"),
                        None => "timed out".to_string(),
                    }
                );
            }
        }
    }

    /// Every process of the session's process group but bash itself.
    fn group_members(&self) -> Vec<i32> {
        let Ok(rd) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&p| p != self.pid && pgrp_of(p) == Some(self.pid) && alive(p))
            .collect()
    }

    /// Cgroup parents named by the config files the blocks wrote (`cgroup_parent = "/x"`) whose
    /// top-level directory did not exist before the run.
    fn new_config_parents(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let Ok(rd) = std::fs::read_dir(&self.work) else {
            return out;
        };
        for e in rd.flatten() {
            if e.path().extension().is_none_or(|x| x != "toml") {
                continue;
            }
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            for l in text.lines() {
                let Some((k, v)) = l.split_once('=') else {
                    continue;
                };
                if k.trim() != "cgroup_parent" {
                    continue;
                }
                let v = v.trim().trim_matches('"');
                let top = v.trim_start_matches('/').split('/').next().unwrap_or("");
                if !top.is_empty() && !self.top_before.contains(top) && top != self.cgroup {
                    out.insert(format!("/{top}"));
                }
            }
        }
        out
    }

    fn cleanup(&mut self) {
        // 1. The agents delete their objects (workloads, cgroups, containers) themselves.
        self.delete_objects();
        // 2. Every process the session started: daemons, nats-server, the sink.
        let members = self.group_members();
        for &p in &members {
            signal(p, libc::SIGTERM);
        }
        let start = Instant::now();
        while self.group_members().iter().any(|&p| alive(p))
            && start.elapsed() < Duration::from_secs(15)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        for p in self.group_members() {
            eprintln!("readme test clean-up: pid {p} ignored SIGTERM; SIGKILL");
            signal(p, libc::SIGKILL);
        }
        // 3. Bash itself: end of input.
        self.stdin = None;
        let start = Instant::now();
        while self.bash_exited().is_none() {
            if start.elapsed() > Duration::from_secs(5) {
                let _ = self.bash.kill();
                let _ = self.bash.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // 4. Whatever is left in the cgroups: workloads of an agent that could not delete them.
        for parent in self.new_config_parents() {
            common::remove_cgroup_tree(&parent);
        }
        common::remove_cgroup_tree(&format!("/{}", self.cgroup));
        // 5. Containers the agents created and did not remove.
        for (id, name, test) in agent_containers() {
            if !self.containers_before.contains(&id)
                && test.is_empty()
                && !name.starts_with("nae2e-")
            {
                eprintln!("readme test clean-up: docker rm -f {name}");
                let _ = Command::new("docker")
                    .args(["rm", "-f", &id])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Fails unless each port the README listens on is free.
fn require_ports_free(runnable: &str) {
    for &(port, what) in README_PORTS {
        assert!(
            runnable.contains(&port.to_string()),
            "README_PORTS names port {port} ({what}), which no runnable README block mentions: \
             update the list"
        );
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let in_use = TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
            || std::net::TcpListener::bind(addr).is_err();
        assert!(
            !in_use,
            "port {port} on 127.0.0.1 is in use, but the README's blocks use it for {what}: \
             the test runs them as written, on the README's ports. Stop what listens there \
             (ss -ltnp 'sport = :{port}') and run the test again"
        );
    }
}

#[test]
fn readme_shell_blocks_run_in_order() {
    common::require_docker();
    let readme = std::fs::read_to_string(readme_path()).unwrap();
    check_the_parser();
    let blocks = parse_readme(&readme).unwrap_or_else(|e| panic!("{e}"));
    assert!(!blocks.is_empty(), "README.md has no shell blocks");
    let runnable: String = blocks
        .iter()
        .filter(|b| !matches!(b.mode, Mode::Skip(_)))
        .flat_map(|b| b.lines.iter().map(|l| format!("{l}\n")))
        .collect();
    require_ports_free(&runnable);

    let mut session = Session::start();
    let total = Instant::now();
    let (mut ran, mut skipped) = (0, 0);
    for block in &blocks {
        if let Mode::Skip(reason) = &block.mode {
            eprintln!(
                "README block {} (line {}): skipped: {reason}",
                block.index, block.line
            );
            skipped += 1;
            continue;
        }
        let started = Instant::now();
        for part in parts(block) {
            let (result, output, what) = match &part {
                Part::Shell(text) => {
                    let (r, o) = session.run_shell(text);
                    (r, o, text.clone())
                }
                Part::Daemon(cmd) => {
                    let (r, o) = session.run_daemon(cmd);
                    (
                        r,
                        o,
                        format!("{cmd}    # in the daemon's terminal: run in the background\n"),
                    )
                }
            };
            if let Err(why) = result {
                let daemon = session
                    .daemon
                    .as_ref()
                    .filter(|(_, log)| *log != output)
                    .map(|(pid, log)| {
                        format!(
                            "\n--- the daemon's log (pid {pid}, last 30 lines) ---\n{}",
                            tail(log, 30)
                        )
                    })
                    .unwrap_or_default();
                panic!(
                    "README block {} (README.md line {}) failed: {why}\n--- what ran ---\n{what}\
                     --- its output (last 60 lines) ---\n{}{daemon}",
                    block.index,
                    block.line,
                    tail(&output, 60)
                );
            }
        }
        ran += 1;
        eprintln!(
            "README block {} (line {}): ran in {:.1} s{}",
            block.index,
            block.line,
            started.elapsed().as_secs_f64(),
            if matches!(block.mode, Mode::Interrupt(_)) {
                " (each command interrupted)"
            } else {
                ""
            }
        );
    }
    eprintln!(
        "README: {ran} blocks ran and {skipped} were skipped, in {:.1} s",
        total.elapsed().as_secs_f64()
    );
}

/// The parser and the rewriting on small cases, first (this binary holds one test only).
fn check_the_parser() {
    fn block(lines: &[&str], mode: Mode) -> Block {
        Block {
            index: 1,
            line: 1,
            lines: lines.iter().map(|s| s.to_string()).collect(),
            mode,
        }
    }

    // Daemon lines are split out and substituted; heredocs and quotes are not commands.
    let b = block(
        &[
            "cat > a.toml <<'EOF'",
            "nodeagent run",
            "EOF",
            "cargo run --release -- run     # the daemon",
            "nodeagent run --config x.toml &",
            "nodeagent run --config y.toml & sleep 1",
            "target/release/nodeagent run --config a.toml",
            "curl -s -d '{\"a\":",
            "nodeagent run'",
            "alias nodeagent=target/release/nodeagent",
        ],
        Mode::Run,
    );
    assert_eq!(
        parts(&b),
        vec![
            Part::Shell("cat > a.toml <<'EOF'\nnodeagent run\nEOF\n".into()),
            Part::Daemon("nodeagent run".into()),
            Part::Shell(
                "nodeagent run --config x.toml &\nnodeagent run --config y.toml & sleep 1\n".into()
            ),
            Part::Daemon("nodeagent run --config a.toml".into()),
            Part::Shell(
                "curl -s -d '{\"a\":\nnodeagent run'\n\
                 # (readme test: nodeagent is on PATH) alias nodeagent=target/release/nodeagent\n"
                    .into()
            ),
        ]
    );

    // An interrupt block prefixes each command once, not its continuation lines.
    let b = block(
        &[
            "# a comment",
            "curl -sN -H \"x: $(cat t)\" \\",
            "  http://h/stream",
            "nodeagent metrics web-1 -f   # follows",
        ],
        Mode::Interrupt("r".into()),
    );
    assert_eq!(
        parts(&b),
        vec![Part::Shell(
            "# a comment\n__readme_interrupt curl -sN -H \"x: $(cat t)\" \\\n  \
             http://h/stream\n__readme_interrupt nodeagent metrics web-1 -f   # follows\n"
                .into()
        )]
    );

    // Markers attach to the shell fence just below them, and only there.
    let text = "x\n<!-- readme-test: skip: why not -->\n```sh\nfalse\n```\n```toml\na=1\n```\n\
                ```sh\ntrue\n```\n";
    let b = parse_readme(text).unwrap();
    assert_eq!(b.len(), 2);
    assert_eq!((b[0].line, &b[0].mode), (3, &Mode::Skip("why not".into())));
    assert_eq!(
        (&b[1].lines, &b[1].mode),
        (&vec!["true".to_string()], &Mode::Run)
    );
    for (bad, why) in [
        (
            "<!-- readme-test: skip: x -->\n\n```sh\ntrue\n```\n",
            "just before",
        ),
        (
            "<!-- readme-test: skip -->\n```sh\ntrue\n```\n",
            "needs a reason",
        ),
        (
            "<!-- readme-test: maybe: x -->\n```sh\ntrue\n```\n",
            "unknown",
        ),
        (
            "<!-- readme-test: skip: x -->\n```toml\na=1\n```\n",
            "does not run",
        ),
    ] {
        let e = parse_readme(bad).err().unwrap_or_default();
        assert!(e.contains(why), "{bad:?} gave {e:?}, not {why:?}");
    }
}
