//! The node's policy: what an authenticated caller may ask the agent to do.
//!
//! Authentication (the socket's file mode, the TCP bearer token, client certificates) decides
//! *who* may talk to the agent. The policy decides *what* they may ask of it, because the agent
//! runs as root: a `process` object is a command run as root, a privileged container is root on
//! the host, and adopting a cgroup is control over someone else's workload.
//!
//! Each kind's [`crate::kinds::KindDriver::admit`] runs the rules that concern it on every
//! create, after the spec is validated and before anything else (the core's name check, a driver's availability): a refused request has no
//! side effect and gets 403 naming the field at fault and the rule (`policy.<setting>`).
//!
//! Defaults: processes and cgroups are unrestricted, so that a local admin's first run works
//! with any command; containers may not be privileged, share the host's namespaces, or mount
//! host paths. A restrictive deployment lists what it allows.

use nodeagent_drivers::procfs::ProcFs;
use nodeagent_types::{ApiError, ContainerNetwork, ContainerSpec};
#[cfg(test)]
use nodeagent_types::{Kind, ObjectSpec};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Component, Path, PathBuf};

pub const RULE_PROCESS_COMMANDS: &str = "policy.process_commands";
pub const RULE_CGROUP_PARENTS: &str = "policy.cgroup_parents";
pub const RULE_ALLOW_PRIVILEGED: &str = "policy.allow_privileged";
pub const RULE_ALLOW_HOST_NAMESPACES: &str = "policy.allow_host_namespaces";
pub const RULE_MOUNT_SOURCES: &str = "policy.mount_sources";
pub const RULE_VM_PATHS: &str = "policy.vm_paths";
pub const RULE_K8S_NAMESPACES: &str = "policy.k8s_namespaces";
pub const RULE_K8S_KINDS: &str = "policy.k8s_kinds";
pub const RULE_HELM_CHARTS: &str = "policy.helm_charts";

/// Symlinks followed while resolving one path before giving up (the kernel's own limit).
const MAX_SYMLINKS: usize = 40;

/// Environment variables that make the dynamic loader or libc load code or data chosen by the
/// caller. glibc ignores them for set-uid programs ("secure mode"); a process the agent starts
/// runs as root without secure mode, so with a restricted command list they would turn any
/// allowed program into an arbitrary one. Any `LD_*` name is refused as well.
const UNSAFE_ENV: &[&str] = &[
    "GCONV_PATH",
    "GETCONF_DIR",
    "HOSTALIASES",
    "LOCALDOMAIN",
    "LOCPATH",
    "MALLOC_TRACE",
    "NIS_PATH",
    "NLSPATH",
    "RESOLV_HOST_CONF",
    "RES_OPTIONS",
    "TMPDIR",
    "TZDIR",
];

/// The `[policy]` table of the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Executables a `process` may run: an entry ending in `/` allows everything below that
    /// directory, any other entry one executable. Absent: any command (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_commands: Option<Vec<String>>,
    /// cgroups that `cgroup` objects may adopt: a `path` at or below one of these, or `pids`
    /// whose cgroups all are. Absent: any cgroup (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_parents: Option<Vec<String>>,
    /// Whether containers may run privileged. Default false.
    #[serde(default)]
    pub allow_privileged: bool,
    /// Whether containers may share the host's network (`network: host`) or pid namespace
    /// (`host_pid`). Default false.
    #[serde(default)]
    pub allow_host_namespaces: bool,
    /// Host paths containers may mount, with the same syntax as `process_commands`. Default
    /// none.
    #[serde(default)]
    pub mount_sources: Vec<String>,
    /// Files `vm` objects may boot and attach (kernel, initrd, disks), with the same syntax as
    /// `process_commands`. Absent: any path (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_paths: Option<Vec<String>>,
    /// Namespaces `k8s` objects may apply to (their documents' and their default namespace).
    /// Absent: any namespace (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s_namespaces: Option<Vec<String>>,
    /// Kinds of resource `k8s` objects may apply: `ConfigMap` (core group), `apps/Deployment`,
    /// or `apps/*` (a whole group). Absent: any kind (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s_kinds: Option<Vec<String>>,
    /// Charts a `helm` object may install, and the files it may read: absolute paths (a folder
    /// with a trailing `/`, or one file) for local charts and value files, and reference
    /// prefixes (`oci://registry.example/charts/`, `https://charts.example/`) for remote
    /// charts. Absent: any chart (the default). A value file is read by the agent and its
    /// contents reach the cluster, so it is held to the same list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm_charts: Option<Vec<String>>,
}

/// A list of names as given, each checked by `ok`.
fn check_list(
    rule: &'static str,
    list: &Option<Vec<String>>,
    ok: impl Fn(&str) -> bool,
) -> Result<Option<Vec<String>>, PolicyError> {
    let Some(list) = list else { return Ok(None) };
    for (index, e) in list.iter().enumerate() {
        if !ok(e) {
            return Err(PolicyError {
                rule,
                index,
                entry: e.clone(),
                reason: "not a name this rule can match".into(),
            });
        }
    }
    Ok(Some(list.clone()))
}

/// A policy entry that cannot be used; the binary reports it at start-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{rule}[{index}] {entry:?}: {reason}")]
pub struct PolicyError {
    pub rule: &'static str,
    pub index: usize,
    pub entry: String,
    pub reason: String,
}

/// One allowed path: a directory prefix or one exact path. Both the path as written and its
/// resolved form are kept, so `/bin/` still matches on a merged-/usr system where `/bin` is a
/// link to `/usr/bin`.
#[derive(Debug, Clone)]
struct PathRule {
    given: String,
    prefix: bool,
    paths: Vec<PathBuf>,
}

