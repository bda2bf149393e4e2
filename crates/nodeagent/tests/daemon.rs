//! The daemon as a program: configuration layering, help, the socket, start-up failures and
//! signals.

#![allow(clippy::unwrap_used)]

mod common;

use common::{free_port, require_cgroup_v1, try_http, Daemon, Opts};
use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

fn write_config(dir: &std::path::Path, text: &str) -> String {
    let path = dir.join("nodeagent.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// flag > environment > file, for the real listener.
#[test]
fn config_precedence_for_listen() {
    require_cgroup_v1();
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (free_port(), free_port(), free_port());
    let config = write_config(dir.path(), &format!("listen = \"127.0.0.1:{a}\"\n"));
    let env = vec![("NODEAGENT_LISTEN".to_string(), format!("127.0.0.1:{b}"))];

    // All three: the flag wins.
    let d = Daemon::start_with(Opts {
        args: vec![
            "--config".into(),
            config.clone(),
            "--listen".into(),
            format!("127.0.0.1:{c}"),
        ],
        env: env.clone(),
        no_listen_flag: true,
        port: Some(c),
        ..Opts::default()
    });
    assert!(
        try_http(a, "GET", "/healthz", None).is_err(),
        "file's port answers"
    );
    assert!(
        try_http(b, "GET", "/healthz", None).is_err(),
        "env's port answers"
    );
    drop(d);

    // File and environment: the environment wins.
    let d = Daemon::start_with(Opts {
        args: vec!["--config".into(), config.clone()],
        env,
        no_listen_flag: true,
        port: Some(b),
        ..Opts::default()
    });
    assert!(
        try_http(a, "GET", "/healthz", None).is_err(),
        "file's port answers"
    );
    drop(d);

    // The file alone.
    let d = Daemon::start_with(Opts {
        args: vec!["--config".into(), config],
        no_listen_flag: true,
        port: Some(a),
        ..Opts::default()
    });
    drop(d);
}

/// The whole layering, checked through `--print-config` (no daemon needed).
#[test]
fn config_layers_in_print_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        r#"
listen = "127.0.0.1:1"
state_dir = "/tmp/from-file"
ring_size = 11
stop_grace = "3s"
log_level = "debug"
node_name = "file-node"

[heartbeat]
interval = "2s"
sinks = ["stdout", "up"]

[[sink]]
name = "up"
type = "grpc"
address = "http://127.0.0.1:7465"
"#,
    );
    let print = |env: &[(&str, &str)], args: &[&str]| -> toml::Table {
        let o = common::command()
            .args(["run", "--print-config", "--config", &config])
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        toml::from_str(&String::from_utf8_lossy(&o.stdout)).unwrap()
    };

    let t = print(&[], &[]);
    assert_eq!(t["listen"].as_str(), Some("127.0.0.1:1"));
    assert_eq!(t["state_dir"].as_str(), Some("/tmp/from-file"));
    assert_eq!(t["socket"].as_str(), Some("/tmp/from-file/nodeagent.sock"));
    assert_eq!(t["ring_size"].as_integer(), Some(11));
    assert_eq!(t["stop_grace"].as_str(), Some("3s"));
    assert_eq!(t["log_level"].as_str(), Some("debug"));
    assert_eq!(t["node_name"].as_str(), Some("file-node"));
    assert_eq!(t["heartbeat"]["interval"].as_str(), Some("2s"));
    assert_eq!(t["sink"][0]["name"].as_str(), Some("up"));
    assert_eq!(t["cgroup_root"].as_str(), Some("/sys/fs/cgroup"));

    let env = [
        ("NODEAGENT_RING_SIZE", "22"),
        ("NODEAGENT_STATE_DIR", "/tmp/from-env"),
        ("NODEAGENT_STOP_GRACE", "4s"),
        ("RUST_LOG", "warn"),
        ("NODEAGENT_CGROUP_PARENT", "/from-env"),
    ];
    let t = print(&env, &[]);
    assert_eq!(t["ring_size"].as_integer(), Some(22));
    assert_eq!(t["state_dir"].as_str(), Some("/tmp/from-env"));
    assert_eq!(t["socket"].as_str(), Some("/tmp/from-env/nodeagent.sock"));
    assert_eq!(t["stop_grace"].as_str(), Some("4s"));
    assert_eq!(t["log_level"].as_str(), Some("warn"));
    assert_eq!(t["cgroup_parent"].as_str(), Some("/from-env"));

    let t = print(
        &env,
        &[
            "--ring-size",
            "33",
            "--state-dir",
            "/tmp/from-flag",
            "--log-level",
            "trace",
            "--heartbeat-interval",
            "500ms",
        ],
    );
    assert_eq!(t["ring_size"].as_integer(), Some(33));
    assert_eq!(t["state_dir"].as_str(), Some("/tmp/from-flag"));
    assert_eq!(t["log_level"].as_str(), Some("trace"));
    assert_eq!(t["heartbeat"]["interval"].as_str(), Some("500ms"));
    assert_eq!(t["stop_grace"].as_str(), Some("4s"));
}

