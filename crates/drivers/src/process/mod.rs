//! Spawning a command straight into a cgroup, signalling and reaping it.
//!
//! The child joins its cgroup before `exec` by writing `0` to pre-opened `cgroup.procs` files,
//! so the limits apply from the first instruction of the command.

mod stage;

use stage::SharedStage;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The open-file limit the agent was started with, restored in every child it spawns (see
/// [`raise_nofile_limit`]); unset until that runs.
static CHILD_NOFILE: std::sync::OnceLock<libc::rlimit> = std::sync::OnceLock::new();

/// What [`raise_nofile_limit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// Soft and hard limits before.
    pub before: (u64, u64),
    /// Soft and hard limits now.
    pub now: (u64, u64),
}

/// The agent keeps each sampled counter file open (about 8 per cgroup object, so that a
/// sample is one `pread` per file and no path walk), which at 10,000 objects is 80,000
/// descriptors: far over the usual soft limit of 1,024 and the 20,000 hard limit seen on some
/// hosts. This raises the soft limit to `want`, and the hard limit with it where the process
/// may (root, up to `fs.nr_open`); otherwise the soft limit goes as high as the hard one.
/// Workloads the agent spawns afterwards get the limits the agent started with, not these.
pub fn raise_nofile_limit(want: u64) -> io::Result<NofileLimit> {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let _ = CHILD_NOFILE.set(cur);
    let before = (cur.rlim_cur, cur.rlim_max);
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1 << 20);
    let target = want.min(nr_open);
    if cur.rlim_cur >= target {
        return Ok(NofileLimit {
            before,
            now: before,
        });
    }
    let raised = libc::rlimit {
        rlim_cur: target,
        rlim_max: cur.rlim_max.max(target),
    };
    // SAFETY: setrlimit reads the struct passed.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        return Ok(NofileLimit {
            before,
            now: (raised.rlim_cur, raised.rlim_max),
        });
    }
    // Not allowed to raise the hard limit: take the soft one up to it.
    let capped = libc::rlimit {
        rlim_cur: target.min(cur.rlim_max),
        rlim_max: cur.rlim_max,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &capped) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(NofileLimit {
        before,
        now: (capped.rlim_cur, capped.rlim_max),
    })
}

/// The `PATH` a child gets, and programs are looked up in, when the spec does not set one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The program could not be executed (not found, not executable): the user's fault.
    #[error("cannot execute {program:?}: {source}")]
    Exec {
        program: String,
        source: std::io::Error,
    },
    #[error("open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cwd {path:?}: {source}")]
    Cwd {
        path: String,
        source: std::io::Error,
    },
    #[error("spawn: {0}")]
    Other(std::io::Error),
}

pub struct SpawnSpec<'a> {
    pub command: &'a [String],
    pub env: &'a BTreeMap<String, String>,
    pub cwd: Option<&'a str>,
    pub stdout: File,
    pub stderr: File,
    /// `cgroup.procs` files the child joins before exec.
    pub cgroup_procs: Vec<PathBuf>,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

