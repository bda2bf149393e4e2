//! The daemon's side of "secure by default" that touches files: the state dir's permissions,
//! the API token file, the socket's mode and group, and the decision whether a TCP listener
//! may be served at all. The HTTP side (the token check, TLS, the audit log) is in
//! `nodeagent_api::auth`; the policy on what may be created is in `nodeagent_core::policy`.

use crate::config::{AuthMode, Config};
use anyhow::{anyhow, bail, Context as _};
use nodeagent_api::Token;
use std::ffi::CString;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

/// Refuses a state dir that another user could write to: it holds the socket and the token,
/// and whoever can replace those can impersonate the agent or read the token.
pub fn check_state_dir(dir: &Path) -> anyhow::Result<()> {
    let md = std::fs::metadata(dir).with_context(|| format!("state dir {}", dir.display()))?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if md.uid() != me {
        bail!(
            "state dir {} is owned by uid {}, not by the agent's user (uid {me}); its owner could replace the socket or read the token. Run `chown {me} {}` or choose another --state-dir",
            dir.display(),
            md.uid(),
            dir.display()
        );
    }
    let mode = md.mode() & 0o7777;
    if mode & 0o022 != 0 {
        bail!(
            "state dir {} is writable by group or others (mode {mode:04o}); they could replace the socket or the token. Run `chmod 700 {}`",
            dir.display(),
            dir.display()
        );
    }
    Ok(())
}

/// The TCP listener's bearer token: read from `path`, or generated there on first start.
///
/// A new token is written to a temporary file created with mode 0600 (never chmod-ed after the
/// fact, so it is never readable by others even for an instant), synced, and linked into place
/// with `link(2)`, which fails rather than replace a token another process wrote meanwhile.
/// An existing file must be private to the agent's user; the agent refuses to start otherwise,
/// and says how to fix it. Returns the token and whether it was created now.
pub fn load_or_create_token(path: &Path) -> anyhow::Result<(Token, bool)> {
    match read_token(path) {
        Ok(t) => return Ok((t, false)),
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(e),
    }
    let token = Token::generate().context("generating the API token (getrandom)")?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("token file {}: not a file name", path.display()))?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        // The umask can only take bits away; make sure nothing else was added either.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(token.secret().as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::hard_link(&tmp, path)
    };
    let res = write();
    let _ = std::fs::remove_file(&tmp);
    match res {
        Ok(()) => {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
            Ok((token, true))
        }
        // Another agent (or an admin) wrote one meanwhile: use that.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok((read_token(path)?, false)),
        Err(e) => Err(e).with_context(|| format!("writing the token file {}", path.display())),
    }
}

fn is_not_found(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound)
}

fn read_token(path: &Path) -> anyhow::Result<Token> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path);
    let mut f = match f {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(e.into()),
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "reading the token file {} (it must be a regular file, not a symlink)",
                    path.display()
                )
            })
        }
    };
    let md = f
        .metadata()
        .with_context(|| format!("reading the token file {}", path.display()))?;
    if !md.is_file() {
        bail!("token file {} is not a regular file", path.display());
    }
    nodeagent_api::auth::check_private_metadata(&md, path, "token file").map_err(|m| anyhow!(m))?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut f, &mut text)
        .with_context(|| format!("reading the token file {}", path.display()))?;
    Token::new(&text).map_err(|e| {
        anyhow!(
            "token file {}: {e}; delete it to have a new token generated",
            path.display()
        )
    })
}

/// Refuses to serve TCP where anyone on the network could use it without credentials, with
/// the settings to change.
pub fn check_tcp_exposure(cfg: &Config, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let token = cfg.auth == AuthMode::Token;
    let client_certs = cfg.tls_client_ca.is_some();
    nodeagent_api::auth::check_exposure(addr, token, client_certs).map_err(|m| {
        anyhow!(
            "{m} (listen = {:?}, auth = {:?})",
            cfg.listen,
            cfg.auth.as_str()
        )
    })?;
    if token && cfg.tls_cert.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(
            "listening on {addr} without TLS: the bearer token crosses the network in clear text; set tls_cert and tls_key"
        );
    }
    Ok(())
}

