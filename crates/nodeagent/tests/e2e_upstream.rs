//! Reporting upstream, end to end, with the real binary (`nodeagent run` and the reference
//! receiver `nodeagent sink`) and a real `nats-server -js` (Debian's package; scripts/test.sh
//! installs it):
//!
//! - the acceptance check of issue 4, for gRPC and for NATS: 10 process objects pushed at
//!   100 ms; the upstream stops; the agent is killed with SIGKILL during the outage and
//!   restarted on the same state dir; the upstream comes back; the upstream then holds every
//!   sequence number from the first to the last, and the agent dropped nothing;
//! - an agent that starts while its upstream is down, and registers once it is up;
//! - a spool that reaches its cap: the oldest records are dropped, counted in `/v1/sinks` and
//!   `/metrics`, and reported as a `sink_dropped` event;
//! - TLS to the receiver.

#![allow(clippy::unwrap_used)]

mod common;

use common::nats::NatsServer;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// The outage. The check holds the upstream down for 60 s; the steps are the same.
const OUTAGE: Duration = Duration::from_secs(5);
const OBJECTS: usize = 10;

// ---- the reference receiver, as a process ----------------------------------------------------

struct ReceiverProc {
    child: Option<Child>,
    port: u16,
    out: PathBuf,
    log: PathBuf,
    extra: Vec<String>,
}

impl ReceiverProc {
    fn start(port: u16, out: &Path, extra: &[String]) -> ReceiverProc {
        let mut r = ReceiverProc {
            child: None,
            port,
            out: out.to_path_buf(),
            log: out.with_extension("log"),
            extra: extra.to_vec(),
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let before = std::fs::read_to_string(&self.log).unwrap_or_default().len();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = command()
            .args([
                "sink",
                "--listen",
                &format!("127.0.0.1:{}", self.port),
                "--out",
            ])
            .arg(&self.out)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.child = Some(child);
        // The port of the receiver that was killed may need a moment to be free again.
        eventually(Duration::from_secs(20), "the receiver's ready line", || {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("the receiver exited ({st}); its log:\n{text}");
                }
            }
            text[before.min(text.len())..]
                .contains("nodeagent sink ready")
                .then_some(())
        });
    }

    fn kill(&mut self, sig: i32) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
            let _ = c.wait();
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ReceiverProc {
    fn drop(&mut self) {
        self.kill(libc::SIGKILL);
    }
}

/// Every seq the receiver's file holds for `node`, in file order.
fn receiver_seqs(out: &Path, node: &str) -> Vec<u64> {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["node"] == node)
        .filter_map(|v| v["seq"].as_u64())
        .collect()
}

/// Every seq stored in the JetStream stream for `node`, read back with a NATS client.
fn jetstream_seqs(url: &str, stream: &str, node: &str) -> Vec<u64> {
    use prost::Message;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::connect(url).await.unwrap();
        let js = async_nats::jetstream::new(client);
        // Not there until the agent has created it.
        let Ok(mut s) = js.get_stream(stream).await else {
            return Vec::new();
        };
        let info = s.info().await.unwrap().clone();
        let mut seqs = Vec::new();
        if info.state.messages == 0 {
            return seqs;
        }
        for n in info.state.first_sequence..=info.state.last_sequence {
            let m = s.get_raw_message(n).await.unwrap();
            let batch =
                nodeagent_engine::upstream::proto::Batch::decode(m.payload.as_ref()).unwrap();
            if batch.node == node {
                seqs.extend(batch.records.iter().map(|r| r.seq));
            }
        }
        seqs
    })
}

// ---- the agent -------------------------------------------------------------------------------

fn write_config(dir: &Path, sink: &str) -> PathBuf {
    let p = dir.join("nodeagent.toml");
    let mut f = std::fs::File::create(&p).unwrap();
    f.write_all(sink.as_bytes()).unwrap();
    p
}

fn start_agent(config: &Path, node: &str, state_dir: &Path) -> Daemon {
    Daemon::start_with(Opts {
        args: vec![
            "--config".into(),
            config.display().to_string(),
            "--node-name".into(),
            node.into(),
        ],
        state_dir: Some(state_dir.to_path_buf()),
        ..Opts::default()
    })
}

