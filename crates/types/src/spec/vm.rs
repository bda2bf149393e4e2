//! The `vm` kind's section: a QEMU guest the agent runs in a cgroup of its own.
//!
//! Validation here needs no I/O: paths are absolute, without NUL and without `,` (QEMU's option
//! syntax doubles commas to escape them; refusing them is simpler to audit than escaping). The
//! driver checks that the files exist before qemu is started.

use super::{is_false, truncate, KindSection};
use crate::error::ApiError;
use crate::kind::Kind;
use crate::quantity::{Duration, Memory};
use serde::{Deserialize, Serialize};

/// Most vCPUs a guest may have (QEMU's q35 goes higher; a node agent's guest does not need to).
pub const MAX_VCPUS: u32 = 256;
/// Smallest guest: below this the kernel does not boot.
pub const MIN_VM_MEMORY: u64 = 32 << 20;
pub const MAX_DISKS: usize = 16;
pub const MAX_FORWARDS: usize = 32;
pub const MAX_CMDLINE: usize = 4096;
pub const MAX_WAIT_TEXT: usize = 256;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    /// Absolute path of the guest kernel (`-kernel`).
    pub kernel: String,
    /// Absolute path of the initramfs (`-initrd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    /// The kernel command line (`-append`); the agent adds `console=ttyS0` when it names no
    /// console, and `swiotlb=noforce` when `max_memory` is set.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cmdline: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<Disk>,
    /// vCPUs at boot.
    #[serde(default = "one")]
    pub vcpus: u32,
    /// vCPU slots for hotplug (default: `vcpus`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_vcpus: Option<u32>,
    /// Guest RAM at boot (default 256Mi).
    #[serde(default = "default_memory")]
    pub memory: Memory,
    /// Ceiling for memory hotplug (`-m maxmem`); unset: no hotplug.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory: Option<Memory>,
    /// Add a virtio balloon device.
    #[serde(default, skip_serializing_if = "is_false")]
    pub balloon: bool,
    #[serde(default)]
    pub accel: Accel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<VmNetwork>,
    /// Time between `system_powerdown` and `quit` on delete (default: the agent's stop grace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_grace: Option<Duration>,
    /// What must be seen before the object is `running` (besides QMP saying it runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_for: Option<WaitFor>,
}

fn one() -> u32 {
    1
}

fn default_memory() -> Memory {
    Memory(256 << 20)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    pub path: String,
    #[serde(default)]
    pub format: DiskFormat,
    #[serde(default, skip_serializing_if = "is_false")]
    pub readonly: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    #[default]
    Raw,
    Qcow2,
}

impl DiskFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

/// The accelerator: `auto` takes KVM only where it really runs a guest, TCG otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    #[default]
    Auto,
    Kvm,
    Tcg,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmNetwork {
    pub mode: NetMode,
    /// Host ports on 127.0.0.1 forwarded to guest ports (user mode).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forwards: Vec<Forward>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    /// QEMU's user-mode network (slirp): no host setup, no root needed.
    User,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forward {
    pub host_port: u16,
    pub guest_port: u16,
    #[serde(default)]
    pub protocol: Protocol,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitFor {
    /// Text the serial console must show.
    pub console: String,
}

/// Checks a path handed to qemu: absolute, no NUL, no `,` (QEMU's option separator), no
/// control characters, at most 4096 bytes.
pub fn check_vm_path(field: &str, p: &str) -> Result<(), ApiError> {
    if !p.starts_with('/') || p.len() > 4096 {
        return Err(ApiError::invalid(
            field,
            format!("{:?} must be an absolute path", truncate(p)),
        ));
    }
    if p.contains(',') || p.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            field,
            format!(
                "{:?}: a path for qemu may not contain ',' or control characters",
                truncate(p)
            ),
        ));
    }
    Ok(())
}

impl VmSpec {
    /// The vCPU slots (`max_vcpus`, or `vcpus`).
    pub fn max_vcpus(&self) -> u32 {
        self.max_vcpus.unwrap_or(self.vcpus)
    }

