//! The read-only ring accessors the live sample streams poll (`AgentHandle::samples_since`,
//! `AgentHandle::latest_changed`), on a real agent sampling real processes in cgroup v1. Needs
//! root and cgroup v1 at /sys/fs/cgroup; fails (not skips) without them.

#![allow(clippy::unwrap_used)]

use nodeagent_core::{Agent, CoreConfig};
use nodeagent_types::ObjectSpec;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

fn spec(name: &str) -> ObjectSpec {
    ObjectSpec::from_json(
        format!(
            r#"{{"name":"{name}","kind":"process","process":{{"command":["/bin/sleep","60"]}},
                "collect":{{"interval":"10ms"}}}}"#
        )
        .as_bytes(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rings_give_new_samples_in_order_and_name_the_gone() {
    assert!(
        Path::new("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").exists(),
        "this test needs cgroup v1 mounted at /sys/fs/cgroup (cpu controller) and root"
    );
    let state = tempfile::tempdir().unwrap();
    let parent = format!("/nodeagent-ringtest-{}", std::process::id());
    let mut cfg = CoreConfig::new(state.path().to_path_buf());
    cfg.cgroup_parent = Some(parent.clone());
    cfg.stop_grace = Duration::from_millis(200);
    cfg.heartbeat_sinks = vec![];
    let kinds = vec![nodeagent_engine::kinds::kind(
        nodeagent_engine::kinds::process::ProcessKind::new,
    )];
    let (agent, handle) = Agent::start(cfg, kinds).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(agent.run(async move {
        let _ = rx.await;
    }));

    let a = handle.create(spec("ring-a"), true).await.unwrap().id;
    let b = handle.create(spec("ring-b"), true).await.unwrap().id;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Everything after seq 0, capped to the newest `max`, oldest first, consecutive.
    let s = handle.samples_since(&a, 0, 5).unwrap();
    assert_eq!(s.len(), 5);
    assert!(s.windows(2).all(|w| w[1].seq == w[0].seq + 1), "{s:?}");
    let last = s[4].seq;
    assert!(handle
        .samples_since(&a, last + 1_000, 5)
        .unwrap()
        .is_empty());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let next = handle.samples_since(&a, last, 1000).unwrap();
    assert!(!next.is_empty() && next[0].seq == last + 1, "{next:?}");
    assert!(handle.samples_since("no-such-id", 0, 1).is_none());

    // The first pass has every object and the host; a pass right after has only what changed.
    let mut seen = HashMap::new();
    let (first, gone) = handle.latest_changed(&mut seen);
    let ids: Vec<&str> = first.iter().map(|s| s.id.as_str()).collect();
    assert!(
        ids.contains(&"host") && ids.contains(&a.as_str()) && ids.contains(&b.as_str()),
        "{ids:?}"
    );
    assert!(gone.is_empty());
    let (again, _) = handle.latest_changed(&mut seen);
    assert!(
        again.iter().all(|s| s.id != "host"),
        "the host samples every 1 s: {again:?}"
    );

    handle.delete(&b, true).await.unwrap();
    let (_, gone) = handle.latest_changed(&mut seen);
    assert_eq!(gone, vec![b.clone()]);
    assert!(handle.samples_since(&b, 0, 1).is_none());

    handle.delete(&a, true).await.unwrap();
    let _ = tx.send(());
    let _ = run.await;
    for c in [
        "cpu", "cpuacct", "memory", "pids", "freezer", "blkio", "cpuset",
    ] {
        let _ = std::fs::remove_dir(
            Path::new("/sys/fs/cgroup")
                .join(c)
                .join(parent.trim_start_matches('/')),
        );
    }
}
