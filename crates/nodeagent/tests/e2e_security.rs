//! Issue 7, "secure by default", against the real daemon: the six acceptance steps, then the
//! token's details, the socket's mode and group (checked with a real unprivileged user), mTLS
//! for HTTP, the CLI and gRPC, the audit log, and the policy on processes, containers and
//! cgroups.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A config file in a fresh temp dir (kept alive by the returned guard).
fn config_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nodeagent.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// `nodeagent run` that is expected to refuse to start: its exit status and stderr.
fn run_refused(args: &[&str], state_dir: &Path) -> String {
    let mut child = command()
        .arg("run")
        .arg("--state-dir")
        .arg(state_dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            assert!(!st.success(), "started although it should have refused");
            return stderr(&out);
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`nodeagent run {args:?}` did not refuse to start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The six checks of the issue, in its order.
#[test]
fn acceptance_secure_by_default() {
    require_cgroup_v1();
    let d = Daemon::start();

    // (1) 401 on TCP without a token, 200 with the token from <state-dir>/token.
    let (status, body) = raw_http(d.port, "GET", "/v1/objects", None, &[]).unwrap();
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        json_of(&body),
        json!({"error": {"code": "unauthorized", "message": "missing or invalid bearer token"}})
    );
    let token = std::fs::read_to_string(d.state_dir.join("token")).unwrap();
    let token = token.trim();
    assert_eq!(token.len(), 64, "{token:?}");
    let auth = bearer(token);
    let (status, body) = raw_http(
        d.port,
        "GET",
        "/v1/objects",
        None,
        &[("Authorization", &auth)],
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_of(&body)["objects"][0]["kind"], "host");

    // (2) The socket is 0600 and the CLI works through it, without a token.
    let md = std::fs::metadata(d.socket()).unwrap();
    assert!(md.file_type().is_socket(), "{md:?}");
    assert_eq!(md.mode() & 0o777, 0o600);
    let o = d.cli(&["get", "-o", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"host\""));

    // (3) An over-large body gets 413 (the default cap is 1 MiB).
    let big = json!({"name": "big", "kind": "process",
        "process": {"command": ["/bin/true"]}, "labels": {"x": "y".repeat(2 << 20)}})
    .to_string();
    let (status, body) = raw_http(
        d.port,
        "POST",
        "/v1/objects",
        Some(&big),
        &[("Authorization", &auth)],
    )
    .unwrap();
    assert_eq!(status, 413, "{body}");
    assert_eq!(json_of(&body)["error"]["code"], "payload_too_large");

    // (4) A name like ../../x is refused, naming the field; as a key it is only looked up.
    let (status, body) = d.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&json!({"name": "../../x", "kind": "process",
            "process": {"command": ["/bin/sleep", "1"]}})),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "name");
    for key in [
        "..%2F..%2Fx",
        "%2e%2e",
        "%2Fetc%2Fpasswd",
        "..",
        "x%2F..%2F..%2F..",
    ] {
        let (status, body) = d.http("DELETE", &format!("/v1/objects/{key}?wait=true"), None);
        assert_eq!(status, 404, "{key}: {body}");
    }
    let (status, body) = d.http("GET", "/v1/objects/a%00b", None);
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "key");
    let parent = d.state_dir.parent().unwrap();
    assert!(!parent.join("x").exists() && !d.state_dir.join("x").exists());

    // (5) A disallowed command under a restrictive policy gets 403 naming the rule.
    let (_cfg_dir, cfg) =
        config_file("[policy]\nprocess_commands = [\"/usr/bin/sleep\", \"/bin/sleep\"]\n");
    let strict = Daemon::start_with(Opts {
        args: vec!["--config".into(), cfg.display().to_string()],
        ..Opts::default()
    });
    let (status, body) = strict.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&json!({"name": "sh", "kind": "process",
            "process": {"command": ["/bin/sh", "-c", "id"]}})),
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    assert_eq!(body["error"]["field"], "process.command[0]");
    assert_eq!(body["error"]["rule"], "policy.process_commands");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("policy.process_commands"),
        "{body}"
    );
    let (status, body) = strict.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&sleep_spec("allowed", 0.1, "16Mi")),
    );
    assert_eq!(status, 201, "{body}");
    let (status, _) = strict.http("DELETE", "/v1/objects/allowed?wait=true", None);
    assert_eq!(status, 200);

    // (6) Binding 0.0.0.0 with auth turned off refuses to start, with an explanation.
    let dir = tempfile::tempdir().unwrap();
    let err = run_refused(
        &[
            "--listen",
            &format!("0.0.0.0:{}", free_port()),
            "--auth",
            "none",
        ],
        &dir.path().join("state"),
    );
    assert!(
        err.contains("refusing to serve the API on 0.0.0.0"),
        "{err}"
    );
    for setting in ["auth", "tls_client_ca", "loopback"] {
        assert!(err.contains(setting), "{setting} not named in: {err}");
    }
    assert!(!dir.path().join("state").join("nodeagent.sock").exists());
}

