//! A real `nats-server` (Debian's package; scripts/test.sh installs it) on a loopback port,
//! with JetStream and an optional config file (authorization, clustering, leaf nodes).

use super::eventually;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

pub fn nats_server_bin() -> PathBuf {
    for p in ["/usr/sbin/nats-server", "/usr/bin/nats-server"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("nats-server is not installed: install Debian's `nats-server` package (scripts/test.sh does)");
}

pub struct NatsServer {
    pub child: Option<Child>,
    pub port: u16,
    store: PathBuf,
    /// The text of `-c <file>`, where the test needs more than `-js -p`.
    config: Option<String>,
    /// Run with JetStream (`-js -sd <store>`); a leaf node that extends a hub's JetStream runs
    /// without.
    jetstream: bool,
}

impl NatsServer {
    pub fn start(port: u16, store: &Path) -> NatsServer {
        NatsServer::with_config(port, store, None)
    }

    /// `config` is a nats-server config file's text; the port, the JetStream store and the
    /// loopback address are given on the command line.
    pub fn with_config(port: u16, store: &Path, config: Option<&str>) -> NatsServer {
        NatsServer::custom(port, store, config, true)
    }

    /// `jetstream: false` runs without `-js` (a leaf node whose clients use the hub's).
    pub fn custom(port: u16, store: &Path, config: Option<&str>, jetstream: bool) -> NatsServer {
        let mut s = NatsServer {
            child: None,
            port,
            store: store.to_path_buf(),
            config: config.map(str::to_string),
            jetstream,
        };
        s.spawn();
        s
    }

    pub fn spawn(&mut self) {
        std::fs::create_dir_all(&self.store).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.store.with_extension("log"))
            .unwrap();
        let mut cmd = std::process::Command::new(nats_server_bin());
        cmd.args(["-a", "127.0.0.1", "-p", &self.port.to_string()]);
        if self.jetstream {
            cmd.arg("-js").arg("-sd").arg(&self.store);
        }
        if let Some(c) = &self.config {
            let f = self.store.with_extension("conf");
            std::fs::write(&f, c).unwrap();
            cmd.arg("-c").arg(f);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.child = Some(child);
        eventually(Duration::from_secs(20), "nats-server listening", || {
            std::net::TcpStream::connect(("127.0.0.1", self.port))
                .ok()
                .map(|_| ())
        });
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.store.with_extension("log")).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