/// Spawns the command in a new session (so a terminal's signals don't reach it), with stdin
/// from /dev/null, in its cgroup. Returns the pid. The caller reaps it with [`reap`].
///
/// The environment is exactly `spec.env`, plus `PATH=`[`DEFAULT_PATH`] if it has no `PATH`;
/// nothing of the agent's own environment leaks in. A program name without `/` is looked up in
/// that `PATH` here, in the parent, so that "not found" is a clear [`SpawnError::Exec`]; a
/// relative name with a `/` is taken relative to `cwd` (where the child runs).
///
/// Errors: [`SpawnError::Cwd`] if `cwd` is not an existing directory, [`SpawnError::Open`] if a
/// `cgroup.procs` file cannot be opened, [`SpawnError::Exec`] if the program cannot be found or
/// executed, and [`SpawnError::Other`] for the rest, including the kernel refusing to move the
/// child into a cgroup (the message names the `cgroup.procs` file). No child is left behind on
/// error.
#[tracing::instrument(name = "driver.process.spawn", skip_all)]
pub fn spawn(spec: SpawnSpec<'_>) -> Result<u32, SpawnError> {
    let SpawnSpec {
        command,
        env,
        cwd,
        stdout,
        stderr,
        cgroup_procs,
    } = spec;
    let Some((program, args)) = command.split_first() else {
        return Err(SpawnError::Exec {
            program: String::new(),
            source: io::Error::new(ErrorKind::InvalidInput, "empty command"),
        });
    };
    if let Some(dir) = cwd {
        check_cwd(dir)?;
    }
    let path_var = env.get("PATH").map_or(DEFAULT_PATH, String::as_str);
    let resolved = resolve_program(program, path_var, cwd)?;

    // Opened here, in the parent, because the child may not allocate (see the SAFETY comment
    // below). std opens with O_CLOEXEC, so the program does not inherit them. They must stay
    // open until `spawn` returns.
    let mut procs_files = Vec::with_capacity(cgroup_procs.len());
    for path in &cgroup_procs {
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|source| SpawnError::Open {
                path: path.clone(),
                source,
            })?;
        procs_files.push(file);
    }
    let fds: Vec<RawFd> = procs_files.iter().map(AsRawFd::as_raw_fd).collect();

    // Declared before `cmd` so that it is dropped after the closure that refers to it.
    let stage = SharedStage::new().map_err(SpawnError::Other)?;
    let slot = stage.slot();

    let mut cmd = Command::new(&resolved);
    cmd.arg0(program)
        .args(args)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr));
    if !env.contains_key("PATH") {
        cmd.env("PATH", DEFAULT_PATH);
    }
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let nofile = CHILD_NOFILE.get().copied();
    let hook = move || {
        // SAFETY: runs in the child during the `spawn` below, while `stage` and `procs_files`
        // are alive.
        unsafe { child_setup(slot, &fds, nofile.as_ref()) }
    };
    // SAFETY: the closure runs in the child between `fork` and `exec`. The parent may have many
    // threads, and in the child only the forking one exists: a lock another thread held (the
    // allocator's, stdio's) stays locked forever, so the closure must neither allocate nor lock,
    // and may only make async-signal-safe calls. `child_setup` calls only `setsid(2)`,
    // `setrlimit(2)` with a value copied before the fork, and `write(2)` on raw fds that were opened in the parent and stay open until `spawn` returns
    // (`procs_files`), iterates a Vec built before the fork (no allocation), and stores to a
    // shared mapping made before the fork (`stage`, alive until after `spawn` returns; an atomic
    // store). Its errors are `io::Error::last_os_error()` / `from_raw_os_error`, which hold only
    // an errno and do not allocate; std passes the errno to the parent and `spawn` fails.
    unsafe {
        cmd.pre_exec(hook);
    }
    let result = cmd.spawn();
    let reached = stage.get();
    drop(cmd);
    drop(procs_files);
    match result {
        // Dropping the std `Child` neither waits nor kills: the caller reaps with `reap`.
        Ok(child) => Ok(child.id()),
        Err(e) => Err(classify(e, reached, program, cwd, &cgroup_procs)),
    }
}

