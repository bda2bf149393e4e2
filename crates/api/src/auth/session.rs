//! Browser sessions of the web console (issue 19).
//!
//! A browser cannot send `Authorization: Bearer`, and the token must never be put in a URL
//! (where history, proxies and logs keep it). So: a client that holds the token (or the unix
//! socket) asks for a **login code** (`POST /v1/console/codes`), a random 128-bit value that is
//! good for [`CODE_TTL`] and for one use. `nodeagent ui` prints it in a URL's *fragment*
//! (`/ui/#login=CODE`), which browsers never send to the server, so it is in no request line or
//! log. The console's script posts it to `POST /ui/session`, which exchanges it for a **session**:
//! a random 256-bit id in a cookie that is `HttpOnly` (scripts cannot read it), `SameSite=Strict`
//! (other sites' pages cannot send it) and `Secure` over TLS.
//!
//! A session ends after [`IDLE_TTL`] without a request, [`MAX_TTL`] after it began, at
//! `POST /ui/logout`, or when the agent stops: sessions live in this process's memory only.
//!
//! Mutating requests made with a session must carry the `X-Nodeagent-Console` header as well: a
//! page of another origin can make a browser send a cookie with a plain form post, but cannot
//! add a header without a CORS preflight, which the agent never grants.
//!
//! The store is one per process, not one per listener: a code is usually asked for over the
//! unix socket and redeemed over TCP, and both serve the same agent.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// How long a login code can be redeemed.
pub const CODE_TTL: Duration = Duration::from_secs(60);
/// A session unused this long ends.
pub const IDLE_TTL: Duration = Duration::from_secs(3600);
/// A session ends this long after its login, used or not.
pub const MAX_TTL: Duration = Duration::from_secs(12 * 3600);
/// The cookie's name.
pub const COOKIE: &str = "nodeagent_session";
/// The header mutating session requests must carry (any value).
pub const CSRF_HEADER: &str = "x-nodeagent-console";
/// Bounds, so that a client cannot grow the store without limit.
const MAX_CODES: usize = 64;
const MAX_SESSIONS: usize = 256;

struct Session {
    started: Instant,
    last: Instant,
}

#[derive(Default)]
struct Store {
    codes: HashMap<String, Instant>,
    sessions: HashMap<String, Session>,
}

impl Store {
    fn prune(&mut self, now: Instant) {
        self.codes.retain(|_, t| now.duration_since(*t) < CODE_TTL);
        self.sessions.retain(|_, s| {
            now.duration_since(s.last) < IDLE_TTL && now.duration_since(s.started) < MAX_TTL
        });
    }
}

static STORE: LazyLock<Mutex<Store>> = LazyLock::new(|| Mutex::new(Store::default()));

fn store() -> std::sync::MutexGuard<'static, Store> {
    STORE.lock().unwrap_or_else(|e| e.into_inner())
}

fn random_hex(n: usize) -> std::io::Result<String> {
    let mut b = vec![0u8; n];
    let mut filled = 0;
    while filled < b.len() {
        let rest = &mut b[filled..];
        // SAFETY: the pointer and length describe `rest`, which is valid for writes.
        let r = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += r as usize;
    }
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// A new login code. The oldest codes are dropped past [`MAX_CODES`].
pub fn new_code() -> std::io::Result<String> {
    let code = random_hex(16)?;
    let now = Instant::now();
    let mut s = store();
    s.prune(now);
    while s.codes.len() >= MAX_CODES {
        let oldest = s
            .codes
            .iter()
            .min_by_key(|(_, t)| **t)
            .map(|(c, _)| c.clone());
        match oldest {
            Some(c) => s.codes.remove(&c),
            None => break,
        };
    }
    s.codes.insert(code.clone(), now);
    Ok(code)
}

/// Redeems a code (once) for a new session id; `None` for an unknown, used or expired code.
pub fn redeem(code: &str) -> std::io::Result<Option<String>> {
    let now = Instant::now();
    let mut s = store();
    s.prune(now);
    if s.codes.remove(code).is_none() {
        return Ok(None);
    }
    Ok(Some(start(&mut s, now)?))
}

/// A new session for a client that showed the token itself.
pub fn start_with_token() -> std::io::Result<String> {
    let now = Instant::now();
    let mut s = store();
    s.prune(now);
    start(&mut s, now)
}

fn start(s: &mut Store, now: Instant) -> std::io::Result<String> {
    while s.sessions.len() >= MAX_SESSIONS {
        let oldest = s
            .sessions
            .iter()
            .min_by_key(|(_, v)| v.last)
            .map(|(k, _)| k.clone());
        match oldest {
            Some(k) => s.sessions.remove(&k),
            None => break,
        };
    }
    let id = random_hex(32)?;
    s.sessions.insert(
        id.clone(),
        Session {
            started: now,
            last: now,
        },
    );
    Ok(id)
}

/// Whether `id` is a live session; a use keeps it from going idle.
pub fn touch(id: &str) -> bool {
    let now = Instant::now();
    let mut s = store();
    match s.sessions.get_mut(id) {
        Some(v)
            if now.duration_since(v.last) < IDLE_TTL && now.duration_since(v.started) < MAX_TTL =>
        {
            v.last = now;
            true
        }
        Some(_) => {
            s.sessions.remove(id);
            false
        }
        None => false,
    }
}

/// Ends a session.
pub fn end(id: &str) {
    store().sessions.remove(id);
}

/// The session id in a request's `Cookie` headers, if any.
pub fn cookie(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_single_use_and_sessions_end() {
        let code = new_code().expect("random");
        assert_eq!(code.len(), 32);
        let id = redeem(&code).expect("random").expect("a fresh code");
        assert!(
            redeem(&code).expect("random").is_none(),
            "a code works once"
        );
        assert!(redeem("0123").expect("random").is_none());
        assert!(touch(&id));
        end(&id);
        assert!(!touch(&id));
    }

    #[test]
    fn cookie_parsing() {
        let mut h = axum::http::HeaderMap::new();
        let id = "a".repeat(64);
        h.insert(
            axum::http::header::COOKIE,
            format!("x=1; {COOKIE}={id}; y=2").parse().expect("header"),
        );
        assert_eq!(cookie(&h), Some(id.as_str()));
        h.insert(
            axum::http::header::COOKIE,
            format!("{COOKIE}=short").parse().expect("header"),
        );
        assert_eq!(cookie(&h), None);
    }
}
