//! The core against the real kernel: real processes in real cgroup v1 hierarchies, driven
//! through the same handle the API uses. Needs root and cgroup v1 at /sys/fs/cgroup; fails (not
//! skips) without them.

use nodeagent_core::{Agent, AgentHandle, CoreConfig};
use nodeagent_engine::kinds;
use nodeagent_types::{ErrorCode, ObjectPatch, ObjectSpec, Status};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Env {
    handle: AgentHandle,
    state: tempfile::TempDir,
    parent: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        // Remove whatever the test left under its private parent.
        for c in [
            "cpu", "cpuacct", "cpuset", "memory", "pids", "freezer", "blkio",
        ] {
            let p = Path::new("/sys/fs/cgroup")
                .join(c)
                .join(self.parent.trim_start_matches('/'));
            if let Ok(rd) = std::fs::read_dir(&p) {
                for e in rd.flatten() {
                    if e.path().is_dir() {
                        let _ = std::fs::remove_dir(e.path());
                    }
                }
            }
            let _ = std::fs::remove_dir(&p);
        }
    }
}

fn require_v1() {
    assert!(
        Path::new("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").exists(),
        "these tests need cgroup v1 mounted at /sys/fs/cgroup (cpu controller) and root"
    );
}

async fn start() -> Env {
    require_v1();
    let state = tempfile::tempdir().expect("tempdir");
    let parent = format!(
        "/nodeagent-coretest-{}-{}",
        std::process::id(),
        nodeagent_types::new_object_id()
    );
    let mut cfg = CoreConfig::new(state.path().to_path_buf());
    cfg.cgroup_parent = Some(parent.clone());
    cfg.stop_grace = Duration::from_millis(500);
    cfg.heartbeat_sinks = vec![];
    let kinds = vec![
        kinds::kind(kinds::process::ProcessKind::new),
        kinds::kind(kinds::cgroup::CgroupKind::new),
    ];
    let (agent, handle) = Agent::start(cfg, kinds).expect("agent starts");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(agent.run(async move {
        let _ = rx.await;
    }));
    Env {
        handle,
        state,
        parent,
        shutdown: Some(tx),
    }
}

fn spec(json: &str) -> ObjectSpec {
    ObjectSpec::from_json(json.as_bytes()).expect("valid spec")
}

