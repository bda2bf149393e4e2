//! Spawning, signalling and reaping real processes.

use nodeagent_drivers::process::{reap, signal, spawn, ExitStatus, SpawnError, SpawnSpec};
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn cmd(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn devnull() -> File {
    File::options()
        .write(true)
        .open("/dev/null")
        .expect("/dev/null")
}

fn spec<'a>(command: &'a [String], env: &'a BTreeMap<String, String>) -> SpawnSpec<'a> {
    SpawnSpec {
        command,
        env,
        cwd: None,
        stdout: devnull(),
        stderr: devnull(),
        cgroup_procs: Vec::new(),
    }
}

/// Polls `reap` until the process has exited (10 s at most).
fn wait_exit(pid: u32) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = reap(pid) {
            return status;
        }
        assert!(Instant::now() < deadline, "pid {pid} did not exit");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Field `n` (1-based) of `/proc/<pid>/stat`, counted from after the command name.
fn stat_field(pid: u32, n: usize) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let rest = &stat[stat.rfind(')').expect(")") + 1..];
    rest.split_whitespace()
        .nth(n - 3)
        .expect("field")
        .to_owned()
}

#[test]
fn exit_code_and_output_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let command = cmd(&["/bin/sh", "-c", "echo out; echo err >&2; exit 3"]);
    let env = BTreeMap::new();
    let pid = spawn(SpawnSpec {
        stdout: File::create(&out_path).expect("out"),
        stderr: File::create(&err_path).expect("err"),
        ..spec(&command, &env)
    })
    .expect("spawn");
    assert_eq!(wait_exit(pid), ExitStatus::Code(3));
    assert_eq!(std::fs::read_to_string(out_path).expect("out"), "out\n");
    assert_eq!(std::fs::read_to_string(err_path).expect("err"), "err\n");
    // Reaped: a second reap finds no such child.
    assert_eq!(reap(pid), None);
}

#[test]
fn sigterm_is_reported_as_a_signal() {
    let command = cmd(&["sleep", "30"]);
    let env = BTreeMap::new();
    let pid = spawn(spec(&command, &env)).expect("spawn");
    assert_eq!(reap(pid), None, "still running");
    signal(pid, libc::SIGTERM).expect("signal");
    assert_eq!(wait_exit(pid), ExitStatus::Signal(libc::SIGTERM));
    // Gone: signalling it again is not an error.
    signal(pid, libc::SIGTERM).expect("signal a gone process");
}

#[test]
fn child_runs_in_its_own_session_with_stdin_from_dev_null() {
    let command = cmd(&["sleep", "30"]);
    let env = BTreeMap::new();
    let pid = spawn(spec(&command, &env)).expect("spawn");
    let session = stat_field(pid, 6);
    let stdin = std::fs::read_link(format!("/proc/{pid}/fd/0")).expect("fd 0");
    signal(pid, libc::SIGKILL).expect("kill");
    assert_eq!(wait_exit(pid), ExitStatus::Signal(libc::SIGKILL));
    assert_eq!(session, pid.to_string(), "session id");
    assert_ne!(stat_field(std::process::id(), 6), pid.to_string());
    assert_eq!(stdin, PathBuf::from("/dev/null"));
}

#[test]
fn argv0_is_the_name_given() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let command = cmd(&["sh", "-c", "echo \"$0\" \"$1\"", "x", "y"]);
    let env = BTreeMap::new();
    let pid = spawn(SpawnSpec {
        stdout: File::create(&out).expect("out"),
        ..spec(&command, &env)
    })
    .expect("spawn");
    assert_eq!(wait_exit(pid), ExitStatus::Code(0));
    assert_eq!(std::fs::read_to_string(out).expect("out"), "x y\n");
}

