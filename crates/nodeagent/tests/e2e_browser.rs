//! The web console in a real headless Chromium (issue 19): `tests/browser/console.mjs`, driven
//! by playwright-core under Node.js, against the real binary, real processes and the real
//! kernel's cgroup v1 files. Node.js and Chromium are only needed by this test, never to build
//! or run the agent.
//!
//! Chromium is Debian's (`/usr/bin/chromium`, installed by scripts/test.sh); playwright-core
//! (the driver only, no bundled browser) is installed with npm once into
//! `/var/cache/nodeagent-test/playwright-core-<version>/`, outside the clone. A missing browser,
//! Node.js or npm fails the test and says what to install.
//!
//! `NODEAGENT_SCREENSHOTS=DIR` also writes the console's screenshots there (docs/ has them).

#![allow(clippy::unwrap_used)]

mod common;

use common::{require_cgroup_v1, sleep_spec, Daemon};
use std::path::{Path, PathBuf};
use std::process::Command;

const PLAYWRIGHT_VERSION: &str = "1.65.2";
const CHROMIUM: &str = "/usr/bin/chromium";

fn playwright_core() -> PathBuf {
    let dir = PathBuf::from(format!(
        "/var/cache/nodeagent-test/playwright-core-{PLAYWRIGHT_VERSION}"
    ));
    let pkg = dir.join("node_modules/playwright-core");
    if pkg.join("package.json").exists() {
        return pkg;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new("npm")
        .args(["install", "--no-save", "--no-audit", "--no-fund", "--prefix"])
        .arg(&dir)
        .arg(format!("playwright-core@{PLAYWRIGHT_VERSION}"))
        .output()
        .unwrap_or_else(|e| {
            panic!("npm is needed to install playwright-core for the browser test: {e}; apt-get install npm")
        });
    assert!(
        out.status.success() && pkg.join("package.json").exists(),
        "npm install playwright-core@{PLAYWRIGHT_VERSION} into {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    pkg
}

#[test]
fn console_in_headless_chromium() {
    require_cgroup_v1();
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: the browser test needs Debian's Chromium (apt-get install chromium; \
         scripts/test.sh installs it)"
    );
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "node is missing: the browser test needs Node.js (apt-get install nodejs npm)"
    );
    let pw = playwright_core();

    let d = Daemon::start();
    // Neighbours, so that the objects view has a table to sort.
    for (i, cpu) in [0.1, 0.2, 0.3].iter().enumerate() {
        let (status, o) = d.http(
            "POST",
            "/v1/objects?wait=true",
            Some(&sleep_spec(&format!("ui-sleeper-{i}"), *cpu, "32Mi")),
        );
        assert_eq!(status, 201, "{o}");
    }
    let out = d.cli(&["ui", "--url", &format!("http://127.0.0.1:{}", d.port)]);
    assert!(out.status.success(), "nodeagent ui: {out:?}");
    let url = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(url.contains("/ui/#login="), "{url}");
    assert!(
        !url.contains(&d.token()),
        "the login URL must not carry the token"
    );

    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new("node");
    cmd.arg(manifest.join("tests/browser/console.mjs"))
        .env("PLAYWRIGHT_CORE", &pw)
        .env("LOGIN_URL", &url)
        .env("CHROMIUM", CHROMIUM)
        .env("VENDOR_DIR", manifest.join("../api/src/ui/vendor"));
    if let Ok(dir) = std::env::var("NODEAGENT_SCREENSHOTS") {
        cmd.env("SCREENSHOTS", dir);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "the browser test failed:\n{stdout}\n{stderr}\ndaemon log:\n{}",
        d.log()
    );
    // Neither the code nor the token is in the agent's log.
    let code = url.rsplit("login=").next().unwrap();
    let log = d.log();
    assert!(!log.contains(code), "the login code is in the daemon's log");
    assert!(
        !log.contains(&d.token()),
        "the token is in the daemon's log"
    );
}
