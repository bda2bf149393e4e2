//! The live sample streams (issue 19) against the real binary, real processes and the real
//! kernel's cgroup v1 files: `/v1/objects/{key}/metrics/stream` (through `nodeagent metrics -f`)
//! and `/v1/metrics/stream` (read off the wire, chunked encoding and SSE framing by hand).

#![allow(clippy::unwrap_used)]

mod common;

use common::{require_cgroup_v1, sleep_spec, token_for, Daemon};
use serde_json::Value;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// An SSE stream read over raw HTTP/1.1: chunked transfer decoding, then `event:`/`data:` blocks.
struct RawSse {
    s: TcpStream,
    raw: Vec<u8>,
    body: Vec<u8>,
    /// Whether the response head has been read (chunks follow it).
    in_body: bool,
}

impl RawSse {
    fn open(port: u16, path: &str) -> (u16, RawSse) {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let auth = token_for(port)
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n{auth}\r\n"
        )
        .unwrap();
        let mut r = RawSse {
            s,
            raw: Vec::new(),
            body: Vec::new(),
            in_body: false,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let end = loop {
            if let Some(p) = r.raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            assert!(Instant::now() < deadline, "no response head");
            r.fill();
        };
        let head = String::from_utf8_lossy(&r.raw[..end]).to_string();
        r.raw.drain(..end + 4);
        r.in_body = true;
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, r)
    }

    fn fill(&mut self) {
        let mut buf = [0u8; 16384];
        match self.s.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => self.raw.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("reading the stream: {e}"),
        }
        // Decode whole chunks into `body`.
        while self.in_body {
            let Some(p) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                return;
            };
            let n = usize::from_str_radix(String::from_utf8_lossy(&self.raw[..p]).trim(), 16)
                .expect("chunk size");
            if self.raw.len() < p + 2 + n + 2 {
                return;
            }
            self.body.extend_from_slice(&self.raw[p + 2..p + 2 + n]);
            self.raw.drain(..p + 2 + n + 2);
        }
    }

    /// The next event as (event, data), waiting up to `timeout`.
    fn next(&mut self, timeout: Duration) -> Option<(String, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(p) = self.body.windows(2).position(|w| w == b"\n\n") {
                let block = String::from_utf8_lossy(&self.body[..p]).to_string();
                self.body.drain(..p + 2);
                let mut event = "message".to_string();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if !data.is_empty() {
                    return Some((event, data));
                }
                continue;
            }
            if Instant::now() > deadline {
                return None;
            }
            self.fill();
        }
    }
}

/// `metrics -f` prints every sample of a 10 ms object, in order and without gaps, at its own
/// rate, and ends when the object is deleted.
#[test]
fn metrics_follow_streams_every_sample_until_deleted() {
    require_cgroup_v1();
    let d = Daemon::start();
    let mut spec = sleep_spec("stream-fast", 0.5, "64Mi");
    spec["collect"]["interval"] = "10ms".into();
    let (status, obj) = d.http("POST", "/v1/objects?wait=true", Some(&spec));
    assert_eq!(status, 201, "{obj}");

    let mut child = common::command()
        .arg("--state-dir")
        .arg(&d.state_dir)
        .args(["metrics", "stream-fast", "-f", "-o", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let mut seqs = Vec::new();
    while start.elapsed() < Duration::from_secs(2) {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
            let s: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert_eq!(s["id"], obj["id"], "{s}");
            seqs.push(s["seq"].as_u64().unwrap());
        }
    }
    // 10 ms sampling for 2 s is ~200 samples; allow for a loaded CI machine.
    assert!(seqs.len() >= 50, "only {} samples in 2 s", seqs.len());
    for w in seqs.windows(2) {
        assert_eq!(w[1], w[0] + 1, "a gap or repeat in {seqs:?}");
    }

    let (status, _) = d.http("DELETE", "/v1/objects/stream-fast?wait=true", None);
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "metrics -f did not end after the delete"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(exit.success(), "{exit}: {err}");
    assert!(err.contains("deleted"), "{err}");
}

/// `/v1/metrics/stream` sends the newest sample of every object and the host, no faster than
/// `every`, names deleted objects in `gone`, and refuses a bad `every` naming the field.
#[test]
fn all_objects_stream_and_its_errors() {
    require_cgroup_v1();
    let d = Daemon::start();
    let (status, a) = d.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&sleep_spec("stream-a", 0.2, "32Mi")),
    );
    assert_eq!(status, 201, "{a}");
    let id = a["id"].as_str().unwrap().to_string();

    let (status, mut sse) = RawSse::open(d.port, "/v1/metrics/stream?every=300ms");
    assert_eq!(status, 200);
    let (ev, data) = sse.next(Duration::from_secs(5)).expect("a first event");
    assert_eq!(ev, "samples");
    let v: Value = serde_json::from_str(&data).unwrap();
    let ids: Vec<&str> = v["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert!(ids.contains(&"host"), "{ids:?}");
    assert!(ids.contains(&id.as_str()), "{ids:?}");

    // No faster than `every`: over ~1.5 s at 300 ms, at most 6 events.
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_millis(1500) {
        if sse.next(Duration::from_millis(100)).is_some() {
            n += 1;
        }
    }
    assert!((2..=6).contains(&n), "{n} events in 1.5 s at every=300ms");

    let (status, _) = d.http("DELETE", "/v1/objects/stream-a?wait=true", None);
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, data) = sse.next(Duration::from_secs(1)).unwrap_or_default();
        if let Ok(v) = serde_json::from_str::<Value>(&data) {
            if v["gone"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g == id.as_str())
            {
                break;
            }
        }
        assert!(Instant::now() < deadline, "no `gone` for {id}");
    }

    let (status, e) = d.http("GET", "/v1/metrics/stream?every=1ms", None);
    assert_eq!(status, 400, "{e}");
    assert_eq!(e["error"]["field"], "every", "{e}");
    let (status, e) = d.http("GET", "/v1/objects/nope/metrics/stream", None);
    assert_eq!(status, 404, "{e}");
    let (status, e) = d.http("GET", "/v1/objects/host/metrics/stream?every=soon", None);
    assert_eq!(status, 400, "{e}");
    assert_eq!(e["error"]["field"], "every", "{e}");
}
