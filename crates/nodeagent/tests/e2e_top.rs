//! `nodeagent top` in a real terminal: tmux runs it in a detached session of its own server
//! (`tmux -L <unique>`), keys go in with `send-keys`, and the screen comes back with
//! `capture-pane`. The agent, its processes and the cgroup v1 files are real; the CPU change is
//! read back from `cpu.cfs_quota_us`.

#![allow(clippy::unwrap_used)]

mod common;

use common::{cgroup_dir, eventually, random_suffix, read_trim, require_cgroup_v1, Daemon};
use serde_json::{json, Value};
use std::process::{Command, Output};
use std::time::Duration;

/// A tmux server of the test's own, killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(width: u16, height: u16, command: &str) -> Tmux {
        let ok = Command::new("tmux").arg("-V").output();
        assert!(
            ok.is_ok_and(|o| o.status.success()),
            "tmux is not installed: these tests need it (apt-get install tmux; scripts/test.sh \
             installs it)"
        );
        let t = Tmux {
            socket: format!("nodeagent-top-{}", random_suffix()),
        };
        let out = t.run(&[
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            command,
        ]);
        assert!(out.status.success(), "tmux new-session: {out:?}");
        t
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .env("TERM", "xterm-256color")
            .output()
            .unwrap()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "top"];
        args.extend_from_slice(keys);
        let out = self.run(&args);
        assert!(out.status.success(), "send-keys {keys:?}: {out:?}");
    }

    /// Types text literally (no key names).
    fn type_text(&self, text: &str) {
        let out = self.run(&["send-keys", "-t", "top", "-l", text]);
        assert!(out.status.success(), "send-keys -l {text:?}: {out:?}");
    }

    fn screen(&self) -> String {
        let out = self.run(&["capture-pane", "-p", "-t", "top"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen satisfies `f`; panics with the screen otherwise.
    fn wait_for(&self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        for _ in 0..200 {
            last = self.screen();
            if f(&last) {
                return last;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("timed out waiting for {what}; the screen:\n{last}");
    }

    fn alive(&self) -> bool {
        self.run(&["has-session", "-t", "top"]).status.success()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// The object names on the screen, top to bottom (rows start with the selection mark or a space).
fn row_names(screen: &str) -> Vec<String> {
    screen
        .lines()
        .skip_while(|l| !l.contains("NAME"))
        .skip(1)
        .filter_map(|l| {
            l.trim_start_matches('>')
                .split_whitespace()
                .next()
                .map(str::to_string)
        })
        .filter(|n| n.starts_with("tt-"))
        .collect()
}

fn create(d: &Daemon, name: &str, command: &[&str]) -> Value {
    let spec = json!({
        "name": name, "kind": "process",
        "process": {"command": command},
        "resources": {"cpu": 0.5, "memory": "64Mi"},
        "collect": {"interval": "100ms"},
    });
    let (status, obj) = d.http("POST", "/v1/objects?wait=true", Some(&spec));
    assert_eq!(status, 201, "{obj}");
    obj
}

#[test]
fn top_sorts_filters_pauses_and_sets_cpu() {
    require_cgroup_v1();
    let d = Daemon::start();
    let busy = create(&d, "tt-z-busy", &["/bin/sh", "-c", "while :; do :; done"]);
    create(&d, "tt-a-idle", &["/bin/sleep", "300"]);
    create(&d, "tt-b-idle", &["/bin/sleep", "300"]);
    let pid = busy["pid"].as_u64().unwrap() as u32;

    let cmd = format!(
        "{} --state-dir {} top --interval 200ms",
        common::bin(),
        d.state_dir.display()
    );
    let t = Tmux::start(120, 20, &cmd);

    // Sorted by CPU: the busy loop first, once its rate is known.
    let s = t.wait_for("the busy object on top", |s| {
        row_names(s).first().map(String::as_str) == Some("tt-z-busy") && s.contains("cpu ")
    });
    assert!(s.contains("nodeagent top"), "{s}");
    assert!(
        s.contains("CPU HISTORY"),
        "a wide terminal has the sparkline column:\n{s}"
    );
    assert_eq!(row_names(&s).len(), 3, "{s}");

    // Sort by name, A to Z, then Z to A.
    t.keys(&["n"]);
    t.wait_for("name order", |s| {
        row_names(s) == ["tt-a-idle", "tt-b-idle", "tt-z-busy"]
    });
    t.keys(&["n"]);
    t.wait_for("reverse name order", |s| {
        row_names(s) == ["tt-z-busy", "tt-b-idle", "tt-a-idle"]
    });
    // Back to CPU.
    t.keys(&["c"]);
    t.wait_for("cpu order", |s| {
        row_names(s).first().map(String::as_str) == Some("tt-z-busy")
    });

    // Filter, then clear it.
    t.keys(&["/"]);
    t.type_text("idle");
    t.keys(&["Enter"]);
    let s = t.wait_for("the filter", |s| {
        let names = row_names(s);
        names.len() == 2 && names.iter().all(|n| n.contains("idle"))
    });
    assert!(s.contains("filter \"idle\""), "{s}");
    t.keys(&["/", "Escape"]);
    t.wait_for("no filter", |s| row_names(s).len() == 3);

    // Select the busy one (top row) and pause it: the screen and the API say so.
    t.keys(&["Home", "p"]);
    t.wait_for("paused on screen", |s| {
        s.lines()
            .any(|l| l.contains("tt-z-busy") && l.contains("paused"))
    });
    eventually(Duration::from_secs(5), "paused in the API", || {
        let (_, o) = d.http("GET", "/v1/objects/tt-z-busy", None);
        (o["status"] == "paused").then_some(())
    });
    t.keys(&["p"]);
    eventually(Duration::from_secs(5), "resumed in the API", || {
        let (_, o) = d.http("GET", "/v1/objects/tt-z-busy", None);
        (o["status"] == "running").then_some(())
    });

    // Set its CPU to 0.25 cores: the quota in the kernel's file follows.
    let quota = cgroup_dir(pid, "cpu").join("cpu.cfs_quota_us");
    assert_eq!(read_trim(&quota), "50000");
    t.keys(&["Home", "C"]);
    t.wait_for("the cpu prompt", |s| s.contains("cpu (cores"));
    t.type_text("0.25");
    t.keys(&["Enter"]);
    t.wait_for("the answer", |s| s.contains("cpu 0.25: done"));
    assert_eq!(read_trim(&quota), "25000");
    // A bad value gets the server's error, naming the field.
    t.keys(&["M"]);
    t.type_text("lots");
    t.keys(&["Enter"]);
    t.wait_for("the memory error", |s| s.contains("resources.memory"));

    // A narrow terminal drops columns; a tiny one says so instead of garbling.
    t.run(&["resize-window", "-t", "top", "-x", "50", "-y", "10"]);
    let s = t.wait_for("narrow layout", |s| {
        s.contains("STATUS") && !s.contains("KIND") && !s.contains("CPU HISTORY")
    });
    assert!(row_names(&s).contains(&"tt-z-busy".to_string()), "{s}");
    t.run(&["resize-window", "-t", "top", "-x", "30", "-y", "3"]);
    t.wait_for("too small", |s| s.contains("too small"));

    t.keys(&["q"]);
    eventually(Duration::from_secs(5), "top to quit", || {
        (!t.alive()).then_some(())
    });
}