#[test]
fn tokens_and_open_routes() {
    require_cgroup_v1();
    let d = Daemon::start();
    let wrong = bearer(&"0".repeat(64));
    let (status, body) = raw_http(
        d.port,
        "GET",
        "/v1/objects/host",
        None,
        &[("Authorization", &wrong)],
    )
    .unwrap();
    assert_eq!(status, 401, "{body}");
    assert!(!body.contains("host\""), "401 leaks the object: {body}");
    for open in ["/healthz", "/readyz"] {
        let (status, _) = raw_http(d.port, "GET", open, None, &[]).unwrap();
        assert_eq!(status, 200, "{open}");
    }
    let (status, _) = raw_http(d.port, "GET", "/metrics", None, &[]).unwrap();
    assert_eq!(status, 401, "/metrics needs the token unless public");
    let (status, text) = d.get_text("/metrics");
    assert_eq!(status, 200);
    assert!(text.contains("nodeagent_host_"), "{text}");
    // The token never reaches the log.
    assert!(!d.log().contains(&d.token()), "the token is in the log");

    let public = Daemon::start_with(Opts {
        args: vec!["--metrics-public".into()],
        ..Opts::default()
    });
    let (status, text) = raw_http(public.port, "GET", "/metrics", None, &[]).unwrap();
    assert_eq!(status, 200);
    assert!(text.contains("nodeagent_host_"));
    let (status, _) = raw_http(public.port, "GET", "/v1/host", None, &[]).unwrap();
    assert_eq!(status, 401, "only /metrics is public");
}

#[test]
fn grpc_needs_the_token() {
    require_cgroup_v1();
    let d = Daemon::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut anon = nodeagent_api::proto::agent_client::AgentClient::connect(format!(
            "http://127.0.0.1:{}",
            d.port
        ))
        .await
        .unwrap();
        let e = anon
            .list(nodeagent_api::proto::ListRequest {})
            .await
            .expect_err("no token");
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
        let e = anon
            .create(nodeagent_api::proto::CreateRequest {
                spec: None,
                wait: false,
            })
            .await
            .expect_err("no token");
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
        let mut c = grpc_client(d.port).await;
        let list = c
            .list(nodeagent_api::proto::ListRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(list.objects[0].kind, "host");
    });
}