/// An unknown key in the config file stops start-up, naming the key.
#[test]
fn unknown_config_key_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "listen = \"127.0.0.1:1\"\nlisten_addr = \"x\"\n",
    );
    let o = common::command()
        .args(["run", "--config", &config, "--state-dir"])
        .arg(dir.path().join("state"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("listen_addr"), "{err}");
    assert!(
        err.contains(&config),
        "the message should name the file: {err}"
    );
    // Nothing was started: no state dir.
    assert!(!dir.path().join("state").exists());

    let o = common::command()
        .args(["run", "--config"])
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing.toml"));
}

/// `run --help` documents every option, its variable, its default and the precedence.
#[test]
fn run_help_documents_every_option() {
    let o = common::command().args(["run", "--help"]).output().unwrap();
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    // One entry per option: from a line starting with `-` (after indentation) to the next.
    let mut entries: Vec<String> = Vec::new();
    for line in help.lines() {
        if line.trim_start().starts_with('-') {
            entries.push(String::new());
        }
        if let Some(e) = entries.last_mut() {
            e.push_str(line);
            e.push('\n');
        }
    }
    for (flag, default) in [
        ("config", "none"),
        ("listen", "127.0.0.1:7464"),
        ("state-dir", "./nodeagent-data"),
        ("socket", "<state-dir>/nodeagent.sock"),
        ("cgroup-root", "/sys/fs/cgroup"),
        ("proc-root", "/proc"),
        ("cgroup-parent", "nodeagent"),
        ("node-name", "hostname"),
        ("log-level", "info"),
        ("ring-size", "[default: 120]"),
        ("heartbeat-interval", "10s"),
        ("stop-grace", "5s"),
        ("token-file", "<state-dir>/token"),
        ("auth", "token"),
        ("metrics-public", "false"),
        ("max-body", "1Mi"),
        ("socket-group", "mode 0600"),
        ("tls-cert", "plain TCP"),
        ("tls-key", "none"),
        ("tls-client-ca", "none"),
        ("docker-socket", "/var/run/docker.sock"),
    ] {
        let env = format!("NODEAGENT_{}", flag.to_uppercase().replace('-', "_"));
        let entry = entries
            .iter()
            .find(|e| e.trim_start().starts_with(&format!("--{flag} ")))
            .unwrap_or_else(|| panic!("no --{flag} in:\n{help}"));
        assert!(
            entry.contains(&format!("[env: {env}=")),
            "no {env} in {entry:?}"
        );
        assert!(
            entry.contains("[default: ") && entry.contains(default),
            "--{flag}: default {default:?} not documented in {entry:?}"
        );
    }
    assert!(help.contains("RUST_LOG"), "{help}");
    for layer in [
        "built-in defaults",
        "TOML file",
        "environment variables",
        "command-line flags",
    ] {
        assert!(help.contains(layer), "precedence: no {layer:?} in:\n{help}");
    }
    let order: Vec<usize> = [
        "1. built-in",
        "2. the TOML",
        "3. environment",
        "4. command-line",
    ]
    .iter()
    .map(|s| {
        help.find(s)
            .unwrap_or_else(|| panic!("no {s:?} in:\n{help}"))
    })
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{help}");
}

