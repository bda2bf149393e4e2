//! The qemu command line of a guest, built as an argv (no shell), and the accelerator check.
//!
//! Every value that goes into a QEMU option string (`key=value,key=value`) passes through
//! [`opt`], which doubles commas, QEMU's escape: even a path that reached here with a comma
//! (the spec refuses them) cannot add an option.

use nodeagent_types::spec::Accel;
use nodeagent_types::VmSpec;
use std::path::{Path, PathBuf};

/// Where the guest's files live: one folder per object under the state dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub dir: PathBuf,
}

impl Paths {
    pub fn new(dir: PathBuf) -> Paths {
        Paths { dir }
    }
    pub fn qmp(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }
    /// The serial console's capture (everything the guest wrote to it).
    pub fn console_log(&self) -> PathBuf {
        self.dir.join("console.log")
    }
    /// The serial console's input and live output (a unix socket qemu serves).
    pub fn console_sock(&self) -> PathBuf {
        self.dir.join("console.sock")
    }
    pub fn pidfile(&self) -> PathBuf {
        self.dir.join("qemu.pid")
    }
    /// qemu's own stdout and stderr.
    pub fn qemu_log(&self) -> PathBuf {
        self.dir.join("qemu.log")
    }
}

/// The default `qboot` firmware (fast: no BIOS POST), used when present.
pub const QBOOT: &str = "/usr/share/qemu/qboot.rom";

/// TCG's translation cache in MiB: qemu's default (1 GiB under TCG) would be charged to the
/// object's memory cgroup as the guest runs.
pub const TCG_TB_MIB: u64 = 64;

/// Room the cgroup memory limit leaves over the guest's RAM by default, for qemu itself (its
/// heap, TCG's translation cache, device buffers): a limit equal to the guest's RAM OOM-kills
/// qemu (nomad#27392).
pub fn default_overhead(guest_bytes: u64) -> u64 {
    (192 << 20) + guest_bytes / 8
}

/// Escapes a value for a QEMU option string: `,` is written `,,`.
pub fn opt(v: &str) -> String {
    v.replace(',', ",,")
}

fn mib(b: u64) -> u64 {
    b >> 20
}

/// The kernel command line the guest gets: the caller's, plus `console=ttyS0` where it names
/// no console (the console is captured from the first serial port), plus, with `max_memory`,
/// `swiotlb=noforce` (without it a small guest runs out of memory) and
/// `memhp_default_state=online_movable` (hot-added memory usable and removable).
pub fn guest_cmdline(vm: &VmSpec) -> String {
    let mut parts: Vec<String> = Vec::new();
    if !vm.cmdline.trim().is_empty() {
        parts.push(vm.cmdline.trim().to_string());
    }
    let has = |k: &str| vm.cmdline.split_whitespace().any(|w| w.starts_with(k));
    if !has("console=") {
        parts.push("console=ttyS0".into());
    }
    if vm.max_memory.is_some() {
        if !has("swiotlb=") {
            parts.push("swiotlb=noforce".into());
        }
        if !has("memhp_default_state=") {
            parts.push("memhp_default_state=online_movable".into());
        }
    }
    parts.join(" ")
}