#[test]
fn token_file_is_private_reused_and_checked() {
    require_cgroup_v1();
    let keep = tempfile::tempdir().unwrap();
    let state = keep.path().join("state");
    let mut d = Daemon::start_with(Opts {
        state_dir: Some(state.clone()),
        ..Opts::default()
    });
    let path = state.join("token");
    let md = std::fs::metadata(&path).unwrap();
    assert_eq!(md.mode() & 0o777, 0o600);
    assert_eq!(md.uid(), 0);
    let first = d.token();
    assert!(d.log().contains("generated the API token"), "{}", d.log());
    assert!(d.stop().success());

    let mut d = Daemon::start_with(Opts {
        state_dir: Some(state.clone()),
        ..Opts::default()
    });
    assert_eq!(d.token(), first, "the token changed across a restart");
    assert!(!d.log().contains("generated the API token"));
    assert!(d.stop().success());

    // Group-readable: refused, with the fix.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = run_refused(&["--listen", &format!("127.0.0.1:{}", free_port())], &state);
    assert!(
        err.contains("token file") && err.contains("chmod 600"),
        "{err}"
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();

    // A state dir others can write to: refused too.
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = run_refused(&["--listen", &format!("127.0.0.1:{}", free_port())], &state);
    assert!(err.contains("chmod 700"), "{err}");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();

    // --token-file moves it; NODEAGENT_TOKEN gives the CLI a token directly.
    let elsewhere = keep.path().join("api-token");
    let d = Daemon::start_with(Opts {
        state_dir: Some(state.clone()),
        args: vec!["--token-file".into(), elsewhere.display().to_string()],
        token_file: Some(elsewhere.clone()),
        ..Opts::default()
    });
    assert_ne!(d.token(), first);
    let addr = format!("http://127.0.0.1:{}", d.port);
    let o = command()
        .args(["--addr", &addr, "--token-file"])
        .arg(&elsewhere)
        .args(["get", "host"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = command()
        .args(["--addr", &addr, "get", "host"])
        .env("NODEAGENT_TOKEN", d.token())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = command()
        .args(["--addr", &addr, "get", "host"])
        .env("NODEAGENT_TOKEN", "0".repeat(64))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("unauthorized") && err.contains("NODEAGENT_TOKEN"),
        "{err}"
    );
}

/// Runs the CLI as an unprivileged user (`nobody`), so the socket's mode is really tested.
fn cli_as_nobody(state_dir: &Path, args: &[&str]) -> Output {
    command()
        .arg("--state-dir")
        .arg(state_dir)
        .args(args)
        // std drops the supplementary groups when root changes uid.
        .uid(65534)
        .gid(65534)
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn the_socket_admits_only_its_owner_or_group() {
    require_cgroup_v1();
    // A state dir that others may enter (0711), so only the socket's own mode decides.
    let keep = tempfile::tempdir().unwrap();
    std::fs::set_permissions(keep.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = keep.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o711)).unwrap();
    let d = Daemon::start_with(Opts {
        state_dir: Some(state.clone()),
        ..Opts::default()
    });
    assert_eq!(std::fs::metadata(d.socket()).unwrap().mode() & 0o777, 0o600);
    let o = cli_as_nobody(&state, &["get"]);
    assert!(
        !o.status.success(),
        "nobody drove the agent through a 0600 socket"
    );
    assert!(
        stderr(&o).to_lowercase().contains("permission denied"),
        "{}",
        stderr(&o)
    );
    drop(d);

    // socket_group: 0660 to the group, and the state dir lets the group in (0710).
    let d = Daemon::start_with(Opts {
        state_dir: Some(state.clone()),
        args: vec!["--socket-group".into(), "nogroup".into()],
        ..Opts::default()
    });
    let md = std::fs::metadata(d.socket()).unwrap();
    assert_eq!(md.mode() & 0o777, 0o660);
    assert_eq!(md.gid(), 65534);
    let sd = std::fs::metadata(&state).unwrap();
    assert_eq!(sd.mode() & 0o777, 0o710);
    assert_eq!(sd.gid(), 65534);
    let o = cli_as_nobody(&state, &["get", "host"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The token stays private to root even so.
    assert_eq!(
        std::fs::metadata(state.join("token")).unwrap().mode() & 0o777,
        0o600
    );
    // And the audit log names the caller by uid.
    let o = cli_as_nobody(&state, &["push", "once", "host", "--sink", "file"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (_, events) = d.http("GET", "/v1/events", None);
    let audit = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "audit" && e["data"]["uid"] == 65534)
        .unwrap_or_else(|| panic!("no audit event for uid 65534: {events}"));
    assert_eq!(audit["data"]["who"], "uid:65534");
    assert_eq!(audit["data"]["transport"], "unix");
    drop(d);

    // A group that does not exist is an error that says so.
    let err = run_refused(
        &[
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--socket-group",
            "no-such-group-here",
        ],
        &keep.path().join("other"),
    );
    assert!(err.contains("no such group"), "{err}");
}

#[test]
fn mutating_requests_are_audited() {
    require_cgroup_v1();
    let d = Daemon::start();
    // Over the socket (the CLI) and over TCP (the token).
    let o = d.cli(&["push", "on", "host", "--sink", "stdout", "--interval", "1s"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (status, body) = d.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&sleep_spec("audited", 0.1, "16Mi")),
    );
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let (status, _) = d.http("DELETE", "/v1/objects/audited?wait=true", None);
    assert_eq!(status, 200);
    let (status, _) = raw_http(d.port, "DELETE", "/v1/objects/host", None, &[]).unwrap();
    assert_eq!(status, 401);
    let (status, _) = d.http(
        "PATCH",
        "/v1/objects/no-such",
        Some(&json!({"paused": true})),
    );
    assert_eq!(status, 404);

    let events = eventually(Duration::from_secs(5), "five audit events", || {
        let (_, ev) = d.http("GET", "/v1/events", None);
        let audits: Vec<Value> = ev["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "audit")
            .cloned()
            .collect();
        (audits.len() >= 5).then_some(audits)
    });
    let find = |method: &str, path: &str| {
        events
            .iter()
            .find(|e| e["data"]["method"] == method && e["data"]["path"] == path)
            .unwrap_or_else(|| panic!("no audit of {method} {path}: {events:#?}"))
            .clone()
    };
    let push = find("POST", "/v1/objects/host/push-on");
    assert_eq!(push["data"]["who"], "uid:0");
    assert_eq!(push["data"]["transport"], "unix");
    assert_eq!(push["data"]["status"], 200);
    assert_eq!(push["data"]["id"], "host");

    let create = find("POST", "/v1/objects");
    assert_eq!(create["data"]["who"], "token");
    assert_eq!(create["data"]["transport"], "tcp");
    assert_eq!(create["data"]["status"], 201);
    assert_eq!(create["data"]["result"], "ok");
    assert_eq!(create["object_id"], id.as_str());
    assert_eq!(create["name"], "audited");
    assert!(create["message"]
        .as_str()
        .unwrap()
        .contains("token POST /v1/objects"));

    let delete = find("DELETE", "/v1/objects/audited");
    assert_eq!(delete["data"]["status"], 200);
    assert_eq!(delete["object_id"], id.as_str());

    let refused = find("DELETE", "/v1/objects/host");
    assert_eq!(refused["data"]["who"], "unauthenticated");
    assert_eq!(refused["data"]["status"], 401);

    let missing = find("PATCH", "/v1/objects/no-such");
    assert_eq!(missing["data"]["status"], 404);
    assert_eq!(missing["data"]["result"], "error");
    assert_eq!(missing["data"]["key"], "no-such");

    // Reads are not audited, and no record holds the token.
    assert!(events.iter().all(|e| e["data"]["method"] != "GET"));
    assert!(!serde_json::to_string(&events).unwrap().contains(&d.token()));
}

#[test]
fn containers_are_refused_host_access_by_default() {
    require_cgroup_v1();
    // The policy comes before the Docker engine is even looked for: these are 403 whether or
    // not an engine runs (none does on a fresh machine).
    let d = Daemon::start_with(Opts {
        args: vec!["--docker-socket".into(), "/nonexistent/docker.sock".into()],
        ..Opts::default()
    });
    let container = |extra: Value| {
        let mut c = json!({"image": "busybox:local", "command": ["sleep", "300"]});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({"name": "c1", "kind": "container", "container": c})
    };
    for (extra, field, rule) in [
        (
            json!({"privileged": true}),
            "container.privileged",
            "policy.allow_privileged",
        ),
        (
            json!({"network": "host"}),
            "container.network",
            "policy.allow_host_namespaces",
        ),
        (
            json!({"host_pid": true}),
            "container.host_pid",
            "policy.allow_host_namespaces",
        ),
        (
            json!({"mounts": [{"source": "/etc", "target": "/host-etc"}]}),
            "container.mounts[0].source",
            "policy.mount_sources",
        ),
    ] {
        let (status, body) = d.http("POST", "/v1/objects?wait=true", Some(&container(extra)));
        assert_eq!(status, 403, "{field}: {body}");
        assert_eq!(body["error"]["field"], field);
        assert_eq!(body["error"]["rule"], rule);
    }
    // Without host access the same spec passes the policy and reaches the driver.
    let (status, body) = d.http("POST", "/v1/objects?wait=true", Some(&container(json!({}))));
    assert_ne!(status, 403, "{body}");
}

#[test]
fn cgroup_adoption_is_limited_to_allowed_parents() {
    require_cgroup_v1();
    let allowed = format!("/nodeagent-e2e-allowed-{}", random_suffix());
    let (_cfg_dir, cfg) = config_file(&format!("[policy]\ncgroup_parents = [\"{allowed}\"]\n"));
    let d = Daemon::start_with(Opts {
        args: vec!["--config".into(), cfg.display().to_string()],
        ..Opts::default()
    });
    let (status, body) = d.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&json!({"name": "outside", "kind": "cgroup", "cgroup": {"path": "/system.slice"}})),
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["field"], "cgroup.path");
    assert_eq!(body["error"]["rule"], "policy.cgroup_parents");

    // A pid outside the allowed parents (this test's own child) cannot be adopted either.
    let mut child = std::process::Command::new("/bin/sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let (status, body) = d.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&json!({"name": "pid", "kind": "cgroup", "cgroup": {"pids": [child.id()]}})),
    );
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["field"], "cgroup.pids[0]");

    // Inside the allowed parent it works.
    for c in ["cpu", "memory", "pids"] {
        std::fs::create_dir_all(
            Path::new(CGROUP_ROOT)
                .join(c)
                .join(allowed.trim_start_matches('/'))
                .join("app"),
        )
        .unwrap();
    }
    let (status, body) = d.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&json!({"name": "inside", "kind": "cgroup",
            "cgroup": {"path": format!("{allowed}/app")}})),
    );
    let (del, _) = d.http("DELETE", "/v1/objects/inside?wait=true", None);
    remove_cgroup_tree(&allowed);
    assert_eq!(status, 201, "{body}");
    assert_eq!(del, 200);
}

/// A CA, a server certificate for 127.0.0.1, and a client certificate CN=alice, O=acme.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, "e2e CA");
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = p.self_signed(&ca_key).unwrap();
    let leaf = |sans: Vec<String>, cn: &str, eku| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.distinguished_name.push(DnType::OrganizationName, "acme");
        p.extended_key_usages = vec![eku];
        (
            p.signed_by(&key, &ca, &ca_key).unwrap().pem(),
            key.serialize_pem(),
        )
    };
    let (sc, sk) = leaf(
        vec!["127.0.0.1".into(), "localhost".into()],
        "node-1",
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (cc, ck) = leaf(vec![], "alice", ExtendedKeyUsagePurpose::ClientAuth);
    let private = |path: &Path, text: &str| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    };
    let p = Pki {
        ca: dir.path().join("ca.pem"),
        server_cert: dir.path().join("server.pem"),
        server_key: dir.path().join("server.key"),
        client_cert: dir.path().join("alice.pem"),
        client_key: dir.path().join("alice.key"),
        _dir: dir,
    };
    std::fs::write(&p.ca, ca.pem()).unwrap();
    std::fs::write(&p.server_cert, sc).unwrap();
    private(&p.server_key, &sk);
    std::fs::write(&p.client_cert, cc).unwrap();
    private(&p.client_key, &ck);
    p
}