fn cg_file(parent: &str, ctrl: &str, id: &str, file: &str) -> PathBuf {
    Path::new("/sys/fs/cgroup")
        .join(ctrl)
        .join(parent.trim_start_matches('/'))
        .join(id)
        .join(file)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_lifecycle_on_real_cgroups() {
    let env = start().await;
    let h = &env.handle;
    let c = h
        .create(
            spec(
                r#"{"name":"sleeper","kind":"process","process":{"command":["/bin/sleep","300"]},
                 "resources":{"cpu":0.5,"memory":"64Mi","pids":50},"collect":{"interval":"50ms"}}"#,
            ),
            true,
        )
        .await
        .expect("create");
    let id = c.id.clone();
    assert_eq!(c.object.status, Status::Running);
    let pid = c.object.pid.expect("pid");
    assert_eq!(
        read(&cg_file(&env.parent, "cpu", &id, "cpu.cfs_quota_us")),
        "50000"
    );
    assert_eq!(
        read(&cg_file(&env.parent, "cpu", &id, "cpu.cfs_period_us")),
        "100000"
    );
    assert_eq!(
        read(&cg_file(
            &env.parent,
            "memory",
            &id,
            "memory.limit_in_bytes"
        )),
        "67108864"
    );
    assert_eq!(read(&cg_file(&env.parent, "pids", &id, "pids.max")), "50");
    // The process is in its cgroup.
    let procs = read(&cg_file(&env.parent, "cpu", &id, "cgroup.procs"));
    assert!(
        procs.lines().any(|l| l == pid.to_string()),
        "{procs} / {}",
        std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default()
    );

    // In-place update: in the file when the call returns.
    let patch =
        ObjectPatch::from_json(br#"{"resources":{"cpu":0.25,"memory":"128Mi"}}"#).expect("patch");
    let o = h.update(&id, patch).await.expect("update");
    assert_eq!(
        read(&cg_file(&env.parent, "cpu", &id, "cpu.cfs_quota_us")),
        "25000"
    );
    assert_eq!(
        read(&cg_file(
            &env.parent,
            "memory",
            &id,
            "memory.limit_in_bytes"
        )),
        "134217728"
    );
    assert_eq!(o.spec.resources.cpu, Some(0.25));

    // Pause and resume.
    let o = h
        .update(
            &id,
            ObjectPatch::from_json(br#"{"paused":true}"#).expect("p"),
        )
        .await
        .expect("pause");
    assert_eq!(o.status, Status::Paused);
    assert_eq!(
        read(&cg_file(&env.parent, "freezer", &id, "freezer.state")),
        "FROZEN"
    );
    let o = h
        .update(
            &id,
            ObjectPatch::from_json(br#"{"paused":false}"#).expect("p"),
        )
        .await
        .expect("resume");
    assert_eq!(o.status, Status::Running);

    // Samples arrive, in order, with pids == 1.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let samples = h.metrics(&id, None).await.expect("metrics");
    assert!(samples.len() >= 3, "{samples:?}");
    assert!(samples.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    let last = samples.last().expect("sample");
    assert_eq!(last.pids, Some(1));
    assert!(last.memory_limit_bytes == Some(134217728), "{last:?}");

    // push-once to file appends a line with the object.
    let ack = h.push_once(&id, "file").await.expect("push once");
    assert!(ack.sample_seq.is_some());
    let lines = std::fs::read_to_string(env.state.path().join("reports.jsonl")).expect("reports");
    assert!(lines.lines().any(|l| l.contains(&id)), "{lines}");

    // Prometheus carries it.
    let text = h.prometheus_text();
    assert!(text.contains(&format!("id=\"{id}\"")), "{text}");

    // Delete removes the process and the cgroup.
    let o = h.delete(&id, true).await.expect("delete");
    assert_eq!(o.status, Status::Deleted);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} still exists"
    );
    assert!(!cg_file(&env.parent, "cpu", &id, "").exists());
    assert!(!cg_file(&env.parent, "memory", &id, "").exists());
    assert_eq!(
        h.get(&id).await.expect_err("gone").code,
        ErrorCode::NotFound
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_create_leaves_nothing() {
    let env = start().await;
    let h = &env.handle;
    let e = h
        .create(
            spec(r#"{"name":"nope","kind":"process","process":{"command":["/no/such/program"]}}"#),
            true,
        )
        .await
        .expect_err("must fail");
    assert_eq!(e.field.as_deref(), Some("process.command[0]"), "{e}");
    assert_eq!(
        h.get("nope").await.expect_err("none").code,
        ErrorCode::NotFound
    );
    let dir = Path::new("/sys/fs/cgroup/cpu").join(env.parent.trim_start_matches('/'));
    let left: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().filter(|e| e.path().is_dir()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "cgroups left behind: {left:?}");
    // The name is free again.
    h.create(
        spec(r#"{"name":"nope","kind":"process","process":{"command":["/bin/sleep","5"]}}"#),
        true,
    )
    .await
    .expect("name reusable");
    let dup = h
        .create(
            spec(r#"{"name":"nope","kind":"process","process":{"command":["/bin/sleep","5"]}}"#),
            true,
        )
        .await
        .expect_err("duplicate");
    assert_eq!(dup.code, ErrorCode::AlreadyExists);
    h.delete("nope", true).await.expect("delete");
}

/// A process the kernel's OOM killer ends is reported as an OOM kill, with one `oom_killed`
/// event (issue 21), not as a bare "killed by signal 9"; and its log folder goes with its delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oom_killed_process_is_reported_as_such() {
    let env = start().await;
    let h = &env.handle;
    // dash keeps a command substitution's output in memory: 64 MiB against a 16 MiB limit.
    let c = h
        .create(
            spec(
                r#"{"name":"hog","kind":"process","process":{"command":["/bin/sh","-c","a=$(head -c 67108864 /dev/zero | tr '\\000' a); echo ${#a}"]},"resources":{"memory":"16Mi"}}"#,
            ),
            true,
        )
        .await
        .expect("create");
    let deadline = Instant::now() + Duration::from_secs(10);
    let o = loop {
        let o = h.get(&c.id).await.expect("get");
        if o.status == Status::Exited || Instant::now() > deadline {
            break o;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(o.status, Status::Exited, "{o:?}");
    assert_eq!(o.exit_signal, Some(9), "{o:?}");
    let msg = o.message.clone().unwrap_or_default();
    assert!(msg.contains("OOM killer"), "{msg}");
    let ooms: Vec<_> = h
        .events(None)
        .into_iter()
        .filter(|e| {
            e.kind.as_str() == "oom_killed" && e.object_id.as_deref() == Some(c.id.as_str())
        })
        .collect();
    assert_eq!(ooms.len(), 1, "one event for the crash: {ooms:?}");
    assert!(
        ooms[0].data["count"].as_u64().unwrap_or(0) >= 1,
        "{:?}",
        ooms[0]
    );
    let logs = env.state.path().join("objects").join(&c.id);
    assert!(logs.exists(), "{}", logs.display());
    h.delete(&c.id, true).await.expect("delete");
    assert!(
        !logs.exists(),
        "the log folder of a deleted object is removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_code_and_restart_policy() {
    let env = start().await;
    let h = &env.handle;
    let c = h
        .create(spec(r#"{"name":"ends","kind":"process","process":{"command":["/bin/sh","-c","echo hi; exit 3"]}}"#), true)
        .await
        .expect("create");
    let deadline = Instant::now() + Duration::from_secs(5);
    let o = loop {
        let o = h.get(&c.id).await.expect("get");
        if o.status == Status::Exited || Instant::now() > deadline {
            break o;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(o.status, Status::Exited);
    assert_eq!(o.exit_code, Some(3));
    let out =
        std::fs::read_to_string(o.stdout_path.as_deref().expect("stdout path")).expect("stdout");
    assert_eq!(out, "hi\n");

    let c = h
        .create(spec(r#"{"name":"flaky","kind":"process","process":{"command":["/bin/sh","-c","exit 1"],"restart":"on-failure"}}"#), true)
        .await
        .expect("create");
    let deadline = Instant::now() + Duration::from_secs(5);
    let o = loop {
        let o = h.get(&c.id).await.expect("get");
        if o.restarts >= 2 || Instant::now() > deadline {
            break o;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(o.restarts >= 2, "restarted {} times", o.restarts);
    h.delete(&c.id, true).await.expect("delete");
    h.delete("ends", true).await.expect("delete exited");
    let kinds: Vec<_> = h.events(None).iter().map(|e| e.kind.as_str()).collect();
    assert!(
        kinds.contains(&"exited") && kinds.contains(&"restarted") && kinds.contains(&"deleted"),
        "{kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopt_pids_and_release() {
    let env = start().await;
    let h = &env.handle;
    let mut child = std::process::Command::new("/bin/sleep")
        .arg("30")
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let before = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    let c = h
        .create(spec(&format!(r#"{{"name":"adopted","kind":"cgroup","cgroup":{{"pids":[{pid}]}},"resources":{{"memory":"32Mi"}}}}"#)), true)
        .await
        .expect("adopt");
    assert_eq!(
        read(&cg_file(
            &env.parent,
            "memory",
            &c.id,
            "memory.limit_in_bytes"
        )),
        "33554432"
    );
    let procs = read(&cg_file(&env.parent, "memory", &c.id, "cgroup.procs"));
    assert_eq!(procs, pid.to_string());
    h.delete(&c.id, true).await.expect("release");
    // Released, not killed: back where it was.
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    let after = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    assert_eq!(before, after);
    let _ = child.kill();
    let _ = child.wait();
    // Unknown pid is refused, naming the field.
    let e = h
        .create(
            spec(r#"{"name":"ghost","kind":"cgroup","cgroup":{"pids":[4000000]}}"#),
            true,
        )
        .await
        .expect_err("no such pid");
    assert_eq!(e.field.as_deref(), Some("cgroup.pids[0]"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopted_pids_that_exit_make_the_object_exited() {
    let env = start().await;
    let h = &env.handle;
    let mut child = std::process::Command::new("/bin/sleep")
        .arg("30")
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let c = h
        .create(
            spec(&format!(
                r#"{{"name":"short","kind":"cgroup","cgroup":{{"pids":[{pid}]}},"collect":{{"interval":"50ms"}}}}"#
            )),
            true,
        )
        .await
        .expect("adopt");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.get(&c.id).await.expect("get").status, Status::Running);
    let _ = child.kill();
    let _ = child.wait();
    let deadline = Instant::now() + Duration::from_secs(5);
    let o = loop {
        let o = h.get(&c.id).await.expect("get");
        if o.status != Status::Running || Instant::now() > deadline {
            break o;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(o.status, Status::Exited, "{o:?}");
    let kinds: Vec<_> = h
        .events(None)
        .into_iter()
        .filter(|e| e.object_id.as_deref() == Some(c.id.as_str()))
        .map(|e| e.kind.as_str())
        .collect();
    assert!(kinds.contains(&"exited"), "{kinds:?}");
    h.delete(&c.id, true).await.expect("delete");
}