/// qemu's argv (the program first) for the guest `name` with accelerator `kvm` or TCG.
pub fn argv(
    qemu: &str,
    name: &str,
    vm: &VmSpec,
    kvm: bool,
    paths: &Paths,
    qboot: bool,
) -> Vec<String> {
    let p = |x: PathBuf| opt(&x.display().to_string());
    let mut a: Vec<String> = vec![qemu.to_string()];
    let mut push = |k: &str, v: String| {
        a.push(k.to_string());
        a.push(v);
    };
    push("-name", format!("guest={},debug-threads=on", opt(name)));
    push("-machine", "q35".into());
    if kvm {
        push("-accel", "kvm".into());
        push("-cpu", "host".into());
    } else {
        push("-accel", format!("tcg,tb-size={TCG_TB_MIB}"));
    }
    push("-smp", format!("{},maxcpus={}", vm.vcpus, vm.max_vcpus()));
    let mem = match vm.max_memory {
        Some(max) if max.0 > vm.memory.0 => {
            format!("size={}M,slots=1,maxmem={}M", mib(vm.memory.0), mib(max.0))
        }
        _ => format!("size={}M", mib(vm.memory.0)),
    };
    push("-m", mem);
    if qboot {
        push("-bios", QBOOT.into());
    }
    push("-display", "none".into());
    push("-kernel", vm.kernel.clone());
    if let Some(i) = &vm.initrd {
        push("-initrd", i.clone());
    }
    push("-append", guest_cmdline(vm));
    push(
        "-chardev",
        format!(
            "socket,id=con0,path={},server=on,wait=off,logfile={},logappend=on",
            p(paths.console_sock()),
            p(paths.console_log())
        ),
    );
    push("-serial", "chardev:con0".into());
    push(
        "-chardev",
        format!("socket,id=qmp0,path={},server=on,wait=off", p(paths.qmp())),
    );
    push("-mon", "chardev=qmp0,mode=control".into());
    push("-pidfile", paths.pidfile().display().to_string());
    if vm.balloon {
        push("-device", "virtio-balloon-pci,id=balloon0".into());
    }
    for (i, d) in vm.disks.iter().enumerate() {
        push(
            "-drive",
            format!(
                "file={},format={},if=none,id=disk{i}{}",
                opt(&d.path),
                d.format.as_str(),
                if d.readonly { ",readonly=on" } else { "" }
            ),
        );
        push("-device", format!("virtio-blk-pci,drive=disk{i}"));
    }
    if let Some(n) = &vm.network {
        let mut nd = "user,id=net0".to_string();
        for f in &n.forwards {
            nd.push_str(&format!(
                ",hostfwd={}:127.0.0.1:{}-:{}",
                f.protocol.as_str(),
                f.host_port,
                f.guest_port
            ));
        }
        push("-netdev", nd);
        push("-device", "virtio-net-pci,netdev=net0".into());
    }
    // A guest reboot (or a panic, which reboots) ends qemu rather than booting again unseen.
    a.push("-no-reboot".into());
    a.push("-nodefaults".into());
    a.push("-no-user-config".into());
    a
}

/// Whether KVM can run a guest here: the CPU has vmx or svm, `/dev/kvm` opens read-write, and
/// `KVM_CREATE_VM` succeeds. (A microVM may expose `/dev/kvm` without any of it working.)
pub fn kvm_works(cpuinfo: &Path, dev: &Path) -> bool {
    let flags_ok = std::fs::read_to_string(cpuinfo).is_ok_and(|s| {
        s.lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
    });
    if !flags_ok {
        return false;
    }
    let Ok(f) = std::fs::OpenOptions::new().read(true).write(true).open(dev) else {
        return false;
    };
    use std::os::fd::AsRawFd;
    const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
    const KVM_CREATE_VM: libc::c_ulong = 0xAE01;
    // SAFETY: ioctls on an fd we own, with no pointer arguments.
    let api = unsafe { libc::ioctl(f.as_raw_fd(), KVM_GET_API_VERSION as _, 0) };
    if api != 12 {
        return false;
    }
    // SAFETY: as above; the VM fd it returns is closed at once.
    let vm = unsafe { libc::ioctl(f.as_raw_fd(), KVM_CREATE_VM as _, 0) };
    if vm < 0 {
        return false;
    }
    // SAFETY: `vm` is an fd the kernel just gave us.
    unsafe { libc::close(vm) };
    true
}

