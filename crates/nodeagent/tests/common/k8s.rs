//! A real Kubernetes 1.20 control plane for the tests: Debian's etcd 3.4, and kube-apiserver
//! and kube-controller-manager built from Debian's `kubernetes` source package by
//! `scripts/k8s-build.sh` (scripts/test.sh runs it and exports `NODEAGENT_TEST_K8S`, the
//! directory of the binaries). There is no node and no scheduler: pods stay Pending.
//!
//! It starts once per test binary, on free loopback ports, with its own CA and serving
//! certificate, a token file, `AlwaysAllow` authorization and the ServiceAccount admission
//! plugin off (no token controller runs). The processes are started from a thread that lives
//! as long as the test binary and get `PR_SET_PDEATHSIG`, so they die with it, whatever way
//! it ends.

use super::free_port;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

pub struct ControlPlane {
    pub dir: PathBuf,
    pub port: u16,
    pub kubeconfig: PathBuf,
    pub token: String,
    pub bin: PathBuf,
}

/// The control plane, or why it did not start (each test then fails at once with the reason,
/// rather than trying again).
static CP: OnceLock<Result<ControlPlane, String>> = OnceLock::new();

/// The directory of the built binaries; a missing build is a failure that says what to run.
pub fn k8s_bin_dir() -> PathBuf {
    let dir = std::env::var("NODEAGENT_TEST_K8S").unwrap_or_else(|_| {
        panic!(
            "NODEAGENT_TEST_K8S is not set: run scripts/k8s-build.sh (scripts/test.sh does) and \
             export NODEAGENT_TEST_K8S=<its output>"
        )
    });
    let dir = PathBuf::from(dir).join("bin");
    for b in ["kube-apiserver", "kube-controller-manager", "kubectl"] {
        assert!(
            dir.join(b).exists(),
            "{} is missing: run scripts/k8s-build.sh",
            dir.join(b).display()
        );
    }
    assert!(
        Path::new("/usr/bin/etcd").exists(),
        "etcd is not installed: install Debian's etcd-server (scripts/k8s-build.sh does)"
    );
    dir
}

/// The control plane of this test binary, started on first use.
pub fn control_plane() -> &'static ControlPlane {
    let cp = CP.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("k8s-control-plane".into())
            .spawn(move || {
                let started = std::panic::catch_unwind(start).map_err(|p| {
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "it panicked".into())
                });
                let (cp, _children) = match started {
                    Ok(v) => (Ok(v.0), v.1),
                    Err(e) => (Err(e), Vec::new()),
                };
                tx.send(cp).unwrap();
                // The children die with this thread (PR_SET_PDEATHSIG): it lives as long as
                // the test binary, and holds them.
                loop {
                    std::thread::park();
                }
            })
            .unwrap();
        rx.recv()
            .unwrap_or_else(|_| Err("the control plane's thread ended".into()))
    });
    match cp {
        Ok(cp) => cp,
        Err(why) => panic!("the test control plane did not start: {why}"),
    }
}

/// Waits for `ready` while `child` runs: its exit ends the wait with the end of its log.
fn wait_for(
    child: &mut std::process::Child,
    log: &Path,
    timeout: Duration,
    what: &str,
    mut ready: impl FnMut() -> bool,
) {
    let start = std::time::Instant::now();
    loop {
        if ready() {
            return;
        }
        if let Ok(Some(st)) = child.try_wait() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "waiting for {what}: it exited ({st}); the end of {}:\n{}",
                log.display(),
                tail.join("\n")
            );
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what} (log: {})",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What the exit of the test binary cleans up: the components' pids and their directory
/// (etcd's data alone preallocates 64 MB).
static CLEANUP: std::sync::Mutex<(Vec<i32>, Option<PathBuf>)> =
    std::sync::Mutex::new((Vec::new(), None));