impl PathRule {
    fn new(rule: &'static str, index: usize, entry: &str) -> Result<PathRule, PolicyError> {
        let err = |reason: &str| PolicyError {
            rule,
            index,
            entry: entry.to_string(),
            reason: reason.to_string(),
        };
        if !clean_absolute(entry.trim_end_matches('/')) && entry != "/" {
            return Err(err(
                "give an absolute path without '.' or '..' components, e.g. \"/usr/bin/\" or \"/usr/bin/sleep\"",
            ));
        }
        let prefix = entry.ends_with('/');
        let lexical = PathBuf::from(if entry == "/" {
            "/"
        } else {
            entry.trim_end_matches('/')
        });
        let mut paths = vec![lexical.clone()];
        match std::fs::canonicalize(&lexical) {
            Ok(c) if c != lexical => paths.push(c),
            Ok(_) => {}
            Err(e) => tracing::warn!(
                rule,
                entry,
                error = %e,
                "policy entry does not exist (yet); it matches only the path as written"
            ),
        }
        Ok(PathRule {
            given: entry.to_string(),
            prefix,
            paths,
        })
    }

    fn matches(&self, resolved: &Path) -> bool {
        self.paths.iter().any(|p| {
            if self.prefix {
                resolved.starts_with(p)
            } else {
                resolved == p
            }
        })
    }
}

/// The policy in force, with its paths resolved once at start-up.
#[derive(Debug)]
pub struct Policy {
    commands: Option<Vec<PathRule>>,
    cgroup_parents: Option<Vec<String>>,
    allow_privileged: bool,
    allow_host_namespaces: bool,
    mount_sources: Vec<PathRule>,
    vm_paths: Option<Vec<PathRule>>,
    k8s_namespaces: Option<Vec<String>>,
    k8s_kinds: Option<Vec<String>>,
    /// `helm_charts`: the path rules, and the remote reference prefixes.
    helm_charts: Option<(Vec<PathRule>, Vec<String>)>,
    procfs: ProcFs,
}

