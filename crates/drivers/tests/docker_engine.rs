//! The Docker driver against the real engine (DESIGN.md §5): `dockerd` on
//! `/var/run/docker.sock` with the local image `busybox:local`, as `scripts/test.sh` sets up.
//! Without them these tests fail with a message saying what to do; they never skip.

#![allow(clippy::unwrap_used)]

use futures::StreamExt;
use nodeagent_drivers::docker::{CreateConfig, Docker, DockerError, ResourceUpdate};
use std::io::Read;
use std::process::Command;
use std::time::Duration;

const IMAGE: &str = "busybox:local";

fn require_docker() {
    let out = Command::new("docker")
        .args(["version", "--format", "{{.Server.APIVersion}}"])
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "no Docker engine answers on /var/run/docker.sock ({}): install docker.io and \
             start dockerd, or run scripts/test.sh, which does both",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!(
            "the docker CLI is missing ({e}): apt-get install docker.io, or run scripts/test.sh"
        ),
    }
    let img = Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .output()
        .unwrap();
    assert!(
        img.status.success(),
        "the test image {IMAGE} is missing: run scripts/test.sh, which builds it from busybox-static"
    );
}

fn suffix() -> String {
    let mut b = [0u8; 5];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Removes the container when the test ends, even a failing one.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

async fn connect() -> Docker {
    require_docker();
    Docker::connect("/var/run/docker.sock", Duration::from_secs(5))
        .await
        .unwrap()
}

fn sleeper(labels: &[(&str, &str)]) -> CreateConfig {
    let mut l: std::collections::BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    l.insert("test".into(), "nodeagent-e2e".into());
    CreateConfig {
        image: IMAGE.into(),
        cmd: vec!["sleep".into(), "300".into()],
        labels: l,
        resources: ResourceUpdate {
            nano_cpus: Some(500_000_000),
            memory: Some(64 << 20),
            memory_swap: Some(-1),
            pids_limit: Some(50),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[tokio::test]
async fn negotiates_down_to_the_engines_api() {
    let d = connect().await;
    let v: f64 = d.api_version().parse().unwrap();
    // Debian's docker.io 20.10 speaks 1.41; bollard's default is newer, so negotiation must
    // have stepped down to at most what the engine offers.
    let server = Command::new("docker")
        .args(["version", "--format", "{{.Server.APIVersion}}"])
        .output()
        .unwrap();
    let server: f64 = String::from_utf8_lossy(&server.stdout)
        .trim()
        .parse()
        .unwrap();
    assert!(v <= server, "negotiated {v}, engine offers {server}");
    assert!(!d.server_version().is_empty());
    d.ping().await.unwrap();
}

#[tokio::test]
async fn a_missing_socket_is_unreachable() {
    let e = Docker::connect("/nonexistent/docker.sock", Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(e.is_unreachable(), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("docker engine not reachable at unix:///nonexistent/docker.sock"),
        "{msg}"
    );
}

#[tokio::test]
async fn images_are_found_or_not() {
    let d = connect().await;
    assert!(d.image_exists(IMAGE).await.unwrap());
    assert!(!d
        .image_exists(&format!("nodeagent-missing-{}:none", suffix()))
        .await
        .unwrap());
    // No registry is reachable here: a pull of a missing image fails, and says why.
    let e = d
        .pull(&format!("nodeagent-missing-{}:none", suffix()))
        .await
        .unwrap_err();
    assert!(!e.to_string().is_empty());
}

#[tokio::test]
async fn container_lifecycle_and_update() {
    let d = connect().await;
    let name = format!("nae2e-drv-{}", suffix());
    let _c = Cleanup(name.clone());
    let id = d
        .create(&name, &sleeper(&[("nodeagent.id", "drivertest")]))
        .await
        .unwrap();
    assert_eq!(id.len(), 64, "{id}");
    let info = d.inspect(&name).await.unwrap();
    assert_eq!(info.id, id);
    assert_eq!(info.name, name);
    assert!(!info.running);
    assert_eq!(info.labels.get("nodeagent.id").unwrap(), "drivertest");
    assert_eq!(info.resources.nano_cpus, Some(500_000_000));
    assert_eq!(info.resources.memory, Some(64 << 20));
    assert_eq!(info.resources.pids_limit, Some(50));

    d.start(&id).await.unwrap();
    let info = d.inspect(&id).await.unwrap();
    assert!(info.running, "{info:?}");
    let pid = info.pid.unwrap();
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(cg.contains(&id), "{cg}");

    let up = ResourceUpdate {
        nano_cpus: Some(1_500_000_000),
        cpu_shares: Some(512),
        memory: Some(128 << 20),
        memory_swap: Some(-1),
        pids_limit: Some(77),
        cpuset_cpus: Some("0".into()),
        ..Default::default()
    };
    d.update(&id, &up).await.unwrap();
    let r = d.inspect(&id).await.unwrap().resources;
    assert_eq!(r.nano_cpus, Some(1_500_000_000));
    assert_eq!(r.cpu_shares, Some(512));
    assert_eq!(r.memory, Some(128 << 20));
    assert_eq!(r.pids_limit, Some(77));
    assert_eq!(r.cpuset_cpus.as_deref(), Some("0"));

    d.pause(&id).await.unwrap();
    assert!(d.inspect(&id).await.unwrap().paused);
    d.unpause(&id).await.unwrap();
    assert!(!d.inspect(&id).await.unwrap().paused);

    let listed = d.list("nodeagent.id=drivertest").await.unwrap();
    assert!(listed.iter().any(|c| c.id == id), "{listed:?}");

    d.stop(&id, Duration::from_secs(1)).await.unwrap();
    let info = d.inspect(&id).await.unwrap();
    assert!(!info.running);
    // sleep ignores SIGTERM as pid 1 in its namespace: killed after the grace.
    assert_eq!(info.exit_code, Some(137), "{info:?}");
    d.remove(&id, false).await.unwrap();
    assert!(d.inspect(&id).await.unwrap_err().is_not_found());
    assert!(matches!(
        d.remove(&id, true).await,
        Err(DockerError::NotFound { .. })
    ));
}

#[tokio::test]
async fn a_name_in_use_is_a_conflict() {
    let d = connect().await;
    let name = format!("nae2e-drv-{}", suffix());
    let _c = Cleanup(name.clone());
    d.create(&name, &sleeper(&[])).await.unwrap();
    let e = d.create(&name, &sleeper(&[])).await.unwrap_err();
    assert!(matches!(e, DockerError::Conflict { .. }), "{e:?}");
}

#[tokio::test]
async fn events_report_start_die_and_destroy() {
    let d = connect().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let mut events = d.events(Some(now));
    let name = format!("nae2e-drv-{}", suffix());
    let _c = Cleanup(name.clone());
    let mut cfg = sleeper(&[]);
    cfg.cmd = vec!["sh".into(), "-c".into(), "exit 3".into()];
    let id = d.create(&name, &cfg).await.unwrap();
    d.start(&id).await.unwrap();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !seen.iter().any(|(a, _): &(String, _)| a == "die") {
        let ev = tokio::time::timeout_at(deadline, events.next())
            .await
            .expect("a die event within 20 s")
            .expect("stream open")
            .unwrap();
        if ev.id == id {
            seen.push((ev.action.clone(), ev.attributes.clone()));
        }
    }
    let (_, attrs) = seen.iter().find(|(a, _)| a == "die").unwrap();
    assert_eq!(attrs.get("exitCode").map(String::as_str), Some("3"));
    assert_eq!(attrs.get("name"), Some(&name));
    assert_eq!(attrs.get("test").map(String::as_str), Some("nodeagent-e2e"));
    assert!(seen.iter().any(|(a, _)| a == "start"), "{seen:?}");
    d.remove(&id, true).await.unwrap();
    loop {
        let ev = tokio::time::timeout_at(deadline, events.next())
            .await
            .expect("a destroy event")
            .expect("stream open")
            .unwrap();
        if ev.id == id && ev.action == "destroy" {
            break;
        }
    }
}