extern "C" fn clean_up_at_exit() {
    if let Ok(mut c) = CLEANUP.lock() {
        for pid in c.0.drain(..) {
            // SAFETY: a plain kill(2) of a child this binary started.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
        if let Some(dir) = c.1.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn spawn(bin: &Path, args: &[String], log: &Path) -> std::process::Child {
    use std::os::unix::process::CommandExt as _;
    let log = std::fs::File::create(log).unwrap();
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
    if let Ok(mut c) = CLEANUP.lock() {
        c.0.push(child.id() as i32);
    }
    child
}

fn start() -> (ControlPlane, Vec<std::process::Child>) {
    let mut children = Vec::new();
    let bin = k8s_bin_dir();
    let dir = std::env::temp_dir().join(format!("nodeagent-k8s-{}", super::random_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    if let Ok(mut c) = CLEANUP.lock() {
        c.1 = Some(dir.clone());
    }
    // SAFETY: registers a plain function, once per binary.
    unsafe {
        libc::atexit(clean_up_at_exit);
    }
    let (ca, cert, key) = certs(&dir);
    let token = format!("t{}", super::random_suffix());
    std::fs::write(
        dir.join("tokens.csv"),
        format!("{token},admin,admin,system:masters\n"),
    )
    .unwrap();
    let etcd_port = free_port();
    let etcd_peer = free_port();
    let etcd_url = format!("http://127.0.0.1:{etcd_port}");
    children.push(spawn(
        Path::new("/usr/bin/etcd"),
        &[
            "--data-dir".into(),
            dir.join("etcd").display().to_string(),
            "--listen-client-urls".into(),
            etcd_url.clone(),
            "--advertise-client-urls".into(),
            etcd_url.clone(),
            "--listen-peer-urls".into(),
            format!("http://127.0.0.1:{etcd_peer}"),
            "--initial-advertise-peer-urls".into(),
            format!("http://127.0.0.1:{etcd_peer}"),
            "--initial-cluster".into(),
            format!("default=http://127.0.0.1:{etcd_peer}"),
        ],
        &dir.join("etcd.log"),
    ));
    let etcd = children.last_mut().unwrap();
    wait_for(
        etcd,
        &dir.join("etcd.log"),
        Duration::from_secs(30),
        "etcd",
        || std::net::TcpStream::connect(("127.0.0.1", etcd_port)).is_ok(),
    );
    let port = free_port();
    let key_s = key.display().to_string();
    children.push(spawn(
        &bin.join("kube-apiserver"),
        &[
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={port}"),
            "--insecure-port=0".into(),
            format!("--tls-cert-file={}", cert.display()),
            format!("--tls-private-key-file={key_s}"),
            format!("--token-auth-file={}", dir.join("tokens.csv").display()),
            "--authorization-mode=AlwaysAllow".into(),
            "--disable-admission-plugins=ServiceAccount".into(),
            // Public keys only: the serving certificate carries the key's public half.
            format!("--service-account-key-file={}", cert.display()),
            format!("--service-account-signing-key-file={key_s}"),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            "--service-cluster-ip-range=10.96.0.0/16".into(),
            format!("--cert-dir={}", dir.join("certs").display()),
        ],
        &dir.join("kube-apiserver.log"),
    ));
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, kubeconfig_text(port, &ca, &token)).unwrap();
    let cp = ControlPlane {
        dir: dir.clone(),
        port,
        kubeconfig: kubeconfig.clone(),
        token,
        bin: bin.clone(),
    };
    let apiserver = children.last_mut().unwrap();
    wait_for(
        apiserver,
        &dir.join("kube-apiserver.log"),
        Duration::from_secs(90),
        "kube-apiserver's /readyz",
        || {
            let o = cp.kubectl(&["get", "--raw", "/readyz"]);
            o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "ok"
        },
    );
    // The controllers that give a Deployment its ReplicaSet and conditions, and collect what
    // a background delete leaves (no token controller: no service-account tokens here).
    children.push(spawn(
        &bin.join("kube-controller-manager"),
        &[
            format!("--kubeconfig={}", kubeconfig.display()),
            "--bind-address=127.0.0.1".into(),
            "--secure-port=0".into(),
            "--port=0".into(),
            "--leader-elect=false".into(),
            "--controllers=*,-serviceaccount-token".into(),
            "--use-service-account-credentials=false".into(),
        ],
        &dir.join("kube-controller-manager.log"),
    ));
    let kcm = children.last_mut().unwrap();
    wait_for(
        kcm,
        &dir.join("kube-controller-manager.log"),
        Duration::from_secs(60),
        "the default namespace",
        || {
            cp.kubectl(&["get", "namespace", "default"])
                .status
                .success()
        },
    );
    (cp, children)
}

impl ControlPlane {
    /// Debian's kubectl 1.20 against this control plane.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(self.bin.join("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .unwrap()
    }

    /// `kubectl get ... -o json`, or `None` when it is not found.
    pub fn get_json(&self, args: &[&str]) -> Option<serde_json::Value> {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-o", "json"]);
        let o = self.kubectl(&a);
        if !o.status.success() {
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                err.contains("NotFound") || err.contains("not found"),
                "kubectl {a:?}: {err}"
            );
            return None;
        }
        Some(serde_json::from_slice(&o.stdout).unwrap())
    }

    /// A config file with this cluster as `[[cluster]] name = "test"`.
    pub fn agent_config(&self, dir: &Path, extra: &str) -> PathBuf {
        let p = dir.join("nodeagent.toml");
        std::fs::write(
            &p,
            format!(
                "{extra}\n[[cluster]]\nname = \"test\"\nkubeconfig = \"{}\"\n",
                self.kubeconfig.display()
            ),
        )
        .unwrap();
        p
    }

    pub fn log(&self, component: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{component}.log"))).unwrap_or_default()
    }
}

fn kubeconfig_text(port: u16, ca: &Path, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority: {}\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context: {{cluster: test, user: admin}}\ncurrent-context: test\n",
        ca.display()
    )
}

/// A CA and a serving certificate for 127.0.0.1 signed by it: (ca, cert, key). RSA is not
/// needed: the key signs service-account tokens too, and 1.20 takes ECDSA keys for that.
fn certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    (paths.0, paths.1, paths.2)
}

/// A namespace of the test's own (`<prefix>-<random>`), deleted when the guard drops.
pub struct Ns(pub String);

impl Ns {
    pub fn new(cp: &ControlPlane, prefix: &str) -> Ns {
        let name = format!("{prefix}-{}", super::random_suffix());
        let o = cp.kubectl(&["create", "namespace", &name]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        Ns(name)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = control_plane().kubectl(&["delete", "namespace", &self.0, "--wait=false"]);
    }
}
