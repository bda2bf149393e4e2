//! A small QMP client: newline-delimited JSON over the unix socket qemu listens on.
//!
//! Hand-written because the protocol is a few lines of JSON and the crates that speak it
//! (`qapi`, `qmp-client`) bring a generated schema of thousands of types, or a synchronous
//! socket, for the five commands this kind sends. One connection per operation: qemu's QMP
//! monitor serves one client at a time, and at most one operation runs per object.

use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// Longest line accepted from qemu (a `query-*` answer is a few KiB).
pub const MAX_LINE: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QMP socket {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("QMP: {0}")]
    Io(#[from] std::io::Error),
    #[error("QMP: no answer within {0:?}")]
    Timeout(Duration),
    #[error("QMP: qemu closed the connection")]
    Closed,
    #[error("QMP: unreadable line from qemu: {0}")]
    Parse(String),
    #[error("QMP {command}: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
}

/// One line from qemu.
#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    /// The greeting (`{"QMP": {"version": ..}}`).
    Greeting(Value),
    /// A command's answer.
    Return(Value),
    Error {
        class: String,
        desc: String,
    },
    Event {
        event: String,
        data: Value,
    },
}

/// Reads one QMP line. Total: any input gives a message or an error, never a panic.
pub fn parse_line(line: &str) -> Result<Msg, QmpError> {
    let v: Value = serde_json::from_str(line.trim()).map_err(|e| QmpError::Parse(e.to_string()))?;
    let Value::Object(mut m) = v else {
        return Err(QmpError::Parse("not a JSON object".into()));
    };
    if let Some(r) = m.remove("return") {
        return Ok(Msg::Return(r));
    }
    if let Some(e) = m.remove("error") {
        let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        return Ok(Msg::Error {
            class: s("class"),
            desc: s("desc"),
        });
    }
    if let Some(Value::String(ev)) = m.remove("event") {
        return Ok(Msg::Event {
            event: ev,
            data: m.remove("data").unwrap_or(Value::Null),
        });
    }
    if let Some(g) = m.remove("QMP") {
        return Ok(Msg::Greeting(g));
    }
    Err(QmpError::Parse(
        "neither return, error, event nor greeting".into(),
    ))
}

/// A negotiated QMP connection.
pub struct Qmp {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
    timeout: Duration,
    /// Events read while waiting for answers, oldest first.
    pub events: Vec<(String, Value)>,
}

impl Qmp {
    /// Connects, reads the greeting and negotiates (`qmp_capabilities`).
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Qmp, QmpError> {
        let s = tokio::time::timeout(timeout, UnixStream::connect(path))
            .await
            .map_err(|_| QmpError::Timeout(timeout))?
            .map_err(|source| QmpError::Connect {
                path: path.display().to_string(),
                source,
            })?;
        let (r, w) = s.into_split();
        let mut q = Qmp {
            r: BufReader::new(r),
            w,
            timeout,
            events: Vec::new(),
        };
        match q.read().await? {
            Msg::Greeting(_) => {}
            other => {
                return Err(QmpError::Parse(format!(
                    "expected a greeting, got {other:?}"
                )))
            }
        }
        q.execute("qmp_capabilities", None).await?;
        Ok(q)
    }

    async fn read(&mut self) -> Result<Msg, QmpError> {
        let mut line = String::new();
        let n = tokio::time::timeout(self.timeout, async {
            let mut limited = (&mut self.r).take(MAX_LINE as u64);
            limited.read_line(&mut line).await
        })
        .await
        .map_err(|_| QmpError::Timeout(self.timeout))??;
        if n == 0 {
            return Err(QmpError::Closed);
        }
        if !line.ends_with('\n') {
            return Err(QmpError::Parse(format!("a line over {MAX_LINE} bytes")));
        }
        parse_line(&line)
    }