/// The status of sink `name` from `GET /v1/sinks`.
fn sink_status(d: &Daemon, name: &str) -> Value {
    let (status, body) = d.http("GET", "/v1/sinks", None);
    assert_eq!(status, 200, "{body}");
    body["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no sink {name} in {body}"))
}

/// Creates `OBJECTS` sleeping processes sampled every 100 ms and pushes each to `sink` every
/// 100 ms; returns their names.
fn create_pushed(d: &Daemon, prefix: &str, sink: &str) -> Vec<String> {
    let mut names = Vec::new();
    for i in 0..OBJECTS {
        let name = format!("{prefix}-{i}");
        let (s, b) = d.http(
            "POST",
            "/v1/objects?wait=true",
            Some(&sleep_spec(&name, 0.1, "32Mi")),
        );
        assert_eq!(s, 201, "create {name}: {b}");
        let (s, b) = d.http(
            "POST",
            &format!("/v1/objects/{name}/push-on"),
            Some(&json!({"sink": sink, "interval": "100ms"})),
        );
        assert_eq!(s, 200, "push-on {name}: {b}");
        names.push(name);
    }
    names
}

fn push_off(d: &Daemon, names: &[String], sink: &str) {
    for name in names {
        let (s, b) = d.http(
            "POST",
            &format!("/v1/objects/{name}/push-off"),
            Some(&json!({"sink": sink})),
        );
        assert_eq!(s, 200, "push-off {name}: {b}");
    }
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"))
}

/// Waits until the agent's sink has had every record it numbered acknowledged; returns the
/// last seq.
fn wait_drained(d: &Daemon, sink: &str) -> u64 {
    eventually(
        Duration::from_secs(60),
        "the spool to drain upstream",
        || {
            let st = sink_status(d, sink);
            let last = st["last_seq"].as_u64()?;
            (last > 0 && st["acked_seq"].as_u64() == Some(last) && u(&st, "queue_depth") == 0)
                .then_some(last)
        },
    )
}