#[test]
fn missing_program_is_exec_naming_it() {
    let command = cmd(&["nodeagent-no-such-program", "arg"]);
    let env = BTreeMap::new();
    match spawn(spec(&command, &env)) {
        Err(SpawnError::Exec { program, source }) => {
            assert_eq!(program, "nodeagent-no-such-program");
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("unexpected {other:?}"),
    }
    // Also with a path: the failure then comes from execve in the child.
    let command = cmd(&["/nonexistent/nodeagent-no-such-program"]);
    match spawn(spec(&command, &env)) {
        Err(SpawnError::Exec { program, source }) => {
            assert_eq!(program, "/nonexistent/nodeagent-no-such-program");
            assert_eq!(source.raw_os_error(), Some(libc::ENOENT));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn non_executable_program_is_exec() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("script");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").expect("write");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let by_path = cmd(&[script.to_str().expect("utf-8")]);
    let env = BTreeMap::new();
    match spawn(spec(&by_path, &env)) {
        Err(SpawnError::Exec { source, .. }) => {
            assert_eq!(source.raw_os_error(), Some(libc::EACCES));
        }
        other => panic!("unexpected {other:?}"),
    }
    // Looked up in PATH: found, but not executable.
    let by_name = cmd(&["script"]);
    let env = BTreeMap::from([(
        "PATH".to_owned(),
        dir.path().to_str().expect("utf-8").to_owned(),
    )]);
    match spawn(spec(&by_name, &env)) {
        Err(SpawnError::Exec { program, source }) => {
            assert_eq!(program, "script");
            assert_eq!(source.kind(), std::io::ErrorKind::PermissionDenied);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn empty_command_is_exec() {
    let env = BTreeMap::new();
    assert!(matches!(
        spawn(spec(&[], &env)),
        Err(SpawnError::Exec { .. })
    ));
}

#[test]
fn bad_cwd_is_cwd() {
    let command = cmd(&["true"]);
    let env = BTreeMap::new();
    match spawn(SpawnSpec {
        cwd: Some("/nonexistent/nodeagent-dir"),
        ..spec(&command, &env)
    }) {
        Err(SpawnError::Cwd { path, source }) => {
            assert_eq!(path, "/nonexistent/nodeagent-dir");
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("unexpected {other:?}"),
    }
    // A file, not a directory.
    let file = tempfile::NamedTempFile::new().expect("tempfile");
    let file = file.path().to_str().expect("utf-8");
    match spawn(SpawnSpec {
        cwd: Some(file),
        ..spec(&command, &env)
    }) {
        Err(SpawnError::Cwd { path, source }) => {
            assert_eq!(path, file);
            assert_eq!(source.raw_os_error(), Some(libc::ENOTDIR));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn cwd_is_applied_and_relative_programs_resolve_in_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("here.sh");
    std::fs::write(&script, "#!/bin/sh\npwd\n").expect("write");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = dir.path().join("out");
    let command = cmd(&["./here.sh"]);
    let env = BTreeMap::new();
    // A fork in a concurrent test may briefly hold the script open for writing (ETXTBSY).
    let pid = (0..50)
        .find_map(|_| {
            match spawn(SpawnSpec {
                cwd: Some(dir.path().to_str().expect("utf-8")),
                stdout: File::create(&out).expect("out"),
                ..spec(&command, &env)
            }) {
                Err(SpawnError::Exec { source, .. })
                    if source.raw_os_error() == Some(libc::ETXTBSY) =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                    None
                }
                result => Some(result.expect("spawn")),
            }
        })
        .expect("spawn kept failing with ETXTBSY");
    assert_eq!(wait_exit(pid), ExitStatus::Code(0));
    let printed = std::fs::read_to_string(out).expect("out");
    assert_eq!(
        std::fs::canonicalize(printed.trim()).expect("canon"),
        std::fs::canonicalize(dir.path()).expect("canon")
    );
}

#[test]
fn unopenable_cgroup_procs_is_open() {
    let command = cmd(&["true"]);
    let env = BTreeMap::new();
    let missing = PathBuf::from("/nonexistent/nodeagent/cgroup.procs");
    match spawn(SpawnSpec {
        cgroup_procs: vec![missing.clone()],
        ..spec(&command, &env)
    }) {
        Err(SpawnError::Open { path, .. }) => assert_eq!(path, missing),
        other => panic!("unexpected {other:?}"),
    }
}

/// A write that fails in the child (`/dev/full` says ENOSPC) fails the spawn, naming the file,
/// and is not mistaken for an exec failure.
#[test]
fn failed_cgroup_join_fails_the_spawn() {
    let command = cmd(&["sleep", "30"]);
    let env = BTreeMap::new();
    let err = spawn(SpawnSpec {
        cgroup_procs: vec![PathBuf::from("/dev/null"), PathBuf::from("/dev/full")],
        ..spec(&command, &env)
    })
    .expect_err("the write to /dev/full fails");
    match &err {
        SpawnError::Other(e) => assert!(e.to_string().contains("/dev/full"), "{e}"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn reap_and_signal_refuse_special_pids() {
    assert_eq!(reap(0), None);
    assert_eq!(reap(u32::MAX), None);
    // Not our child: ECHILD, reported as None.
    assert_eq!(reap(1), None);
    assert_eq!(
        signal(0, 0).expect_err("pid 0").kind(),
        std::io::ErrorKind::InvalidInput
    );
    assert_eq!(
        signal(u32::MAX, 0).expect_err("pid -1").kind(),
        std::io::ErrorKind::InvalidInput
    );
    signal(std::process::id(), 0).expect("signal 0 to self");
}