/// The socket is 0600, a stale socket file is replaced, a second agent on the same state dir is
/// refused, and SIGTERM stops the daemon cleanly and removes the socket.
#[test]
fn socket_mode_and_lifecycle() {
    require_cgroup_v1();
    let tmp = tempfile::tempdir().unwrap();
    // A stale socket left by a daemon that died.
    let stale_dir = tmp.path().join("state");
    std::fs::create_dir_all(&stale_dir).unwrap();
    drop(std::os::unix::net::UnixListener::bind(stale_dir.join("nodeagent.sock")).unwrap());
    assert!(stale_dir.join("nodeagent.sock").exists());

    let mut d = Daemon::start_with(Opts {
        state_dir: Some(stale_dir.clone()),
        ..Opts::default()
    });
    let sock = stale_dir.join("nodeagent.sock");
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");

    // It answers on the socket.
    let o = common::command()
        .arg("--state-dir")
        .arg(&stale_dir)
        .arg("host")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // The ready line names every address.
    let log = d.log();
    let ready = log
        .lines()
        .find(|l| l.contains("nodeagent ready"))
        .unwrap_or_else(|| panic!("no ready line in:\n{log}"));
    assert!(
        ready.contains(&format!("http=127.0.0.1:{}", d.port)),
        "{ready}"
    );
    assert!(
        ready.contains(&format!("grpc=127.0.0.1:{}", d.port)),
        "{ready}"
    );
    assert!(
        ready.contains(&format!("socket={}", sock.display())),
        "{ready}"
    );
    assert_eq!(log.matches("nodeagent ready").count(), 1, "{log}");

    // A second agent on the same state dir is refused and leaves the first one alone.
    let o = common::command()
        .args(["run", "--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--state-dir")
        .arg(&stale_dir)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    // Stopped by the pid lock, before it reaches the socket (issue 21).
    assert!(err.contains("already running"), "{err}");
    assert!(err.contains("Stop it first"), "{err}");
    assert!(sock.exists());

    let st = d.stop();
    assert!(
        st.success(),
        "exit status after SIGTERM: {st}; log:\n{}",
        d.log()
    );
    assert!(!sock.exists(), "socket left behind after shutdown");
}

/// A port in use is reported, with the address, and the exit status is non-zero.
#[test]
fn bind_failure_is_reported() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let o = common::command()
        .args(["run", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--state-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(err.to_lowercase().contains("in use"), "{err}");
    drop(busy);
}

/// A second signal during a slow shutdown exits at once. A request whose body never finishes
/// holds the graceful drain open; the first SIGTERM must leave the daemon draining, the second
/// must end it.
#[test]
fn second_signal_exits_at_once() {
    use std::io::Write as _;
    require_cgroup_v1();
    let mut d = Daemon::start();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    // With the token: without it the request would get its 401 at once, body unread, and hold
    // nothing open.
    s.write_all(
        format!(
            "POST /v1/objects HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{",
            d.token()
        )
        .as_bytes(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    d.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !d.exited(),
        "the daemon did not wait for the request in flight, so this test cannot check the \
         second signal; log:\n{}",
        d.log()
    );
    d.signal(libc::SIGTERM);
    let st = d
        .wait_exit(Duration::from_secs(3))
        .unwrap_or_else(|| panic!("still running after the second signal; log:\n{}", d.log()));
    assert!(
        !st.success(),
        "a forced exit should not report success: {st}"
    );
    assert!(d.log().contains("second signal"), "{}", d.log());
    drop(s);
}

/// Soft and hard "Max open files" of a process, from `/proc/<pid>/limits`.
fn nofile(pid: u32) -> (String, String) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_string();
    let f: Vec<&str> = line.split_whitespace().collect();
    (f[3].to_string(), f[4].to_string())
}

/// The agent raises its own open-file limit (it keeps ~8 counter files open per object), and
/// the workloads it spawns get the limit it was started with.
#[test]
fn open_file_limit_raised_for_the_agent_not_its_workloads() {
    require_cgroup_v1();
    let d = Daemon::start();
    let own = nofile(std::process::id());
    let (soft, _) = nofile(d.pid());
    let soft: u64 = soft.parse().unwrap();
    assert!(
        soft >= 1 << 18 || own.1 != "unlimited" && soft >= own.1.parse::<u64>().unwrap(),
        "the agent's soft limit {soft} was not raised (ours: {own:?})"
    );
    let (status, obj) = d.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&serde_json::json!({
            "name": "nofile", "kind": "process",
            "process": {"command": ["/bin/sleep", "600"]}
        })),
    );
    assert_eq!(status, 201, "{obj}");
    let pid = obj["pid"].as_u64().unwrap() as u32;
    assert_eq!(
        nofile(pid),
        own,
        "the workload's limit is the agent's original one"
    );
    let (status, _) = d.http("DELETE", "/v1/objects/nofile?wait=true", None);
    assert_eq!(status, 200);
}