/// Waits for the ready line (the plain-HTTP readiness probe cannot speak TLS).
fn wait_ready_line(d: &mut Daemon) {
    let start = Instant::now();
    while !d.log().contains("nodeagent ready") {
        assert!(!d.exited(), "the daemon exited; log:\n{}", d.log());
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "not ready; log:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn mutual_tls_for_http_cli_and_grpc() {
    require_cgroup_v1();
    let p = pki();
    // mTLS alone (no token) is enough to listen on every address.
    let port = free_port();
    let mut d = Daemon::spawn(Opts {
        no_listen_flag: true,
        port: Some(port),
        args: vec![
            "--listen".into(),
            format!("0.0.0.0:{port}"),
            "--auth".into(),
            "none".into(),
            "--tls-cert".into(),
            p.server_cert.display().to_string(),
            "--tls-key".into(),
            p.server_key.display().to_string(),
            "--tls-client-ca".into(),
            p.ca.display().to_string(),
        ],
        ..Opts::default()
    });
    wait_ready_line(&mut d);
    assert!(d.log().contains("auth=none tls=mtls"), "{}", d.log());
    let addr = format!("https://127.0.0.1:{port}");

    // The CLI with the client certificate works; without it, it is refused.
    let cli = |with_cert: bool, args: &[&str]| {
        let mut c = command();
        c.args(["--addr", &addr, "--tls-ca"]).arg(&p.ca);
        if with_cert {
            c.arg("--tls-client-cert")
                .arg(&p.client_cert)
                .arg("--tls-client-key")
                .arg(&p.client_key);
        }
        c.args(args).stdin(Stdio::null()).output().unwrap()
    };
    let o = cli(true, &["get", "host", "-o", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = cli(false, &["get", "host"]);
    assert!(!o.status.success(), "served without a client certificate");
    // Plain HTTP on the TLS port gets nothing either.
    assert!(!matches!(
        raw_http(port, "GET", "/v1/objects", None, &[]),
        Ok((200, _))
    ));

    // gRPC over TLS with the client certificate (ALPN h2 on the same port).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
        let tls = |with_cert: bool| {
            let mut t = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(std::fs::read(&p.ca).unwrap()))
                .domain_name("localhost");
            if with_cert {
                t = t.identity(Identity::from_pem(
                    std::fs::read(&p.client_cert).unwrap(),
                    std::fs::read(&p.client_key).unwrap(),
                ));
            }
            t
        };
        let channel = Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
            .unwrap()
            .tls_config(tls(true))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut c = nodeagent_api::proto::agent_client::AgentClient::new(channel);
        let created = c
            .create(nodeagent_api::proto::CreateRequest {
                spec: Some(nodeagent_api::proto::ObjectSpec {
                    name: "tls-1".into(),
                    kind: "process".into(),
                    process: Some(nodeagent_api::proto::ProcessSpec {
                        command: vec!["/bin/sleep".into(), "300".into()],
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                wait: true,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(created.status, "created");
        c.delete(nodeagent_api::proto::DeleteRequest {
            key: "tls-1".into(),
            wait: true,
            ..Default::default()
        })
        .await
        .unwrap();

        let refused = async {
            let ch = Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
                .unwrap()
                .tls_config(tls(false))
                .unwrap()
                .connect()
                .await?;
            nodeagent_api::proto::agent_client::AgentClient::new(ch)
                .list(nodeagent_api::proto::ListRequest {})
                .await
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        };
        assert!(
            refused.await.is_err(),
            "gRPC served without a client certificate"
        );
    });

    // The audit log names the certificate's subject.
    let o = cli(true, &["events", "-o", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let events: Value = serde_json::from_slice(&o.stdout).unwrap();
    let list = events["events"].as_array().or(events.as_array()).unwrap();
    let create = list
        .iter()
        .find(|e| e["kind"] == "audit" && e["data"]["path"] == "/nodeagent.v1.Agent/Create")
        .unwrap_or_else(|| panic!("no audit of the gRPC create: {events}"));
    assert_eq!(create["data"]["who"], "cert:CN=alice, O=acme");
    assert_eq!(create["data"]["auth"], "cert");
    assert_eq!(create["data"]["transport"], "tls");
    assert_eq!(create["data"]["grpc_status"], 0);
    assert_eq!(create["name"], "tls-1");
}
