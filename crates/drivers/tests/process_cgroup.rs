//! Spawning straight into real cgroup v1 hierarchies (needs root and cgroup v1 mounts under
//! /sys/fs/cgroup; fails, rather than skips, where they are missing).

use nodeagent_drivers::process::{reap, signal, spawn, ExitStatus, SpawnSpec};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const HIERARCHIES: [&str; 2] = ["pids", "memory"];

/// Test cgroups, removed on drop (after the child is killed and reaped), even when an assertion
/// fails.
struct Fixture {
    dirs: Vec<PathBuf>,
    pid: Option<u32>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = signal(pid, libc::SIGKILL);
            let _ = wait_exit(pid);
        }
        for dir in &self.dirs {
            // The kernel may take a moment to let go of an exited task.
            for _ in 0..100 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn wait_exit(pid: u32) -> Option<ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(status) = reap(pid) {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

fn cgroup_lines(pid: &str) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .expect("read cgroup")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The path of `controller`'s hierarchy in a `/proc/<pid>/cgroup` listing.
fn path_in(lines: &[String], controller: &str) -> String {
    lines
        .iter()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers
                .split(',')
                .any(|c| c == controller)
                .then(|| path.to_owned())
        })
        .unwrap_or_else(|| panic!("no {controller} line in {lines:?}"))
}

fn session_of(pid: u32) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let rest = &stat[stat.rfind(')').expect(")") + 1..];
    rest.split_whitespace().nth(3).expect("session").to_owned()
}

#[test]
fn spawn_into_real_v1_cgroups() {
    for h in HIERARCHIES {
        let root = Path::new("/sys/fs/cgroup").join(h);
        assert!(
            root.join("cgroup.procs").is_file(),
            "{} is not a cgroup v1 hierarchy: this test needs cgroup v1 mounted",
            root.display()
        );
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos();
    let name = format!("nodeagent-test-{}-{nanos}", std::process::id());
    let mut fixture = Fixture {
        dirs: Vec::new(),
        pid: None,
    };
    for h in HIERARCHIES {
        let dir = Path::new("/sys/fs/cgroup").join(h).join(&name);
        std::fs::create_dir(&dir).expect("create test cgroup");
        fixture.dirs.push(dir);
    }
    let parent_before = cgroup_lines("self");

    let command = vec!["sleep".to_owned(), "30".to_owned()];
    let env = BTreeMap::new();
    let pid = spawn(SpawnSpec {
        command: &command,
        env: &env,
        cwd: None,
        stdout: File::create("/dev/null").expect("null"),
        stderr: File::create("/dev/null").expect("null"),
        cgroup_procs: fixture
            .dirs
            .iter()
            .map(|d| d.join("cgroup.procs"))
            .collect(),
    })
    .expect("spawn");
    fixture.pid = Some(pid);

    // `spawn` returns once the child has exec'd, and it joined before exec: it is already there.
    let child = cgroup_lines(&pid.to_string());
    let expected = format!("/{name}");
    for h in HIERARCHIES {
        assert_eq!(path_in(&child, h), expected, "{h}: {child:?}");
        let procs = std::fs::read_to_string(
            Path::new("/sys/fs/cgroup")
                .join(h)
                .join(&name)
                .join("cgroup.procs"),
        )
        .expect("procs");
        assert_eq!(procs.trim(), pid.to_string(), "{h} cgroup.procs");
    }
    // The test process itself was not moved.
    assert_eq!(cgroup_lines("self"), parent_before);
    for h in HIERARCHIES {
        assert_ne!(path_in(&parent_before, h), expected);
    }
    // And the child leads its own session.
    assert_eq!(session_of(pid), pid.to_string());

    signal(pid, libc::SIGKILL).expect("kill");
    assert_eq!(wait_exit(pid), Some(ExitStatus::Signal(libc::SIGKILL)));
    fixture.pid = None;
    drop(fixture);
    for h in HIERARCHIES {
        assert!(!Path::new("/sys/fs/cgroup").join(h).join(&name).exists());
    }
}