/// The acceptance check's verdict: every seq from the first to the last, none missing.
fn assert_no_gap(seqs: &[u64], upto: u64, what: &str) {
    let set: BTreeSet<u64> = seqs.iter().copied().collect();
    let first = *set.first().unwrap_or_else(|| panic!("{what}: no records"));
    assert_eq!(first, 1, "{what}: the first seq");
    let last = *set.last().unwrap();
    assert!(
        last >= upto,
        "{what}: holds up to {last}, the agent numbered {upto}"
    );
    let missing: Vec<u64> = (first..=last).filter(|s| !set.contains(s)).collect();
    assert!(
        missing.is_empty(),
        "{what}: {} seqs missing between {first} and {last}, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
}

/// The shared steps of the acceptance check. `upstream_down` / `upstream_up` stop and restart
/// the upstream; `stored` reads back what it holds for the node.
fn outage_and_kill9(
    sink_toml: &str,
    node: &str,
    mut upstream_down: impl FnMut(),
    mut upstream_up: impl FnMut(),
    stored: impl Fn() -> Vec<u64>,
) {
    require_cgroup_v1();
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let config = write_config(tmp.path(), sink_toml);

    let mut a = start_agent(&config, node, &state);
    create_pushed(&a, "up-a", "up");
    eventually(Duration::from_secs(20), "records at the upstream", || {
        (stored().len() >= 100).then_some(())
    });

    upstream_down();
    let outage = Instant::now();
    std::thread::sleep(OUTAGE / 2);
    let st = sink_status(&a, "up");
    assert_eq!(st["connected"], false, "{st}");
    assert!(
        u(&st, "spool_records") > 50,
        "records wait in the spool: {st}"
    );
    assert_eq!(u(&st, "dropped"), 0, "{st}");
    let last_a = u(&st, "last_seq");

    // kill -9 during the outage, and a new agent on the same state dir.
    a.signal(libc::SIGKILL);
    assert!(
        a.wait_exit(Duration::from_secs(10)).is_some(),
        "the agent died"
    );
    let b = start_agent(&config, node, &state);
    let st = sink_status(&b, "up");
    assert!(
        u(&st, "last_seq") >= last_a,
        "numbering continues after the restart: {st} (before the kill: {last_a})"
    );
    assert!(
        u(&st, "spool_records") > 50,
        "the spool survived kill -9: {st}"
    );
    let names = create_pushed(&b, "up-b", "up");
    std::thread::sleep(OUTAGE.saturating_sub(outage.elapsed()));

    upstream_up();
    // Let the restarted agent's objects report for a while through the live upstream, then stop
    // the flow and let the spool drain.
    std::thread::sleep(Duration::from_secs(2));
    push_off(&b, &names, "up");
    let last = wait_drained(&b, "up");
    let st = sink_status(&b, "up");
    assert_eq!(u(&st, "dropped"), 0, "the agent dropped nothing: {st}");
    assert_eq!(st["connected"], true, "{st}");

    let seqs = stored();
    assert_no_gap(&seqs, last, "the upstream");
    // Every record it acknowledged, this agent sent (the first agent's unacknowledged ones
    // again).
    assert!(
        u(&st, "acked") > 0 && u(&st, "sent") >= u(&st, "acked"),
        "{st}"
    );
    // Every object's samples arrived, from both agents.
    let metrics = b.get_text("/metrics").1;
    assert!(
        metrics.contains("nodeagent_sink_dropped_total{sink=\"up\","),
        "{metrics}"
    );
}

#[test]
fn grpc_outage_and_kill9_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let out = tmp.path().join("received.jsonl");
    let node = format!("e2e-grpc-{}", random_suffix());
    let receiver = std::cell::RefCell::new(ReceiverProc::start(port, &out, &[]));
    let sink = format!(
        "[[sink]]\nname = \"up\"\ntype = \"grpc\"\naddress = \"http://127.0.0.1:{port}\"\n\
         compression = \"gzip\"\nheartbeat_interval = \"1s\"\n"
    );
    outage_and_kill9(
        &sink,
        &node,
        || receiver.borrow_mut().kill(libc::SIGKILL),
        || receiver.borrow_mut().spawn(),
        || receiver_seqs(&out, &node),
    );
    // The receiver wrote each record once, even though the agent resent what was unacked.
    let seqs = receiver_seqs(&out, &node);
    let unique: BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(
        unique.len(),
        seqs.len(),
        "duplicates in the receiver's file"
    );
    let log = receiver.borrow().log_text();
    assert!(log.contains("node registered"), "{log}");
    assert!(log.contains(&node), "{log}");
}

#[test]
fn nats_outage_and_kill9_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let node = format!("e2e-nats-{}", random_suffix());
    let server = std::cell::RefCell::new(NatsServer::start(free_port(), &tmp.path().join("js")));
    let url = server.borrow().url();
    let sink = format!("[[sink]]\nname = \"up\"\ntype = \"nats\"\nurl = \"{url}\"\n");
    outage_and_kill9(
        &sink,
        &node,
        || server.borrow_mut().stop(),
        || server.borrow_mut().spawn(),
        || {
            if server.borrow().child.is_none() {
                return Vec::new();
            }
            jetstream_seqs(&url, "NODEAGENT", &node)
        },
    );
}

