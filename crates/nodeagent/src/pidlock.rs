//! `<state-dir>/nodeagent.pid`: the lock that says an agent runs on a state dir.
//!
//! The agent holds an exclusive `flock` on the file for as long as it runs, and writes its pid,
//! socket and listen address into it. A second agent on the same state dir fails to take the
//! lock *before* it touches the store, the socket or any cgroup, and its error names the running
//! agent and says to stop it first. Without this lock the second agent stopped on redb's own
//! lock, whose message could only say that the store "cannot be opened" (issue 21), and the
//! advice for a damaged store (move it aside) would lose every workload the first agent manages.
//!
//! `flock` is released by the kernel when the holder dies, `kill -9` included, so a stale file
//! never blocks a start: only a live holder does.

use anyhow::{bail, Context as _};
use std::fs::File;
use std::io::{Read as _, Seek as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::os::unix::io::AsRawFd as _;
use std::path::{Path, PathBuf};

/// The file name in the state dir.
pub const FILE: &str = "nodeagent.pid";

/// The held lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct PidLock {
    _file: File,
}

/// What the running agent wrote into its lock file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Holder {
    pub pid: Option<u32>,
    pub socket: Option<String>,
    pub listen: Option<String>,
}

impl Holder {
    /// Parses the `key=value` lines of the file; unknown or garbled lines are ignored (the file
    /// only serves the message).
    pub fn parse(text: &str) -> Holder {
        let mut h = Holder::default();
        for line in text.lines() {
            match line.split_once('=') {
                Some(("pid", v)) => h.pid = v.trim().parse().ok(),
                Some(("socket", v)) => h.socket = Some(v.trim().to_string()),
                Some(("listen", v)) => h.listen = Some(v.trim().to_string()),
                _ => {}
            }
        }
        h
    }
}

/// Takes the lock of `state_dir`, or fails naming the agent that holds it.
pub fn acquire(state_dir: &Path, socket: &Path, listen: &str) -> anyhow::Result<PidLock> {
    let path: PathBuf = state_dir.join(FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening the pid lock file {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(err).with_context(|| format!("locking {}", path.display()));
        }
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        let h = Holder::parse(&text);
        let pid = h.pid.map_or("unknown".to_string(), |p| p.to_string());
        let socket = h.socket.as_deref().unwrap_or("unknown");
        let listen = h.listen.as_deref().unwrap_or("unknown");
        let stop = h
            .pid
            .map_or(String::new(), |p| format!(" (for example `kill {p}`)"));
        bail!(
            "another nodeagent is already running on state dir {dir}: pid {pid}, socket {socket}, \
             listening on {listen} (it holds the lock {lock}). Stop it first{stop}, or give this \
             one another --state-dir. Its state store is in use, not damaged: do not move it aside",
            dir = state_dir.display(),
            lock = path.display(),
        );
    }
    let body = format!(
        "pid={}\nsocket={}\nlisten={listen}\n",
        std::process::id(),
        socket.display()
    );
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(body.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(PidLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("a.sock");
        let _first = acquire(dir.path(), &sock, "127.0.0.1:1").expect("first");
        let err = acquire(dir.path(), Path::new("/x.sock"), "127.0.0.1:2")
            .expect_err("second")
            .to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        assert!(err.contains(&sock.display().to_string()), "{err}");
        assert!(err.contains("127.0.0.1:1"), "{err}");
        assert!(err.contains("Stop it first"), "{err}");
        drop(_first);
        // Released: the next start takes it.
        acquire(dir.path(), &sock, "127.0.0.1:3").expect("after release");
    }

    proptest::proptest! {
        /// Any file content parses without a panic, and the pid line is found among others.
        #[test]
        fn any_content_parses(text in ".{0,400}", pid in 1u32..u32::MAX) {
            let _ = Holder::parse(&text);
            let h = Holder::parse(&format!("{text}\npid={pid}\n"));
            proptest::prop_assert_eq!(h.pid, Some(pid));
        }
    }

    #[test]
    fn garbled_files_parse_to_nothing() {
        assert_eq!(Holder::parse("\u{0}zz\n=\npid=x"), Holder::default());
        assert_eq!(
            Holder::parse("pid=12\nsocket=/s\nlisten=a:1\n").pid,
            Some(12)
        );
    }
}