    /// Sends a command and waits for its answer; events met meanwhile go to `events`.
    pub async fn execute(&mut self, command: &str, args: Option<Value>) -> Result<Value, QmpError> {
        let mut req = json!({ "execute": command });
        if let Some(a) = args {
            req["arguments"] = a;
        }
        let mut buf = req.to_string();
        buf.push('\n');
        tokio::time::timeout(self.timeout, self.w.write_all(buf.as_bytes()))
            .await
            .map_err(|_| QmpError::Timeout(self.timeout))??;
        loop {
            match self.read().await? {
                Msg::Return(v) => return Ok(v),
                Msg::Error { class, desc } => {
                    return Err(QmpError::Command {
                        command: command.to_string(),
                        class,
                        desc,
                    })
                }
                Msg::Event { event, data } => self.events.push((event, data)),
                Msg::Greeting(_) => {}
            }
        }
    }

    /// `query-status`: the run state (`running`, `paused`, `shutdown`, ...).
    pub async fn status(&mut self) -> Result<String, QmpError> {
        let v = self.execute("query-status", None).await?;
        Ok(v.get("status")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string())
    }
}

/// One command on a fresh blocking connection, every step bounded by `timeout`: for the few
/// calls that run on the core's loop (pause and resume: about a millisecond).
pub fn execute_blocking(path: &Path, command: &str, timeout: Duration) -> Result<Value, QmpError> {
    use std::io::{BufRead, Write};
    let s = std::os::unix::net::UnixStream::connect(path).map_err(|source| QmpError::Connect {
        path: path.display().to_string(),
        source,
    })?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut w = s.try_clone()?;
    let mut r = std::io::Read::take(std::io::BufReader::new(s), MAX_LINE as u64);
    let read = |r: &mut std::io::Take<std::io::BufReader<std::os::unix::net::UnixStream>>| {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) => Err(QmpError::Closed),
            Ok(_) => parse_line(&line),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                Err(QmpError::Timeout(timeout))
            }
            Err(e) => Err(QmpError::Io(e)),
        }
    };
    let mut answer = |cmd: &str, r: &mut _| -> Result<Value, QmpError> {
        w.write_all(format!("{}\n", json!({ "execute": cmd })).as_bytes())?;
        loop {
            match read(r)? {
                Msg::Return(v) => return Ok(v),
                Msg::Error { class, desc } => {
                    return Err(QmpError::Command {
                        command: cmd.to_string(),
                        class,
                        desc,
                    })
                }
                _ => {}
            }
        }
    };
    match read(&mut r)? {
        Msg::Greeting(_) => {}
        other => {
            return Err(QmpError::Parse(format!(
                "expected a greeting, got {other:?}"
            )))
        }
    }
    answer("qmp_capabilities", &mut r)?;
    answer(command, &mut r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_four_shapes() {
        assert!(matches!(
            parse_line(r#"{"QMP": {"version": {}, "capabilities": ["oob"]}}"#),
            Ok(Msg::Greeting(_))
        ));
        assert_eq!(
            parse_line(r#"{"return": {"status": "running", "running": true}}"#).ok(),
            Some(Msg::Return(json!({"status": "running", "running": true})))
        );
        assert_eq!(
            parse_line(r#"{"error": {"class": "GenericError", "desc": "no"}}"#).ok(),
            Some(Msg::Error {
                class: "GenericError".into(),
                desc: "no".into()
            })
        );
        assert_eq!(
            parse_line(
                r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "SHUTDOWN", "data": {"guest": true}}"#
            )
            .ok(),
            Some(Msg::Event {
                event: "SHUTDOWN".into(),
                data: json!({"guest": true})
            })
        );
        assert!(parse_line("[1,2]").is_err());
        assert!(parse_line("{}").is_err());
        assert!(parse_line("{\"event\": 3}").is_err());
        assert!(parse_line("").is_err());
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,200}") {
            let _ = parse_line(&s);
        }

        #[test]
        fn never_panics_on_json_like(s in r#"\{("(return|error|event|QMP|data|class|desc)"|[:,\[\]{} 0-9a-z"])*\}?"#) {
            let _ = parse_line(&s);
        }
    }
}