#[test]
fn starts_with_the_upstream_down_and_registers_later() {
    require_cgroup_v1();
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let out = tmp.path().join("received.jsonl");
    let node = format!("e2e-late-{}", random_suffix());
    let config = write_config(
        tmp.path(),
        &format!(
            "[heartbeat]\ninterval = \"200ms\"\nsinks = [\"up\"]\n\n\
             [[sink]]\nname = \"up\"\ntype = \"grpc\"\naddress = \"http://127.0.0.1:{port}\"\n"
        ),
    );
    let started = Instant::now();
    let d = start_agent(&config, &node, &tmp.path().join("state"));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "start-up does not wait for the upstream"
    );
    let st = eventually(
        Duration::from_secs(10),
        "the failed connection to show",
        || {
            let st = sink_status(&d, "up");
            (u(&st, "errors") > 0 && u(&st, "spool_records") >= 3).then_some(st)
        },
    );
    assert_eq!(st["connected"], false, "{st}");
    assert!(
        st["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("connecting"),
        "{st}"
    );
    assert!(st.get("node_id").is_none(), "not registered yet: {st}");
    assert!(
        d.log().contains("registering in the background"),
        "{}",
        d.log()
    );

    let receiver = ReceiverProc::start(port, &out, &[]);
    let st = eventually(Duration::from_secs(20), "registration", || {
        let st = sink_status(&d, "up");
        (st["connected"] == true && st["node_id"].is_string() && u(&st, "acked") >= 3).then_some(st)
    });
    assert_eq!(u(&st, "dropped"), 0, "{st}");
    let log = receiver.log_text();
    assert!(
        log.contains("node registered") && log.contains(&node),
        "{log}"
    );
    // What waited in the spool arrived: host heartbeats and the agent_started event.
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("\"kind\":\"agent_started\""), "{text}");
    assert!(text.contains("\"kind\":\"host\""), "{text}");
    // The CLI shows it.
    let o = d.cli(&["sinks"]);
    assert!(o.status.success(), "{o:?}");
    let table = String::from_utf8_lossy(&o.stdout).to_string();
    let line = table
        .lines()
        .find(|l| l.starts_with("up "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(line.contains("grpc") && line.contains(" yes "), "{table}");
}

#[test]
fn a_full_spool_drops_the_oldest_and_says_so() {
    require_cgroup_v1();
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port(); // nothing listens there
    let node = format!("e2e-cap-{}", random_suffix());
    let config = write_config(
        tmp.path(),
        &format!(
            "[heartbeat]\ninterval = \"10ms\"\nsinks = [\"up\"]\n\n\
             [[sink]]\nname = \"up\"\ntype = \"grpc\"\naddress = \"http://127.0.0.1:{port}\"\n\
             spool_segment_bytes = \"8Ki\"\nspool_max_bytes = \"32Ki\"\n"
        ),
    );
    let d = Daemon::start_with(Opts {
        args: vec![
            "--config".into(),
            config.display().to_string(),
            "--node-name".into(),
            node,
        ],
        // The host is sampled every second by default; its heartbeat only repeats the latest
        // sample. Objects give a steady flow.
        ..Opts::default()
    });
    create_pushed(&d, "cap", "up");
    let st = eventually(Duration::from_secs(30), "drops at the cap", || {
        let st = sink_status(&d, "up");
        (u(&st, "dropped") > 0).then_some(st)
    });
    assert!(u(&st, "spool_bytes") <= 32 << 10, "the cap holds: {st}");
    assert_eq!(u(&st, "acked"), 0, "{st}");
    // Never silently: an event says how many, and /metrics counts them.
    let (_, ev) = d.http("GET", "/v1/events", None);
    let dropped: Vec<&Value> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "sink_dropped" && e["data"]["sink"] == "up")
        .collect();
    assert!(!dropped.is_empty(), "{ev}");
    assert!(
        dropped[0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("spool full"),
        "{ev}"
    );
    let text = d.get_text("/metrics").1;
    let line = text
        .lines()
        .find(|l| l.starts_with("nodeagent_sink_dropped_total{sink=\"up\",type=\"grpc\"}"))
        .unwrap_or_else(|| panic!("{text}"));
    let n: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n > 0, "{line}");
    assert!(
        text.contains("nodeagent_sink_connected{sink=\"up\",type=\"grpc\"} 0"),
        "{text}"
    );
    for family in [
        "nodeagent_sink_queue_depth",
        "nodeagent_sink_spool_bytes",
        "nodeagent_sink_sent_total",
        "nodeagent_sink_acked_total",
        "nodeagent_sink_retried_total",
    ] {
        assert!(
            text.contains(&format!("{family}{{sink=\"up\",type=\"grpc\"}}")),
            "{family}:\n{text}"
        );
    }
    promtool_check(&text);
}

