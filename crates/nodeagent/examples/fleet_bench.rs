//! The fan-out half of `bench/fleet.py`: one in-place update sent to every node of a fleet over
//! NATS until every reply is in, next to the same update sent to each node in turn over its
//! HTTP API (unix socket), in the same run.
//!
//!     fleet_bench NATS_URL ROUNDS HTTP_ROUNDS SOCKETS_FILE KEY
//!
//! SOCKETS_FILE lists one unix socket path per line (one per node). Prints one JSON object with
//! the latencies in microseconds.

use nodeagent_api::bus::client::FleetClient;
use nodeagent_api::bus::wire::{self, Op, Request, Selector};
use nodeagent_api::bus::BusAuth;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return 0.0;
    }
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// One PATCH over a unix socket, HTTP/1.1, a fresh connection (as a per-node controller would
/// open): the status code.
async fn patch(sock: &str, key: &str, body: &str) -> std::io::Result<u16> {
    let mut s = tokio::net::UnixStream::connect(sock).await?;
    let req = format!(
        "PATCH /v1/objects/{key} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    let text = String::from_utf8_lossy(&out);
    Ok(text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let [url, rounds, http_rounds, sockets, key] = a.as_slice() else {
        return Err("usage: fleet_bench NATS_URL ROUNDS HTTP_ROUNDS SOCKETS_FILE KEY".into());
    };
    let rounds: usize = rounds.parse()?;
    let http_rounds: usize = http_rounds.parse()?;
    let sockets: Vec<String> = std::fs::read_to_string(sockets)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    let c = FleetClient::connect(
        std::slice::from_ref(url),
        &BusAuth::default(),
        None,
        Some("fleet-bench"),
    )
    .await?;
    let n = sockets.len();
    let up = c
        .nodes()
        .await?
        .iter()
        .filter(|r| r.liveness(wire::now_ms()) == wire::Liveness::Up)
        .count();
    let mut bus = Vec::new();
    let mut incomplete = 0;
    for i in 0..rounds {
        let cpu = if i % 2 == 0 { 0.3 } else { 0.2 };
        let req = Request {
            key: Some(key.clone()),
            body: Some(serde_json::json!({"resources": {"cpu": cpu}})),
            ..Default::default()
        };
        let t = Instant::now();
        let f = c
            .fan_out(Op::Update, req, Selector::default(), Duration::from_secs(5))
            .await?;
        let us = t.elapsed().as_secs_f64() * 1e6;
        if f.replies.len() != n || f.replies.iter().any(|r| !r.ok()) {
            incomplete += 1;
        }
        bus.push(us);
    }
    let mut http = Vec::new();
    let mut http_failed = 0;
    for i in 0..http_rounds {
        let cpu = if i % 2 == 0 { 0.3 } else { 0.2 };
        let body = format!("{{\"resources\":{{\"cpu\":{cpu}}}}}");
        let t = Instant::now();
        for s in &sockets {
            if patch(s, key, &body).await? != 200 {
                http_failed += 1;
            }
        }
        http.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let out = serde_json::json!({
        "nodes": n,
        "registered_up": up,
        "rounds": rounds,
        "incomplete_rounds": incomplete,
        "bus_p50_us": pct(&mut bus, 0.5),
        "bus_p99_us": pct(&mut bus, 0.99),
        "http_rounds": http_rounds,
        "http_failed": http_failed,
        "http_seq_p50_us": pct(&mut http, 0.5),
        "http_seq_p99_us": pct(&mut http, 0.99),
    });
    println!("{out}");
    Ok(())
}