/// The gid of a group name (or a number).
pub fn group_id(name: &str) -> anyhow::Result<u32> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    let c = CString::new(name).map_err(|_| anyhow!("socket_group {name:?}: holds a NUL"))?;
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0u8; 16 * 1024];
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer refers to a live, correctly sized buffer for the duration of the
    // call; getgrnam_r writes only within them.
    let rc = unsafe {
        libc::getgrnam_r(
            c.as_ptr(),
            &mut grp,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut out,
        )
    };
    if rc != 0 {
        bail!(
            "socket_group {name:?}: looking the group up failed: {}",
            std::io::Error::from_raw_os_error(rc)
        );
    }
    if out.is_null() {
        bail!("socket_group {name:?}: no such group; create it (groupadd {name}) or give another");
    }
    Ok(grp.gr_gid)
}

/// Sets the socket's mode: 0600, or 0660 owned by `group`. With a group, the directory the
/// socket is in must let the group through: when that is the agent's own state dir (0700),
/// it becomes 0710 owned by the group (enter, but not list or read).
pub fn secure_socket(path: &Path, state_dir: &Path, group: Option<&str>) -> anyhow::Result<()> {
    let Some(group) = group else {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("setting mode 0600 on {}", path.display()))?;
        return Ok(());
    };
    let gid = group_id(group)?;
    std::os::unix::fs::chown(path, None, Some(gid))
        .with_context(|| format!("giving {} to group {group}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("setting mode 0660 on {}", path.display()))?;
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let same = |a: &Path, b: &Path| match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    };
    if same(parent, state_dir) {
        std::os::unix::fs::chown(parent, None, Some(gid))
            .with_context(|| format!("giving {} to group {group}", parent.display()))?;
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o710))
            .with_context(|| format!("setting mode 0710 on {}", parent.display()))?;
    } else if let Ok(md) = std::fs::metadata(parent) {
        let passable = md.mode() & 0o001 != 0 || (md.gid() == gid && md.mode() & 0o010 != 0);
        if !passable {
            tracing::warn!(
                dir = %parent.display(),
                group,
                "members of the socket group cannot enter the socket's directory"
            );
        }
    }
    Ok(())
}

/// Runs `f` with the umask set so that files it creates are private to the agent's user: the
/// socket then never exists with a looser mode, not even between bind and chmod. Start-up runs
/// this before any other thread creates files, so the process-wide umask is safe to change.
pub fn with_private_umask<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: umask has no memory-safety preconditions.
    let old = unsafe { libc::umask(0o177) };
    let out = f();
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_created_private_then_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        let (t1, created) = load_or_create_token(&path).expect("create");
        assert!(created);
        let md = std::fs::metadata(&path).expect("stat");
        assert_eq!(md.mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::read_to_string(&path).expect("read").trim(),
            t1.secret()
        );
        let (t2, created) = load_or_create_token(&path).expect("reuse");
        assert!(!created);
        assert_eq!(t1.secret(), t2.secret());
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
    }

    #[test]
    fn readable_token_files_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        load_or_create_token(&path).expect("create");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = format!("{:#}", load_or_create_token(&path).expect_err("0644"));
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::fs::write(&path, "short\n").expect("write");
        let e = format!("{:#}", load_or_create_token(&path).expect_err("short"));
        assert!(e.contains("shorter"), "{e}");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).expect("symlink");
        assert!(load_or_create_token(&link).is_err());
    }

    #[test]
    fn state_dir_must_be_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(check_state_dir(dir.path()).is_ok());
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let e = format!("{:#}", check_state_dir(dir.path()).expect_err("0777"));
        assert!(e.contains("chmod 700"), "{e}");
    }

    #[test]
    fn groups() {
        assert_eq!(group_id("root").expect("root"), 0);
        assert_eq!(group_id("1234").expect("numeric"), 1234);
        let e = format!("{:#}", group_id("no-such-group-here").expect_err("missing"));
        assert!(e.contains("no such group"), "{e}");
    }
}