/// `promtool check metrics` (Debian's `prometheus` package) accepts the exposition.
fn promtool_check(text: &str) {
    let tool = "/usr/bin/promtool";
    assert!(
        Path::new(tool).exists(),
        "promtool is missing: install Debian's `prometheus` package (scripts/test.sh does)"
    );
    let mut child = std::process::Command::new(tool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn reports_over_tls() {
    require_cgroup_v1();
    let tmp = tempfile::tempdir().unwrap();
    let (ca, cert, key) = tls_files(tmp.path());
    let port = free_port();
    let out = tmp.path().join("received.jsonl");
    let node = format!("e2e-tls-{}", random_suffix());
    let receiver = ReceiverProc::start(
        port,
        &out,
        &[
            "--tls-cert".into(),
            cert.display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
        ],
    );
    let config = write_config(
        tmp.path(),
        &format!(
            "[heartbeat]\ninterval = \"100ms\"\nsinks = [\"up\"]\n\n\
             [[sink]]\nname = \"up\"\ntype = \"grpc\"\naddress = \"https://127.0.0.1:{port}\"\n\
             [sink.tls]\nca = \"{}\"\nserver_name = \"localhost\"\n",
            ca.display()
        ),
    );
    let d = start_agent(&config, &node, &tmp.path().join("state"));
    eventually(Duration::from_secs(20), "records over TLS", || {
        (receiver_seqs(&out, &node).len() >= 5).then_some(())
    });
    let st = sink_status(&d, "up");
    assert_eq!(st["connected"], true, "{st}");
    assert_eq!(st["target"], format!("https://127.0.0.1:{port}"), "{st}");
    let log = receiver.log_text();
    assert!(log.contains("tls=true") && log.contains(&node), "{log}");
}

/// A CA and a certificate for `localhost` signed by it, as PEM files: (ca, cert, key).
fn tls_files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

#[test]
fn a_dead_upstream_stalls_nothing_else() {
    require_cgroup_v1();
    let tmp = tempfile::tempdir().unwrap();
    // An upstream that accepts connections and never answers: the worst kind.
    let blackhole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = blackhole.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in blackhole.incoming().flatten() {
            held.push(c);
        }
    });
    let node = format!("e2e-dead-{}", random_suffix());
    let config = write_config(
        tmp.path(),
        &format!(
            "[[sink]]\nname = \"up\"\ntype = \"grpc\"\naddress = \"http://127.0.0.1:{port}\"\n"
        ),
    );
    let d = start_agent(&config, &node, &tmp.path().join("state"));
    let names = create_pushed(&d, "dead", "up");
    // One object also reports to the local file sink.
    let (s, b) = d.http(
        "POST",
        &format!("/v1/objects/{}/push-on", names[0]),
        Some(&json!({"sink": "file", "interval": "100ms"})),
    );
    assert_eq!(s, 200, "{b}");
    let reports = d.state_dir.join("reports.jsonl");
    let lines = |p: &Path| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let file_before = lines(&reports);
    let seq_of = |name: &str| -> u64 {
        let (_, m) = d.http("GET", &format!("/v1/objects/{name}/metrics?limit=1"), None);
        m["samples"][0]["seq"].as_u64().unwrap_or(0)
    };
    let sample_before = seq_of(&names[0]);
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    while start.elapsed() < Duration::from_secs(3) {
        let t = Instant::now();
        let (s, _) = d.http("GET", "/v1/objects", None);
        assert_eq!(s, 200);
        slowest = slowest.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        slowest < Duration::from_millis(500),
        "the API stalled for {slowest:?}"
    );
    // Sampling went on (100 ms interval: about 30 samples in 3 s)...
    assert!(
        seq_of(&names[0]) >= sample_before + 20,
        "sampling stalled: {sample_before} -> {}",
        seq_of(&names[0])
    );
    // ...and so did the other sink, fed by the same report tasks' thread.
    let grown = lines(&reports) - file_before;
    assert!(grown >= 20, "the file sink got only {grown} records in 3 s");
    let st = sink_status(&d, "up");
    assert_eq!(st["connected"], false, "{st}");
    assert!(u(&st, "spool_records") > 200, "{st}");
    assert_eq!(u(&st, "dropped"), 0, "{st}");
}