impl Policy {
    /// Checks and resolves `cfg`. `proc_root` is where adopted pids' cgroups are read.
    pub fn new(cfg: &PolicyConfig, proc_root: &Path) -> Result<Policy, PolicyError> {
        let commands = cfg
            .process_commands
            .as_ref()
            .map(|list| {
                list.iter()
                    .enumerate()
                    .map(|(i, e)| PathRule::new(RULE_PROCESS_COMMANDS, i, e))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let vm_paths = cfg
            .vm_paths
            .as_ref()
            .map(|list| {
                list.iter()
                    .enumerate()
                    .map(|(i, e)| PathRule::new(RULE_VM_PATHS, i, e))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let helm_charts = cfg
            .helm_charts
            .as_ref()
            .map(|list| {
                let mut paths = Vec::new();
                let mut remote = Vec::new();
                for (i, e) in list.iter().enumerate() {
                    if e.contains("://") {
                        let scheme_ok = ["oci://", "http://", "https://"]
                            .iter()
                            .any(|p| e.starts_with(p) && e.len() > p.len());
                        if !scheme_ok {
                            return Err(PolicyError {
                                rule: RULE_HELM_CHARTS,
                                index: i,
                                entry: e.clone(),
                                reason: "a remote chart prefix starts with oci://, http:// or \
                                         https:// and names a host"
                                    .into(),
                            });
                        }
                        remote.push(e.clone());
                    } else {
                        paths.push(PathRule::new(RULE_HELM_CHARTS, i, e)?);
                    }
                }
                Ok((paths, remote))
            })
            .transpose()?;
        let mount_sources = cfg
            .mount_sources
            .iter()
            .enumerate()
            .map(|(i, e)| PathRule::new(RULE_MOUNT_SOURCES, i, e))
            .collect::<Result<Vec<_>, _>>()?;
        let cgroup_parents = cfg
            .cgroup_parents
            .as_ref()
            .map(|list| {
                list.iter()
                    .enumerate()
                    .map(|(index, e)| {
                        let n = normalize_cgroup(e);
                        if !e.starts_with('/') || !clean_absolute(&n) && n != "/" {
                            return Err(PolicyError {
                                rule: RULE_CGROUP_PARENTS,
                                index,
                                entry: e.clone(),
                                reason: "give an absolute cgroup path without '.' or '..', e.g. \"/system.slice\"".into(),
                            });
                        }
                        Ok(n)
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        Ok(Policy {
            commands,
            cgroup_parents,
            allow_privileged: cfg.allow_privileged,
            allow_host_namespaces: cfg.allow_host_namespaces,
            mount_sources,
            vm_paths,
            helm_charts,
            k8s_namespaces: check_list(RULE_K8S_NAMESPACES, &cfg.k8s_namespaces, |e| {
                nodeagent_types::is_dns_label(e) || e == "*"
            })?,
            k8s_kinds: check_list(RULE_K8S_KINDS, &cfg.k8s_kinds, |e| {
                let (g, k) = e.rsplit_once('/').unwrap_or(("", e));
                (g.is_empty() || nodeagent_types::is_dns_subdomain(g))
                    && !k.is_empty()
                    && (k == "*" || k.bytes().all(|c| c.is_ascii_alphanumeric()))
            })?,
            procfs: ProcFs::new(proc_root),
        })
    }

    /// A policy that allows everything, for tests of other parts of the core.
    pub fn permissive() -> Policy {
        Policy {
            commands: None,
            cgroup_parents: None,
            allow_privileged: true,
            allow_host_namespaces: true,
            mount_sources: vec![PathRule {
                given: "/".into(),
                prefix: true,
                paths: vec![PathBuf::from("/")],
            }],
            vm_paths: None,
            helm_charts: None,
            k8s_namespaces: None,
            k8s_kinds: None,
            procfs: ProcFs::new("/proc"),
        }
    }

    /// The namespaces and kinds of a `k8s` manifest. A document without a namespace is
    /// checked by the spec's default namespace (the server decides whether its kind is
    /// namespaced; a restricted list must allow the default either way).
    pub fn check_k8s(&self, spec: &nodeagent_types::K8sSpec) -> Result<(), ApiError> {
        if self.k8s_namespaces.is_none() && self.k8s_kinds.is_none() {
            return Ok(());
        }
        let docs = spec.manifest.documents()?;
        if let Some(allowed) = &self.k8s_namespaces {
            let ok = |ns: &str| allowed.iter().any(|a| a == "*" || a == ns);
            let default_ns = spec.default_namespace();
            for d in &docs {
                match &d.namespace {
                    Some(ns) if !ok(ns) => {
                        return Err(ApiError::forbidden(
                            d.field("metadata.namespace"),
                            RULE_K8S_NAMESPACES,
                            format!("namespace {ns:?} is not in the allowed list"),
                        ))
                    }
                    None if !ok(default_ns) => {
                        return Err(ApiError::forbidden(
                            "k8s.namespace",
                            RULE_K8S_NAMESPACES,
                            format!(
                                "document {} names no namespace, and the default {default_ns:?} is not in the allowed list",
                                d.index
                            ),
                        ))
                    }
                    _ => {}
                }
            }
        }
        if let Some(allowed) = &self.k8s_kinds {
            for d in &docs {
                let ok = allowed.iter().any(|a| {
                    let (g, k) = a.rsplit_once('/').unwrap_or(("", a));
                    g == d.group && (k == "*" || k == d.kind)
                });
                if !ok {
                    let name = if d.group.is_empty() {
                        d.kind.clone()
                    } else {
                        format!("{}/{}", d.group, d.kind)
                    };
                    return Err(ApiError::forbidden(
                        d.field("kind"),
                        RULE_K8S_KINDS,
                        format!("kind {name} is not in the allowed list"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// A cluster-scoped document of a `k8s` manifest, known only once the cluster says so (at
    /// the apply's planning). It lies outside every namespace, so with `k8s_namespaces` set it
    /// is refused, unless `k8s_kinds` names its kind exactly (`rbac.authorization.k8s.io/
    /// ClusterRole`; a `group/*` entry is not enough): a namespace rule that a ClusterRoleBinding
    /// could step around would not be a rule.
    pub fn check_k8s_cluster_scoped(&self, d: &nodeagent_types::Document) -> Result<(), ApiError> {
        let Some(namespaces) = &self.k8s_namespaces else {
            return Ok(());
        };
        if namespaces.iter().any(|n| n == "*") {
            return Ok(());
        }
        let name = if d.group.is_empty() {
            d.kind.clone()
        } else {
            format!("{}/{}", d.group, d.kind)
        };
        let named = self
            .k8s_kinds
            .as_ref()
            .is_some_and(|kinds| kinds.contains(&name));
        if named {
            return Ok(());
        }
        Err(ApiError::forbidden(
            d.field("kind"),
            RULE_K8S_NAMESPACES,
            format!(
                "{name} is cluster-scoped, outside the allowed namespaces; name it in \
                 policy.k8s_kinds to allow it"
            ),
        ))
    }

    /// Whether `spec` may be created, by the rules of its kind. The kinds call the rules that
    /// concern them from [`crate::kinds::KindDriver::admit`]; this dispatch is for the tests.
    #[cfg(test)]
    fn check_create(&self, spec: &ObjectSpec) -> Result<(), ApiError> {
        match spec.kind {
            Kind::Process => match spec.section::<nodeagent_types::ProcessSpec>() {
                Some(p) => self.check_process(&p.command, &p.env),
                None => Ok(()),
            },
            Kind::Cgroup => match spec.section::<nodeagent_types::CgroupSpec>() {
                Some(c) => {
                    if let Some(path) = &c.path {
                        self.check_cgroup_path(path)?;
                    }
                    if let Some(pids) = &c.pids {
                        self.check_pids(pids)?;
                    }
                    Ok(())
                }
                None => Ok(()),
            },
            Kind::Container => match spec.section::<nodeagent_types::ContainerSpec>() {
                Some(c) => self.check_container(c),
                None => Ok(()),
            },
            Kind::Vm => match spec.section::<nodeagent_types::VmSpec>() {
                Some(v) => self.check_vm(v),
                None => Ok(()),
            },
            Kind::K8s => match spec.section::<nodeagent_types::K8sSpec>() {
                Some(k) => self.check_k8s(k),
                None => Ok(()),
            },
            // Policy for charts and their namespaces is not written yet (issue 13).
            Kind::Helm => Ok(()),
            Kind::Host => Ok(()),
        }
    }

    pub fn check_process(
        &self,
        command: &[String],
        env: &BTreeMap<String, String>,
    ) -> Result<(), ApiError> {
        let Some(rules) = &self.commands else {
            return Ok(());
        };
        const FIELD: &str = "process.command[0]";
        let program = command.first().map(String::as_str).unwrap_or("");
        if !clean_absolute(program) {
            return Err(ApiError::forbidden(
                FIELD,
                RULE_PROCESS_COMMANDS,
                format!(
                    "{:?} must be an absolute path without '.' or '..' (no PATH lookup) while the command list is restricted",
                    truncate(program)
                ),
            ));
        }
        let cannot = |why: String| {
            ApiError::forbidden(
                FIELD,
                RULE_PROCESS_COMMANDS,
                format!("{:?} cannot be allowed: {why}", truncate(program)),
            )
        };
        // What runs: the file at the end of every symlink.
        let resolved = resolve_trusted(Path::new(program), true).map_err(cannot)?;
        // What it is called: its directory resolved, its own name kept. Multi-call programs
        // (busybox, systemctl as `reboot`) act on that name, so it must be allowed too, or an
        // allowed `/usr/bin/systemctl` would also allow `/sbin/reboot`.
        let program = Path::new(program);
        let named = match (program.parent(), program.file_name()) {
            (Some(dir), Some(base)) => resolve_trusted(dir, false).map_err(cannot)?.join(base),
            _ => resolved.clone(),
        };
        for (what, path) in [("named", &named), ("resolved to", &resolved)] {
            if !rules.iter().any(|r| r.matches(path)) {
                return Err(ApiError::forbidden(
                    FIELD,
                    RULE_PROCESS_COMMANDS,
                    format!(
                        "{:?} ({what} {}) is not an allowed executable; allowed: {}",
                        truncate(&program.to_string_lossy()),
                        path.display(),
                        list(rules)
                    ),
                ));
            }
        }
        for name in env.keys() {
            if name.starts_with("LD_") || UNSAFE_ENV.contains(&name.as_str()) {
                return Err(ApiError::forbidden(
                    format!("process.env.{}", truncate(name)),
                    RULE_PROCESS_COMMANDS,
                    format!(
                        "{} would let the loader or libc run code of the caller's choosing in an allowed program; it is not allowed while the command list is restricted",
                        truncate(name)
                    ),
                ));
            }
        }
        Ok(())
    }

    pub fn check_cgroup_path(&self, path: &str) -> Result<(), ApiError> {
        let Some(parents) = &self.cgroup_parents else {
            return Ok(());
        };
        let n = normalize_cgroup(path);
        if !within_cgroup(&n, parents) {
            return Err(ApiError::forbidden(
                "cgroup.path",
                RULE_CGROUP_PARENTS,
                format!(
                    "cgroup {:?} is not at or below an allowed parent; allowed: {}",
                    truncate(&n),
                    parents.join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// Adopting a pid moves it, and so gives control over it: every cgroup it is in now must
    /// be within an allowed parent.
    pub fn check_pids(&self, pids: &[u32]) -> Result<(), ApiError> {
        let Some(parents) = &self.cgroup_parents else {
            return Ok(());
        };
        for (i, pid) in pids.iter().enumerate() {
            let field = format!("cgroup.pids[{i}]");
            let lines = self.procfs.cgroups_of(*pid).map_err(|e| {
                ApiError::forbidden(
                    field.clone(),
                    RULE_CGROUP_PARENTS,
                    format!("the cgroups of pid {pid} cannot be read: {e}"),
                )
            })?;
            // v1: every hierarchy with controllers (named ones such as name=systemd are not
            // the agent's to move); v2: the single unified line.
            let controlled: Vec<&(String, String)> = lines
                .iter()
                .filter(|(c, _)| !c.is_empty() && !c.starts_with("name="))
                .collect();
            let relevant: Vec<&(String, String)> = if controlled.is_empty() {
                lines.iter().filter(|(c, _)| c.is_empty()).collect()
            } else {
                controlled
            };
            for (controllers, path) in relevant {
                let n = normalize_cgroup(path);
                if !within_cgroup(&n, parents) {
                    let which = if controllers.is_empty() {
                        String::new()
                    } else {
                        format!(" ({controllers})")
                    };
                    return Err(ApiError::forbidden(
                        field,
                        RULE_CGROUP_PARENTS,
                        format!(
                            "pid {pid} is in cgroup {}{which}, which is not at or below an allowed parent; allowed: {}",
                            truncate(&n),
                            parents.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn check_container(&self, c: &ContainerSpec) -> Result<(), ApiError> {
        if c.privileged && !self.allow_privileged {
            return Err(ApiError::forbidden(
                "container.privileged",
                RULE_ALLOW_PRIVILEGED,
                "a privileged container is root on the host; set policy.allow_privileged = true to allow it",
            ));
        }
        if c.network == ContainerNetwork::Host && !self.allow_host_namespaces {
            return Err(ApiError::forbidden(
                "container.network",
                RULE_ALLOW_HOST_NAMESPACES,
                "network \"host\" shares the host's network namespace; set policy.allow_host_namespaces = true to allow it",
            ));
        }
        if c.host_pid && !self.allow_host_namespaces {
            return Err(ApiError::forbidden(
                "container.host_pid",
                RULE_ALLOW_HOST_NAMESPACES,
                "host_pid shares the host's pid namespace; set policy.allow_host_namespaces = true to allow it",
            ));
        }
        for (i, m) in c.mounts.iter().enumerate() {
            let field = format!("container.mounts[{i}].source");
            if self.mount_sources.is_empty() {
                return Err(ApiError::forbidden(
                    field,
                    RULE_MOUNT_SOURCES,
                    "host-path mounts are not allowed; list the host paths containers may mount in policy.mount_sources",
                ));
            }
            if !clean_absolute(&m.source) && m.source != "/" {
                return Err(ApiError::forbidden(
                    field,
                    RULE_MOUNT_SOURCES,
                    format!(
                        "{:?} must be an absolute path without '.' or '..'",
                        truncate(&m.source)
                    ),
                ));
            }
            let resolved = resolve_trusted(Path::new(&m.source), false).map_err(|why| {
                ApiError::forbidden(
                    field.clone(),
                    RULE_MOUNT_SOURCES,
                    format!("{:?} cannot be allowed: {why}", truncate(&m.source)),
                )
            })?;
            if !self.mount_sources.iter().any(|r| r.matches(&resolved)) {
                return Err(ApiError::forbidden(
                    field,
                    RULE_MOUNT_SOURCES,
                    format!(
                        "{:?} (resolved to {}) is not an allowed mount source; allowed: {}",
                        truncate(&m.source),
                        resolved.display(),
                        list(&self.mount_sources)
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl Policy {
    /// A `vm`'s kernel, initrd and disks must each be allowed by `policy.vm_paths`, both as
    /// written and with every symlink resolved (a link in an allowed folder may not point
    /// outside it).
    pub fn check_vm(&self, vm: &nodeagent_types::VmSpec) -> Result<(), ApiError> {
        let Some(rules) = &self.vm_paths else {
            return Ok(());
        };
        let mut files = vec![("vm.kernel".to_string(), vm.kernel.as_str())];
        if let Some(i) = &vm.initrd {
            files.push(("vm.initrd".to_string(), i.as_str()));
        }
        for (i, d) in vm.disks.iter().enumerate() {
            files.push((format!("vm.disks[{i}].path"), d.path.as_str()));
        }
        check_files(rules, RULE_VM_PATHS, "vm file", files)
    }

    /// A `helm` object's chart and value files must be allowed by `policy.helm_charts` (a
    /// local path as `vm_paths` checks one; a remote chart by its reference's prefix), and its
    /// release's namespace by `policy.k8s_namespaces`. What the chart's templates render is
    /// not seen here.
    pub fn check_helm(&self, h: &nodeagent_types::HelmSpec) -> Result<(), ApiError> {
        if let Some(allowed) = &self.k8s_namespaces {
            let ns = h.namespace();
            if !allowed.iter().any(|a| a == "*" || a == ns) {
                return Err(ApiError::forbidden(
                    "helm.namespace",
                    RULE_K8S_NAMESPACES,
                    format!("namespace {ns:?} is not in the allowed list"),
                ));
            }
        }
        let Some((paths, remote)) = &self.helm_charts else {
            return Ok(());
        };
        let mut files = Vec::new();
        if h.chart_is_local() {
            files.push(("helm.chart".to_string(), h.chart.as_str()));
        } else if !remote.iter().any(|r| h.chart.starts_with(r.as_str())) {
            return Err(ApiError::forbidden(
                "helm.chart",
                RULE_HELM_CHARTS,
                format!(
                    "{:?} is not under an allowed chart reference; allowed: {}",
                    truncate(&h.chart),
                    if remote.is_empty() {
                        "no remote charts".to_string()
                    } else {
                        remote.join(", ")
                    }
                ),
            ));
        }
        for (i, f) in h.value_files.iter().enumerate() {
            files.push((format!("helm.value_files[{i}]"), f.as_str()));
        }
        check_files(paths, RULE_HELM_CHARTS, "chart or value file", files)
    }
}

/// Each of `files` (field, path) must be allowed by `rules`, both as written and with every
/// symlink resolved (a link in an allowed folder may not point outside it).
fn check_files(
    rules: &[PathRule],
    rule: &'static str,
    what: &str,
    files: Vec<(String, &str)>,
) -> Result<(), ApiError> {
    for (field, path) in files {
        if !clean_absolute(path) {
            return Err(ApiError::forbidden(
                field,
                rule,
                format!(
                    "{:?} must be an absolute path without '.' or '..'",
                    truncate(path)
                ),
            ));
        }
        let lexical = PathBuf::from(path);
        let resolved = std::fs::canonicalize(&lexical).unwrap_or_else(|_| lexical.clone());
        for p in [&lexical, &resolved] {
            if !rules.iter().any(|r| r.matches(p)) {
                return Err(ApiError::forbidden(
                    field,
                    rule,
                    format!(
                        "{} is not an allowed {what}; allowed: {}",
                        p.display(),
                        list(rules)
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn list(rules: &[PathRule]) -> String {
    if rules.is_empty() {
        return "nothing".to_string();
    }
    rules
        .iter()
        .map(|r| r.given.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn truncate(s: &str) -> String {
    s.chars().take(128).collect()
}

/// `/a/b` with no trailing slash (and `/` for the root).
fn normalize_cgroup(path: &str) -> String {
    format!("/{}", path.trim_matches('/'))
}

/// Whether the normalized cgroup `path` is one of `parents` or below one, comparing whole
/// components (`/ab` is not below `/a`).
fn within_cgroup(path: &str, parents: &[String]) -> bool {
    parents.iter().any(|p| {
        p == "/"
            || path == p
            || path
                .strip_prefix(p.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// An absolute path whose components are all plain names: no `.`, `..`, empty components
/// (`//`), trailing slash or NUL.
fn clean_absolute(p: &str) -> bool {
    let Some(rest) = p.strip_prefix('/') else {
        return false;
    };
    !rest.is_empty()
        && !p.contains('\0')
        && rest
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Resolves `path` to the file it names, following symlinks, and checks that nobody but root
/// (or the agent's own user) can change what it resolves to: every directory traversed is
/// owned by root and not writable by group or others. With `final_trusted`, the same holds
/// for the file itself, so its contents cannot be swapped either.
///
/// This closes the gap between the check and the exec (or the mount): the path is resolved
/// again by the kernel later, and only someone who could already run code as root could make
/// it resolve differently. `std::fs::canonicalize` alone would not: a symlink in a directory
/// the caller can write could be pointed elsewhere after the check.
fn resolve_trusted(path: &Path, final_trusted: bool) -> Result<PathBuf, String> {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let owned = |p: &Path, md: &std::fs::Metadata| -> Result<(), String> {
        if md.uid() != 0 && md.uid() != me {
            return Err(format!(
                "{} is owned by uid {}, not root",
                p.display(),
                md.uid()
            ));
        }
        Ok(())
    };
    // Ok(true): writable by others but sticky (like /tmp), so only an entry's owner can
    // replace it, and every entry looked up in it must be owned by root.
    let trusted = |p: &Path, md: &std::fs::Metadata| -> Result<bool, String> {
        owned(p, md)?;
        let writable = md.mode() & 0o022 != 0;
        if writable && !(md.is_dir() && md.mode() & 0o1000 != 0) {
            return Err(format!(
                "{} is writable by group or others (mode {:04o})",
                p.display(),
                md.mode() & 0o7777
            ));
        }
        Ok(writable)
    };
    let root = PathBuf::from("/");
    let md = std::fs::metadata(&root).map_err(|e| format!("/: {e}"))?;
    let mut sticky = trusted(&root, &md)?;
    let mut todo: VecDeque<OsString> = names(path);
    let mut cur = root;
    let mut links = 0;
    let mut last: Option<std::fs::Metadata> = None;
    while let Some(name) = todo.pop_front() {
        if name == "." {
            continue;
        }
        if name == ".." {
            // `cur` has no symlinks left in it, so its parent is the real parent, and was
            // checked on the way down.
            cur.pop();
            let md = std::fs::metadata(&cur).map_err(|e| format!("{}: {e}", cur.display()))?;
            sticky = trusted(&cur, &md)?;
            continue;
        }
        let next = cur.join(&name);
        let md =
            std::fs::symlink_metadata(&next).map_err(|e| format!("{}: {e}", next.display()))?;
        if sticky {
            owned(&next, &md)?;
        }
        if md.file_type().is_symlink() {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(format!("too many symbolic links at {}", next.display()));
            }
            let target =
                std::fs::read_link(&next).map_err(|e| format!("{}: {e}", next.display()))?;
            if target.is_absolute() {
                cur = PathBuf::from("/");
                let md = std::fs::metadata(&cur).map_err(|e| format!("/: {e}"))?;
                sticky = trusted(&cur, &md)?;
            }
            let mut expanded = names(&target);
            expanded.extend(todo);
            todo = expanded;
            continue;
        }
        let is_last = todo.is_empty();
        if !is_last && !md.is_dir() {
            return Err(format!("{} is not a directory", next.display()));
        }
        if !is_last || final_trusted {
            sticky = trusted(&next, &md)?;
        }
        cur = next;
        last = Some(md);
    }
    if final_trusted && !last.as_ref().is_some_and(|m| m.is_file()) {
        return Err(format!("{} is not a regular file", cur.display()));
    }
    Ok(cur)
}

/// The plain components of `p` (`.` and `..` kept as names, for the resolver to interpret).
fn names(p: &Path) -> VecDeque<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::CurDir => Some(OsString::from(".")),
            Component::RootDir | Component::Prefix(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodeagent_types::ErrorCode;
    use std::os::unix::fs::PermissionsExt as _;

    fn spec(json: &str) -> ObjectSpec {
        ObjectSpec::from_json(json.as_bytes()).expect("valid spec")
    }

    fn process(cmd: &str) -> ObjectSpec {
        spec(&format!(
            r#"{{"name":"p","kind":"process","process":{{"command":["{cmd}","1"]}}}}"#
        ))
    }

    fn policy(cfg: PolicyConfig) -> Policy {
        Policy::new(&cfg, Path::new("/proc")).expect("valid policy")
    }

    fn refused(p: &Policy, s: &ObjectSpec) -> ApiError {
        let e = p.check_create(s).expect_err("should be refused");
        assert_eq!(e.code, ErrorCode::Forbidden);
        let rule = e.rule.clone().expect("rule");
        assert!(e.message.contains(&rule), "{e:?}");
        e
    }

    fn sleep_path() -> &'static str {
        ["/usr/bin/sleep", "/bin/sleep"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("sleep")
    }

    #[test]
    fn default_allows_any_process_and_cgroup() {
        let p = policy(PolicyConfig::default());
        assert!(p.check_create(&process("/tmp/anything")).is_ok());
        assert!(p.check_create(&process("relative")).is_ok());
        assert!(p
            .check_create(&spec(
                r#"{"name":"c","kind":"cgroup","cgroup":{"path":"/system.slice"}}"#
            ))
            .is_ok());
    }

    #[test]
    fn helm_charts_limit_charts_value_files_and_remote_references() {
        let dir = tempfile::tempdir().expect("test setup");
        let charts = dir.path().join("charts");
        std::fs::create_dir(&charts).expect("test setup");
        let chart = charts.join("web");
        std::fs::create_dir(&chart).expect("test setup");
        let values = charts.join("prod.yaml");
        std::fs::write(&values, b"a: 1").expect("test setup");
        let p = policy(PolicyConfig {
            helm_charts: Some(vec![
                format!("{}/", charts.display()),
                "oci://registry.example/charts/".into(),
            ]),
            k8s_namespaces: Some(vec!["team-a".into()]),
            ..Default::default()
        });
        let helm = |chart: &str, files: &[&Path], ns: &str| {
            let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            serde_json::from_value::<nodeagent_types::HelmSpec>(serde_json::json!({
                "chart": chart, "value_files": files, "namespace": ns,
            }))
            .expect("a helm section")
        };
        let local = chart.display().to_string();
        assert!(p.check_helm(&helm(&local, &[&values], "team-a")).is_ok());
        assert!(p
            .check_helm(&helm("oci://registry.example/charts/web", &[], "team-a"))
            .is_ok());
        let e = p
            .check_helm(&helm("oci://elsewhere.example/web", &[], "team-a"))
            .expect_err("remote elsewhere");
        assert_eq!(
            (e.field.as_deref(), e.rule.as_deref()),
            (Some("helm.chart"), Some(RULE_HELM_CHARTS))
        );
        let e = p
            .check_helm(&helm(&local, &[Path::new("/etc/shadow")], "team-a"))
            .expect_err("a value file outside");
        assert_eq!(e.field.as_deref(), Some("helm.value_files[0]"));
        let e = p
            .check_helm(&helm(&local, &[], "kube-system"))
            .expect_err("namespace");
        assert_eq!(
            (e.field.as_deref(), e.rule.as_deref()),
            (Some("helm.namespace"), Some(RULE_K8S_NAMESPACES))
        );
        let e = p
            .check_helm(&helm("/srv/other", &[], "team-a"))
            .expect_err("a local chart outside");
        assert_eq!(e.field.as_deref(), Some("helm.chart"));
        assert!(policy(PolicyConfig::default())
            .check_helm(&helm("/srv/other", &[Path::new("/etc/shadow")], "x"))
            .is_ok());
        let bad = Policy::new(
            &PolicyConfig {
                helm_charts: Some(vec!["ftp://x/".into()]),
                ..Default::default()
            },
            Path::new("/proc"),
        );
        assert!(bad.is_err());
    }

    #[test]
    fn vm_paths_limit_kernel_initrd_and_disks() {
        let dir = tempfile::tempdir().expect("test setup");
        let ok = dir.path().join("ok");
        std::fs::create_dir(&ok).expect("test setup");
        let k = ok.join("vmlinuz");
        std::fs::write(&k, b"k").expect("test setup");
        // A link inside the allowed folder to a file outside it is refused.
        let outside = dir.path().join("secret");
        std::fs::write(&outside, b"s").expect("test setup");
        let link = ok.join("link");
        std::os::unix::fs::symlink(&outside, &link).expect("test setup");
        let p = policy(PolicyConfig {
            vm_paths: Some(vec![format!("{}/", ok.display())]),
            ..Default::default()
        });
        let vm = |kernel: &Path, disk: &Path| {
            spec(&format!(
                r#"{{"name":"v","kind":"vm","vm":{{"kernel":"{}","disks":[{{"path":"{}"}}]}}}}"#,
                kernel.display(),
                disk.display()
            ))
        };
        assert!(p.check_create(&vm(&k, &k)).is_ok());
        let e = p.check_create(&vm(&outside, &k)).expect_err("outside");
        assert_eq!(e.field.as_deref(), Some("vm.kernel"));
        assert_eq!(e.rule.as_deref(), Some(RULE_VM_PATHS));
        let e = p.check_create(&vm(&k, &link)).expect_err("link out");
        assert_eq!(e.field.as_deref(), Some("vm.disks[0].path"));
        assert!(policy(PolicyConfig::default())
            .check_create(&vm(&outside, &link))
            .is_ok());
    }

    #[test]
    fn command_list_allows_prefixes_and_exact_paths() {
        let p = policy(PolicyConfig {
            process_commands: Some(vec!["/usr/bin/".into(), "/bin/true".into()]),
            ..Default::default()
        });
        assert!(p.check_create(&process(sleep_path())).is_ok());
        // /bin is a link to /usr/bin on merged-/usr systems; either way it resolves inside.
        if Path::new("/bin/sleep").exists() {
            assert!(p.check_create(&process("/bin/sleep")).is_ok());
        }
        let e = refused(&p, &process("/sbin/reboot"));
        assert_eq!(e.field.as_deref(), Some("process.command[0]"));
        assert_eq!(e.rule.as_deref(), Some(RULE_PROCESS_COMMANDS));
        let e = refused(&p, &process("sleep"));
        assert!(e.message.contains("absolute"), "{e:?}");
        let e = refused(&p, &process("/usr/bin/../sbin/reboot"));
        assert!(e.message.contains(".."), "{e:?}");
        refused(&p, &process("/usr/bin/no-such-program-here"));
        // Prefixes compare whole components.
        let q = policy(PolicyConfig {
            process_commands: Some(vec!["/usr/b/".into()]),
            ..Default::default()
        });
        refused(&q, &process(sleep_path()));
    }

    #[test]
    fn symlinks_must_be_allowed_at_both_ends_and_unchangeable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let link = dir.path().join("sleep");
        std::os::unix::fs::symlink(sleep_path(), &link).expect("symlink");
        let link = link.to_str().expect("utf-8");
        let only_usr = policy(PolicyConfig {
            process_commands: Some(vec!["/usr/bin/".into(), "/bin/".into()]),
            ..Default::default()
        });
        // Named outside the list, though it resolves inside.
        let e = refused(&only_usr, &process(link));
        assert!(e.message.contains("named"), "{e:?}");
        let p = policy(PolicyConfig {
            process_commands: Some(vec![
                "/usr/bin/".into(),
                "/bin/".into(),
                format!("{}/", dir.path().display()),
            ]),
            ..Default::default()
        });
        // A 0700 dir owned by us is trusted: the link resolves into /usr/bin.
        assert!(p.check_create(&process(link)).is_ok());
        // Resolving outside the list is refused wherever it is named.
        let other = tempfile::tempdir().expect("tempdir");
        let prog = other.path().join("prog");
        std::fs::write(&prog, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let out = dir.path().join("out");
        std::os::unix::fs::symlink(&prog, &out).expect("symlink");
        let e = refused(&p, &process(out.to_str().expect("utf-8")));
        assert!(e.message.contains("resolved to"), "{e:?}");
        // Writable by others: whoever can write there could re-point the link after the check.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let e = refused(&p, &process(link));
        assert!(e.message.contains("writable"), "{e:?}");
    }

    #[test]
    fn loader_variables_are_refused_with_a_command_list() {
        let p = policy(PolicyConfig {
            process_commands: Some(vec!["/usr/bin/".into(), "/bin/".into()]),
            ..Default::default()
        });
        let s = spec(&format!(
            r#"{{"name":"p","kind":"process","process":{{"command":["{}","1"],"env":{{"LD_PRELOAD":"/tmp/x.so"}}}}}}"#,
            sleep_path()
        ));
        let e = refused(&p, &s);
        assert_eq!(e.field.as_deref(), Some("process.env.LD_PRELOAD"));
        // Without a command list anything goes: the caller could run /bin/sh anyway.
        assert!(policy(PolicyConfig::default()).check_create(&s).is_ok());
    }

    #[test]
    fn cgroup_paths_must_be_within_a_parent() {
        let p = policy(PolicyConfig {
            cgroup_parents: Some(vec!["/workloads".into()]),
            ..Default::default()
        });
        let path = |c: &str| {
            spec(&format!(
                r#"{{"name":"c","kind":"cgroup","cgroup":{{"path":"{c}"}}}}"#
            ))
        };
        assert!(p.check_create(&path("/workloads/a")).is_ok());
        assert!(p.check_create(&path("workloads/a/")).is_ok());
        assert!(p.check_create(&path("/workloads")).is_ok());
        let e = refused(&p, &path("/workloadsX"));
        assert_eq!(e.field.as_deref(), Some("cgroup.path"));
        assert_eq!(e.rule.as_deref(), Some(RULE_CGROUP_PARENTS));
        refused(&p, &path("/system.slice"));
        refused(&p, &path("/"));
    }

    #[test]
    fn adopted_pids_must_be_within_a_parent() {
        let p = policy(PolicyConfig {
            cgroup_parents: Some(vec!["/definitely-not-here".into()]),
            ..Default::default()
        });
        let me = std::process::id();
        let s = spec(&format!(
            r#"{{"name":"c","kind":"cgroup","cgroup":{{"pids":[{me}]}}}}"#
        ));
        let e = refused(&p, &s);
        assert_eq!(e.field.as_deref(), Some("cgroup.pids[0]"));
        let any = policy(PolicyConfig {
            cgroup_parents: Some(vec!["/".into()]),
            ..Default::default()
        });
        assert!(any.check_create(&s).is_ok());
    }

    #[test]
    fn containers_are_not_privileged_by_default() {
        let p = policy(PolicyConfig::default());
        let c = |extra: &str| {
            spec(&format!(
                r#"{{"name":"c","kind":"container","container":{{"image":"busybox:local"{extra}}}}}"#
            ))
        };
        assert!(p.check_create(&c("")).is_ok());
        let e = refused(&p, &c(r#","privileged":true"#));
        assert_eq!(e.field.as_deref(), Some("container.privileged"));
        assert_eq!(e.rule.as_deref(), Some(RULE_ALLOW_PRIVILEGED));
        let e = refused(&p, &c(r#","network":"host""#));
        assert_eq!(e.field.as_deref(), Some("container.network"));
        assert_eq!(e.rule.as_deref(), Some(RULE_ALLOW_HOST_NAMESPACES));
        let e = refused(&p, &c(r#","host_pid":true"#));
        assert_eq!(e.field.as_deref(), Some("container.host_pid"));
        let e = refused(&p, &c(r#","mounts":[{"source":"/etc","target":"/x"}]"#));
        assert_eq!(e.field.as_deref(), Some("container.mounts[0].source"));
        assert_eq!(e.rule.as_deref(), Some(RULE_MOUNT_SOURCES));

        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("mkdir");
        let open = policy(PolicyConfig {
            allow_privileged: true,
            allow_host_namespaces: true,
            mount_sources: vec![format!("{}/", data.display())],
            ..Default::default()
        });
        assert!(open
            .check_create(&c(r#","privileged":true,"network":"host","host_pid":true"#))
            .is_ok());
        let m = |src: &str| {
            c(&format!(
                r#","mounts":[{{"source":"{src}","target":"/x"}}]"#
            ))
        };
        let inside = data.join("sub");
        std::fs::create_dir(&inside).expect("mkdir");
        assert!(open
            .check_create(&m(inside.to_str().expect("utf-8")))
            .is_ok());
        assert!(open.check_create(&m(data.to_str().expect("utf-8"))).is_ok());
        refused(&open, &m("/etc"));
        refused(&open, &m(&format!("{}/../..", data.display())));
    }

    #[test]
    fn bad_entries_are_reported() {
        for (cfg, rule) in [
            (
                PolicyConfig {
                    process_commands: Some(vec!["bin/".into()]),
                    ..Default::default()
                },
                RULE_PROCESS_COMMANDS,
            ),
            (
                PolicyConfig {
                    mount_sources: vec!["/srv/../etc".into()],
                    ..Default::default()
                },
                RULE_MOUNT_SOURCES,
            ),
            (
                PolicyConfig {
                    cgroup_parents: Some(vec!["a/b".into()]),
                    ..Default::default()
                },
                RULE_CGROUP_PARENTS,
            ),
        ] {
            let e = Policy::new(&cfg, Path::new("/proc")).expect_err("bad entry");
            assert_eq!(e.rule, rule);
            assert!(e.to_string().contains(rule), "{e}");
        }
    }

    #[test]
    fn clean_paths() {
        assert!(clean_absolute("/usr/bin/sleep"));
        assert!(!clean_absolute("usr/bin"));
        assert!(!clean_absolute("/usr//bin"));
        assert!(!clean_absolute("/usr/./bin"));
        assert!(!clean_absolute("/usr/../bin"));
        assert!(!clean_absolute("/usr/bin/"));
        assert!(!clean_absolute("/"));
        assert!(!clean_absolute("/a\0b"));
        assert!(within_cgroup("/a/b", &["/a".into()]));
        assert!(!within_cgroup("/ab", &["/a".into()]));
        assert!(within_cgroup("/x", &["/".into()]));
    }
}
