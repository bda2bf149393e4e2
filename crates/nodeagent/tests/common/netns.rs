//! Network namespaces made by a test (and removed when it ends), joined by a veth pair whose
//! ends are both inside them: nothing is added to the host's own namespace.
//!
//! A test thread enters a namespace with [`NetNs::enter`]: its sockets, and the processes it
//! spawns meanwhile, are then in that namespace (`setns(2)` is per thread), so the usual helpers
//! (`Daemon`, `free_port`, HTTP on 127.0.0.1) work unchanged inside it. The guard returns the
//! thread to where it was.

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::process::Command;

pub struct NetNs {
    pub name: String,
}

fn ip(args: &[&str]) {
    let o = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ip {args:?}: {e}: install iproute2"));
    assert!(
        o.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

impl NetNs {
    /// A fresh namespace with its loopback up.
    pub fn create(name: &str) -> NetNs {
        ip(&["netns", "add", name]);
        ip(&["-n", name, "link", "set", "lo", "up"]);
        NetNs {
            name: name.to_string(),
        }
    }

    /// A veth pair between `self` (address `a`, CIDR) and `other` (`b`).
    pub fn link(&self, a: &str, other: &NetNs, b: &str) {
        let (ea, eb) = ("veth-a", "veth-b");
        ip(&[
            "-n",
            &self.name,
            "link",
            "add",
            ea,
            "type",
            "veth",
            "peer",
            "name",
            eb,
            "netns",
            &other.name,
        ]);
        ip(&["-n", &self.name, "addr", "add", a, "dev", ea]);
        ip(&["-n", &self.name, "link", "set", ea, "up"]);
        ip(&["-n", &other.name, "addr", "add", b, "dev", eb]);
        ip(&["-n", &other.name, "link", "set", eb, "up"]);
    }

    /// Moves the calling thread into the namespace until the guard drops.
    pub fn enter(&self) -> NsGuard {
        let back = File::open("/proc/thread-self/ns/net").unwrap();
        let to = File::open(format!("/var/run/netns/{}", self.name)).unwrap();
        // SAFETY: both are open namespace files; setns only changes this thread's namespace.
        let rc = unsafe { libc::setns(to.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "setns {}: {}",
            self.name,
            std::io::Error::last_os_error()
        );
        NsGuard { back }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

pub struct NsGuard {
    back: File,
}

impl Drop for NsGuard {
    fn drop(&mut self) {
        // SAFETY: `back` is the thread's namespace from before `enter`.
        unsafe {
            libc::setns(self.back.as_raw_fd(), libc::CLONE_NEWNET);
        }
    }
}