/// Issue 21: a second agent on a running agent's state dir (on another port and socket, so
/// neither of those is what stops it) is told which agent runs there and to stop it first, and
/// is never told to move the store aside. The first agent keeps running, and the store is
/// untouched.
#[test]
fn a_second_agent_on_the_same_state_dir_names_the_first() {
    require_cgroup_v1();
    let first = Daemon::start();
    let sock2 = first.state_dir.join("second.sock");
    let out = common::command()
        .arg("run")
        .arg("--state-dir")
        .arg(&first.state_dir)
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--socket")
        .arg(&sock2)
        .arg("--cgroup-parent")
        .arg(&first.cgroup_parent)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "second agent started: {err}");
    assert!(err.contains(&format!("pid {}", first.pid())), "{err}");
    assert!(
        err.contains(&first.socket().display().to_string()),
        "no socket in: {err}"
    );
    assert!(err.contains("Stop it first"), "{err}");
    assert!(!err.contains("move the file aside"), "{err}");
    assert!(!sock2.exists(), "the second agent bound its socket");
    let (code, _) = first.http("GET", "/readyz", None);
    assert_eq!(code, 200, "the first agent was disturbed");
}

fn help_of(args: &[&str]) -> String {
    let o = common::command().args(args).output().unwrap();
    assert!(o.status.success(), "{args:?}: {o:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Issue 21: the help agrees with the code. Global options have a heading of their own (not
/// interleaved with a command's options), `sink --help` lists none of the options that do not
/// apply to it, and the top-level description names containers.
#[test]
fn help_texts_agree_with_the_code() {
    let top = help_of(&["--help"]);
    assert!(top.contains("containers"), "{top}");
    let short = help_of(&["-h"]);
    assert!(short.contains("containers"), "{short}");

    let update = help_of(&["update", "--help"]);
    let at = |what: &str| {
        update
            .find(what)
            .unwrap_or_else(|| panic!("no {what:?} in:\n{update}"))
    };
    let heading = at("Global options:");
    assert!(
        at("--cpu ") < heading && at("--cpu-weight") < heading,
        "{update}"
    );
    assert!(at("--state-dir") > heading, "{update}");
    assert!(
        at("--socket") > heading && at("--token-file") > heading,
        "{update}"
    );

    let sink = help_of(&["sink", "--help"]);
    for flag in [
        "--socket",
        "--token-file",
        "--state-dir",
        "--addr",
        "--tls-ca",
        "--output",
    ] {
        assert!(!sink.contains(flag), "sink --help lists {flag}:\n{sink}");
    }
    assert!(sink.contains("--out <FILE>"), "{sink}");

    // `push on --help` says what "interval" means in each report mode.
    let push = help_of(&["push", "--help"]);
    assert!(push.contains("--mode <MODE>"), "{push}");
    assert!(
        push.contains("latest: the newest sample, once per interval"),
        "{push}"
    );
    assert!(
        push.contains("batch: every sample taken since the last report"),
        "{push}"
    );
    assert!(push.contains("[default: 1s]"), "{push}");

    let run = help_of(&["run", "--help"]);
    assert!(
        !run.contains("--addr"),
        "run --help lists the client's --addr:\n{run}"
    );
}

/// Issue 21: a bad value in an option's environment variable is reported with the variable's
/// name, not only the flag's (which the user never typed); on the command line, the flag.
#[test]
fn a_bad_environment_value_names_the_variable() {
    let o = common::command()
        .args(["run", "--print-config"])
        .env("NODEAGENT_RING_SIZE", "lots")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("NODEAGENT_RING_SIZE"), "{err}");
    assert!(err.contains("'lots'"), "{err}");
    let o = common::command()
        .args(["run", "--print-config", "--ring-size", "lots"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--ring-size"), "{err}");
    assert!(!err.contains("NODEAGENT_RING_SIZE"), "{err}");
}