/// The child's setup before `exec`: a new session, then `0` into each `cgroup.procs` fd, which
/// moves the calling process (the child) into that cgroup. Records each step in `slot` so that
/// the parent can tell which one failed.
///
/// # Safety
/// Must only run in the forked child inside `Command::spawn`, while the [`SharedStage`] behind
/// `slot` and the files behind `fds` are alive. It neither allocates nor locks.
unsafe fn child_setup(
    slot: stage::StageSlot,
    fds: &[RawFd],
    nofile: Option<&libc::rlimit>,
) -> io::Result<()> {
    // The agent's raised open-file limit is its own; the workload gets the one it started with.
    // Lowering a limit always succeeds; a failure is ignored rather than failing the spawn.
    if let Some(l) = nofile {
        // SAFETY: setrlimit is async-signal-safe and reads only the struct passed.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, l) };
    }
    // SAFETY (every `slot.set`): the caller guarantees the mapping is alive.
    unsafe { slot.set(stage::SETSID) };
    // SAFETY: setsid has no preconditions; it fails only for a process group leader, which a
    // freshly forked child is not.
    if unsafe { libc::setsid() } == -1 {
        return Err(io::Error::last_os_error());
    }
    for (i, &fd) in fds.iter().enumerate() {
        let step = u32::try_from(i).map_or(stage::EXEC - 1, |i| {
            stage::CGROUP.saturating_add(i).min(stage::EXEC - 1)
        });
        // SAFETY: as above.
        unsafe { slot.set(step) };
        // SAFETY: the caller guarantees `fd` is open; the buffer is a static 1-byte string.
        let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n != 1 {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
    }
    // SAFETY: as above.
    unsafe { slot.set(stage::EXEC) };
    Ok(())
}

/// Turns a failed `Command::spawn` into a [`SpawnError`] by the step the child had reached.
fn classify(
    e: io::Error,
    reached: u32,
    program: &str,
    cwd: Option<&str>,
    cgroup_procs: &[PathBuf],
) -> SpawnError {
    let errno = e.raw_os_error();
    match reached {
        // Before our hook std redirects stdio and changes directory (or `fork` itself failed).
        stage::BEFORE_HOOK => match (cwd, errno) {
            (Some(dir), Some(libc::ENOENT | libc::ENOTDIR | libc::EACCES | libc::ELOOP)) => {
                SpawnError::Cwd {
                    path: dir.to_owned(),
                    source: e,
                }
            }
            _ => SpawnError::Other(e),
        },
        stage::SETSID => SpawnError::Other(context(e, "setsid")),
        stage::EXEC => match errno {
            // Resource shortage: not the program's fault.
            Some(libc::ENOMEM | libc::EAGAIN | libc::EMFILE | libc::ENFILE) => SpawnError::Other(e),
            _ => SpawnError::Exec {
                program: program.to_owned(),
                source: e,
            },
        },
        step => {
            let i = (step - stage::CGROUP) as usize;
            let what = match cgroup_procs.get(i) {
                Some(path) => format!("join cgroup via {}", path.display()),
                None => "join cgroup".to_owned(),
            };
            SpawnError::Other(context(e, &what))
        }
    }
}

fn context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn check_cwd(dir: &str) -> Result<(), SpawnError> {
    let cwd_error = |source| SpawnError::Cwd {
        path: dir.to_owned(),
        source,
    };
    let meta = std::fs::metadata(dir).map_err(cwd_error)?;
    if meta.is_dir() {
        Ok(())
    } else {
        Err(cwd_error(io::Error::from_raw_os_error(libc::ENOTDIR)))
    }
}

/// The path to execute for `program`: itself if it has a `/` (joined to `cwd` when relative),
/// else the first executable regular file of that name in `path_var`'s directories (an empty
/// or relative entry is taken relative to `cwd`, like `execvp` in the child would).
fn resolve_program(
    program: &str,
    path_var: &str,
    cwd: Option<&str>,
) -> Result<PathBuf, SpawnError> {
    let in_cwd = |p: &Path| match cwd {
        Some(dir) if p.is_relative() => Path::new(dir).join(p),
        _ => p.to_path_buf(),
    };
    let exec_error = |kind, message: String| SpawnError::Exec {
        program: program.to_owned(),
        source: io::Error::new(kind, message),
    };
    if program.is_empty() {
        return Err(exec_error(ErrorKind::NotFound, "empty program name".into()));
    }
    if program.contains('/') {
        return Ok(in_cwd(Path::new(program)));
    }
    let mut not_executable = false;
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = in_cwd(Path::new(dir)).join(program);
        match std::fs::metadata(&candidate) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => return Ok(candidate),
            Ok(m) if m.is_file() => not_executable = true,
            _ => {}
        }
    }
    Err(if not_executable {
        exec_error(
            ErrorKind::PermissionDenied,
            format!("found in PATH {path_var:?} but not executable"),
        )
    } else {
        exec_error(
            ErrorKind::NotFound,
            format!("not found in PATH {path_var:?}"),
        )
    })
}

/// `pid` as a `pid_t`, refusing 0 and values that would turn negative: `waitpid`/`kill` give
/// those special meanings (the process group, every process) that must never be hit by accident.
fn pid_t(pid: u32) -> Option<libc::pid_t> {
    libc::pid_t::try_from(pid).ok().filter(|&p| p > 0)
}

/// Non-blocking wait for `pid`: `Some` once it has exited (and is reaped).
///
/// `None` while it runs, and also when `pid` is not a child of this process or was already
/// reaped (`ECHILD`), or is 0 or above `i32::MAX`: the caller cannot tell those from "still
/// running" here and should check [`ProcFs::alive`](crate::procfs::ProcFs::alive) for a pid it
/// did not spawn. Stops and continues are not reported (no `WUNTRACED`).
pub fn reap(pid: u32) -> Option<ExitStatus> {
    let pid = pid_t(pid)?;
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer; WNOHANG makes the call non-blocking.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        match r {
            0 => return None,
            -1 if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => continue,
            -1 => return None,
            _ => break,
        }
    }
    if libc::WIFEXITED(status) {
        Some(ExitStatus::Code(libc::WEXITSTATUS(status)))
    } else if libc::WIFSIGNALED(status) {
        Some(ExitStatus::Signal(libc::WTERMSIG(status)))
    } else {
        None
    }
}

/// Sends `sig` to `pid`. A process that is already gone is not an error.
///
/// A pid of 0 or above `i32::MAX` is refused (`InvalidInput`): `kill` would read it as a
/// process group or as "every process".
pub fn signal(pid: u32, sig: i32) -> std::io::Result<()> {
    let Some(pid) = pid_t(pid) else {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            format!("pid {pid} is not a single process"),
        ));
    };
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid, sig) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(e)
    }
}
