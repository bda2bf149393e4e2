//! The child's environment is the spec's, never the agent's. In its own test binary because it
//! sets a variable in the test process.

use nodeagent_drivers::process::{reap, spawn, ExitStatus, SpawnSpec, DEFAULT_PATH};
use std::collections::BTreeMap;
use std::fs::File;
use std::time::{Duration, Instant};

fn run_env(env: &BTreeMap<String, String>) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("env");
    let command = vec!["env".to_owned()];
    let pid = spawn(SpawnSpec {
        command: &command,
        env,
        cwd: None,
        stdout: File::create(&out).expect("out"),
        stderr: File::create(dir.path().join("err")).expect("err"),
        cgroup_procs: Vec::new(),
    })
    .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = reap(pid) {
            break status;
        }
        assert!(Instant::now() < deadline, "env did not exit");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(status, ExitStatus::Code(0));
    std::fs::read_to_string(out).expect("read")
}

#[test]
fn env_is_exactly_the_spec_plus_a_default_path() {
    // The only test in this binary, so no other thread reads the environment meanwhile.
    std::env::set_var("NODEAGENT_PARENT_ONLY", "leak");

    let env = BTreeMap::from([
        ("GREETING".to_owned(), "hello world".to_owned()),
        ("EMPTY".to_owned(), String::new()),
    ]);
    let printed = run_env(&env);
    let mut lines: Vec<&str> = printed.lines().collect();
    lines.sort_unstable();
    let default_path = format!("PATH={DEFAULT_PATH}");
    let mut expected = vec!["EMPTY=", "GREETING=hello world", default_path.as_str()];
    expected.sort_unstable();
    assert_eq!(lines, expected);
    assert!(!printed.contains("NODEAGENT_PARENT_ONLY"));

    // A PATH of the spec's own is used as given, for the lookup and in the child.
    let env = BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]);
    assert_eq!(run_env(&env), "PATH=/usr/bin:/bin\n");
}