    pub(crate) fn check(&self) -> Result<(), ApiError> {
        check_vm_path("vm.kernel", &self.kernel)?;
        if let Some(i) = &self.initrd {
            check_vm_path("vm.initrd", i)?;
        }
        if self.cmdline.len() > MAX_CMDLINE || self.cmdline.chars().any(char::is_control) {
            return Err(ApiError::invalid(
                "vm.cmdline",
                format!("at most {MAX_CMDLINE} bytes, without control characters"),
            ));
        }
        if self.disks.len() > MAX_DISKS {
            return Err(ApiError::invalid(
                "vm.disks",
                format!("at most {MAX_DISKS} disks"),
            ));
        }
        for (i, d) in self.disks.iter().enumerate() {
            check_vm_path(&format!("vm.disks[{i}].path"), &d.path)?;
        }
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(ApiError::invalid(
                "vm.vcpus",
                format!("give 1 to {MAX_VCPUS} vCPUs"),
            ));
        }
        if let Some(m) = self.max_vcpus {
            if m < self.vcpus || m > MAX_VCPUS {
                return Err(ApiError::invalid(
                    "vm.max_vcpus",
                    format!("give vcpus ({}) to {MAX_VCPUS}", self.vcpus),
                ));
            }
        }
        if self.memory.0 < MIN_VM_MEMORY || !self.memory.0.is_multiple_of(1 << 20) {
            return Err(ApiError::invalid(
                "vm.memory",
                "give at least 32Mi, in whole MiB",
            ));
        }
        if let Some(m) = self.max_memory {
            if m.0 < self.memory.0 || !m.0.is_multiple_of(1 << 20) {
                return Err(ApiError::invalid(
                    "vm.max_memory",
                    "give at least `memory`, in whole MiB",
                ));
            }
        }
        if let Some(n) = &self.network {
            if n.forwards.len() > MAX_FORWARDS {
                return Err(ApiError::invalid(
                    "vm.network.forwards",
                    format!("at most {MAX_FORWARDS} forwards"),
                ));
            }
            for (i, f) in n.forwards.iter().enumerate() {
                if f.host_port == 0 || f.guest_port == 0 {
                    return Err(ApiError::invalid(
                        format!("vm.network.forwards[{i}]"),
                        "ports are 1 to 65535",
                    ));
                }
            }
        }
        if let Some(w) = &self.wait_for {
            if w.console.is_empty() || w.console.len() > MAX_WAIT_TEXT || w.console.contains('\n') {
                return Err(ApiError::invalid(
                    "vm.wait_for.console",
                    format!("give 1 to {MAX_WAIT_TEXT} bytes of one line"),
                ));
            }
        }
        if let Some(g) = self.shutdown_grace {
            if g.0 > std::time::Duration::from_secs(3600) {
                return Err(ApiError::invalid("vm.shutdown_grace", "at most 1h"));
            }
        }
        Ok(())
    }
}

impl KindSection for VmSpec {
    const KIND: Kind = Kind::Vm;

    fn validate(&self) -> Result<(), ApiError> {
        self.check()
    }
}

#[cfg(test)]
mod tests {
    use crate::spec::ObjectSpec;

    fn field(body: &str) -> Option<String> {
        ObjectSpec::from_json(body.as_bytes())
            .expect_err("refused")
            .field
    }

    #[test]
    fn minimal_vm_parses() {
        let s =
            ObjectSpec::from_json(br#"{"name":"g","kind":"vm","vm":{"kernel":"/k"}}"#).expect("ok");
        let v = s.section::<super::VmSpec>().expect("vm");
        assert_eq!(v.vcpus, 1);
        assert_eq!(v.memory.0, 256 << 20);
    }

    #[test]
    fn bad_fields_are_named() {
        let k = |v: &str| format!(r#"{{"name":"g","kind":"vm","vm":{v}}}"#);
        assert_eq!(field(&k(r#"{"kernel":"k"}"#)).as_deref(), Some("vm.kernel"));
        assert_eq!(
            field(&k(r#"{"kernel":"/a,b"}"#)).as_deref(),
            Some("vm.kernel")
        );
        assert_eq!(
            field(&k(r#"{"kernel":"/k","initrd":"/i,file=/etc/shadow"}"#)).as_deref(),
            Some("vm.initrd")
        );
        assert_eq!(
            field(&k(
                r#"{"kernel":"/k","disks":[{"path":"/d,readonly=off"}]}"#
            ))
            .as_deref(),
            Some("vm.disks[0].path")
        );
        assert_eq!(
            field(&k(r#"{"kernel":"/k","vcpus":0}"#)).as_deref(),
            Some("vm.vcpus")
        );
        assert_eq!(
            field(&k(r#"{"kernel":"/k","vcpus":2,"max_vcpus":1}"#)).as_deref(),
            Some("vm.max_vcpus")
        );
        assert_eq!(
            field(&k(r#"{"kernel":"/k","memory":"16Mi"}"#)).as_deref(),
            Some("vm.memory")
        );
        assert_eq!(
            field(&k(r#"{"kernel":"/k","accel":"xen"}"#)).as_deref(),
            Some("vm.accel")
        );
        assert_eq!(
            field(&k(r#"{"kernel":"/k","bogus":1}"#)).as_deref(),
            Some("vm.bogus")
        );
    }
}