/// The accelerator to use for `accel`, or why it cannot be had.
pub fn pick_accel(accel: Accel, kvm_ok: bool) -> Result<bool, &'static str> {
    match accel {
        Accel::Tcg => Ok(false),
        Accel::Auto => Ok(kvm_ok),
        Accel::Kvm if kvm_ok => Ok(true),
        Accel::Kvm => Err(
            "KVM cannot run guests on this node (no vmx/svm, or /dev/kvm refuses KVM_CREATE_VM); \
             use accel \"tcg\" or \"auto\"",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodeagent_types::spec::{Disk, DiskFormat};
    use nodeagent_types::ObjectSpec;
    use proptest::prelude::*;

    /// Splits a QEMU option string as QEMU does: `,` separates, `,,` is a literal comma.
    fn split_opts(s: &str) -> Vec<String> {
        let mut out = vec![String::new()];
        let mut it = s.chars().peekable();
        while let Some(c) = it.next() {
            if c == ',' {
                if it.peek() == Some(&',') {
                    it.next();
                    if let Some(l) = out.last_mut() {
                        l.push(',');
                    }
                } else {
                    out.push(String::new());
                }
            } else if let Some(l) = out.last_mut() {
                l.push(c);
            }
        }
        out
    }

    fn spec(vm: &str) -> VmSpec {
        let s =
            ObjectSpec::from_json(format!(r#"{{"name":"g","kind":"vm","vm":{vm}}}"#).as_bytes())
                .expect("valid");
        s.section::<VmSpec>().expect("vm").clone()
    }

    fn paths() -> Paths {
        Paths::new(PathBuf::from("/var/lib/nodeagent/objects/abc"))
    }

    #[test]
    fn argv_has_the_basics() {
        let v = spec(
            r#"{"kernel":"/k","initrd":"/i","vcpus":2,"max_vcpus":4,"memory":"128Mi","max_memory":"512Mi","balloon":true,
            "network":{"mode":"user","forwards":[{"host_port":2222,"guest_port":22}]}}"#,
        );
        let a = argv("qemu-system-x86_64", "g", &v, false, &paths(), true);
        let j = a.join(" ");
        assert!(j.contains("-smp 2,maxcpus=4"), "{j}");
        assert!(j.contains("-m size=128M,slots=1,maxmem=512M"), "{j}");
        assert!(j.contains("-accel tcg,tb-size=64"), "{j}");
        assert!(j.contains("-bios /usr/share/qemu/qboot.rom"), "{j}");
        assert!(j.contains("hostfwd=tcp:127.0.0.1:2222-:22"), "{j}");
        assert!(j.contains("virtio-balloon-pci"), "{j}");
        assert!(j.contains("-nodefaults"), "{j}");
        let i = a.iter().position(|x| x == "-append").expect("append");
        assert_eq!(
            a[i + 1],
            "console=ttyS0 swiotlb=noforce memhp_default_state=online_movable"
        );
        assert_eq!(a[0], "qemu-system-x86_64");
        let k = spec(r#"{"kernel":"/k","cmdline":"console=hvc0 quiet"}"#);
        let a = argv("q", "g", &k, true, &paths(), false);
        assert!(a.join(" ").contains("-accel kvm -cpu host"));
        assert!(!a.iter().any(|x| x == "-bios"));
        let i = a.iter().position(|x| x == "-append").expect("append");
        assert_eq!(a[i + 1], "console=hvc0 quiet");
    }

    #[test]
    fn a_comma_in_a_path_adds_no_option() {
        // The spec refuses commas; the builder escapes them anyway.
        let mut v = spec(r#"{"kernel":"/k"}"#);
        v.disks.push(Disk {
            path: "/d,readonly=off,file=/etc/shadow".into(),
            format: DiskFormat::Raw,
            readonly: true,
        });
        let a = argv("q", "g", &v, false, &paths(), false);
        let d = a.iter().position(|x| x == "-drive").expect("drive");
        let kv = split_opts(&a[d + 1]);
        assert_eq!(kv[0], "file=/d,readonly=off,file=/etc/shadow");
        assert_eq!(kv.iter().filter(|k| k.starts_with("file=")).count(), 1);
        assert!(kv.contains(&"readonly=on".to_string()));
    }

    proptest! {
        /// Whatever the value, the escaped form reads back as exactly one value.
        #[test]
        fn opt_roundtrips(s in "[a-z/=,. ]{0,40}") {
            let parts = split_opts(&format!("file={}", opt(&s)));
            prop_assert_eq!(parts.len(), 1);
            prop_assert_eq!(&parts[0], &format!("file={s}"));
        }

        /// A disk path (of any characters) yields one `file=` and the builder's own keys.
        #[test]
        fn disk_path_cannot_inject(path in "/[a-z,=]{0,30}", ro in any::<bool>()) {
            let mut v = spec(r#"{"kernel":"/k"}"#);
            v.disks.push(Disk { path: path.clone(), format: DiskFormat::Qcow2, readonly: ro });
            let a = argv("q", "g", &v, false, &paths(), false);
            let d = a.iter().position(|x| x == "-drive").expect("drive");
            let kv = split_opts(&a[d + 1]);
            let keys: Vec<&str> = kv.iter().map(|k| k.split('=').next().unwrap_or("")).collect();
            let want: Vec<&str> = if ro {
                vec!["file", "format", "if", "id", "readonly"]
            } else {
                vec!["file", "format", "if", "id"]
            };
            prop_assert_eq!(keys, want);
            prop_assert_eq!(&kv[0], &format!("file={path}"));
        }
    }

    #[test]
    fn accel_choice() {
        assert_eq!(pick_accel(Accel::Auto, false), Ok(false));
        assert_eq!(pick_accel(Accel::Auto, true), Ok(true));
        assert_eq!(pick_accel(Accel::Tcg, true), Ok(false));
        assert!(pick_accel(Accel::Kvm, false).is_err());
        assert!(!kvm_works(Path::new("/nonexistent"), Path::new("/dev/kvm")));
    }
}
