//! Running the helm binary for one release: its per-object folder (a kubeconfig of mode 0600
//! and helm's own cache, config and data homes), the argv of each command (every argument a
//! separate entry, never a shell), and what helm's output says.
//!
//! Credentials stay in files: the kubeconfig copied from the `[[cluster]]`'s, or, in a pod, a
//! kubeconfig that names the service account's token and CA files. Nothing here puts them in
//! an argument, an error or a log line.

use crate::kinds::k8s::cluster::{Cluster, SERVICE_ACCOUNT_DIR};
use nodeagent_types::{ApiError, HelmRevision, HelmSpec};
use serde_json::Value;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long a helm command that does not wait may take (a cluster that does not answer).
const QUICK: Duration = Duration::from_secs(120);
/// Longest message kept from helm's stderr.
const MAX_MESSAGE: usize = 2000;
/// Environment variables passed to helm beside its homes (the proxies an OCI/HTTP chart needs).
const PASS_ENV: &[&str] = &[
    "PATH",
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "NO_PROXY",
    "https_proxy",
    "http_proxy",
    "no_proxy",
];

/// One release of one object, and where helm runs for it.
#[derive(Clone)]
pub struct Target {
    pub helm: Arc<PathBuf>,
    pub cluster: Arc<Cluster>,
    /// `<state-dir>/objects/<id>`.
    pub dir: PathBuf,
    pub release: String,
    pub namespace: String,
}

/// A release as `helm status` and `helm history` show it.
#[derive(Debug, Clone, Default)]
pub struct Release {
    pub revision: u32,
    pub status: String,
    pub description: String,
    pub chart: String,
    pub app_version: String,
    pub history: Vec<HelmRevision>,
}

/// A failed helm command: its stderr (without helm's `Error: ` prefix), or why it did not run.
#[derive(Debug)]
pub enum Failure {
    /// helm ran and failed.
    Helm(String),
    /// helm did not run or did not end (a missing binary, the time limit): the error to answer.
    Run(ApiError),
}

impl Failure {
    pub fn message(&self) -> String {
        match self {
            Failure::Helm(m) => m.clone(),
            Failure::Run(e) => e.message.clone(),
        }
    }
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, path)
}

impl Target {
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    fn values_file(&self) -> PathBuf {
        self.dir.join("values.json")
    }

    fn home(&self, what: &str) -> PathBuf {
        self.dir.join("helm").join(what)
    }

    /// Makes the folder (0700), helm's homes, and the kubeconfig (0600), afresh each time so
    /// that a rotated source kubeconfig is followed. Errors name the cluster and the path.
    pub async fn setup(&self) -> Result<(), ApiError> {
        let t = self.clone();
        tokio::task::spawn_blocking(move || t.setup_now())
            .await
            .map_err(|e| ApiError::internal(format!("preparing the helm folder: {e}")))?
    }

    fn setup_now(&self) -> Result<(), ApiError> {
        use std::os::unix::fs::PermissionsExt as _;
        let io = |what: &Path, e: std::io::Error| {
            ApiError::internal(format!("helm folder {}: {e}", what.display()))
        };
        for d in [
            self.dir.clone(),
            self.home("cache"),
            self.home("config"),
            self.home("data"),
        ] {
            std::fs::create_dir_all(&d).map_err(|e| io(&d, e))?;
        }
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io(&self.dir, e))?;
        let text = self.kubeconfig_text()?;
        write_private(&self.kubeconfig(), &text).map_err(|e| io(&self.kubeconfig(), e))
    }

    /// The kubeconfig helm gets: a copy of the cluster's file, or one naming the service
    /// account's files (in a pod).
    fn kubeconfig_text(&self) -> Result<Vec<u8>, ApiError> {
        let cfg = &self.cluster.cfg;
        let unavailable = |why: String| {
            ApiError::unavailable(format!(
                "cluster {}: {}: {why}",
                cfg.name,
                self.cluster.cfg.source()
            ))
        };
        if let Some(p) = &cfg.kubeconfig {
            return std::fs::read(p).map_err(|e| unavailable(e.to_string()));
        }
        let dir = cfg
            .service_account_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(SERVICE_ACCOUNT_DIR));
        let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| {
            unavailable(
                "KUBERNETES_SERVICE_HOST is not set (the agent does not run in a pod)".into(),
            )
        })?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        for f in ["ca.crt", "token"] {
            if !dir.join(f).exists() {
                return Err(unavailable(format!(
                    "{}: no such file",
                    dir.join(f).display()
                )));
            }
        }
        // JSON is YAML: paths and the address are quoted by serde_json, not pasted.
        let kc = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "in-cluster", "cluster": {
                "server": format!("https://{host}:{port}"),
                "certificate-authority": dir.join("ca.crt"),
            }}],
            "users": [{"name": "service-account", "user": {"tokenFile": dir.join("token")}}],
            "contexts": [{"name": "in-cluster", "context": {"cluster": "in-cluster", "user": "service-account"}}],
            "current-context": "in-cluster",
        });
        Ok(kc.to_string().into_bytes())
    }

    /// `--namespace NS --kubeconfig F [--kube-context C]`: what every command of this release
    /// starts with.
    fn common(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![
            "--namespace".into(),
            self.namespace.clone().into(),
            "--kubeconfig".into(),
            self.kubeconfig().into(),
        ];
        if let Some(c) = &self.cluster.cfg.context {
            a.push("--kube-context".into());
            a.push(c.clone().into());
        }
        a
    }

    /// Runs helm with `args`, for at most `limit`: stdout, or the failure.
    async fn run(&self, args: Vec<OsString>, limit: Duration) -> Result<Vec<u8>, Failure> {
        let mut cmd = tokio::process::Command::new(self.helm.as_path());
        cmd.args(&args)
            .env_clear()
            .env("HOME", &self.dir)
            .env("HELM_CACHE_HOME", self.home("cache"))
            .env("HELM_CONFIG_HOME", self.home("config"))
            .env("HELM_DATA_HOME", self.home("data"))
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        for k in PASS_ENV {
            if let Some(v) = std::env::var_os(k) {
                cmd.env(k, v);
            }
        }
        let out = match tokio::time::timeout(limit, cmd.output()).await {
            Err(_) => {
                return Err(Failure::Run(ApiError::unavailable(format!(
                    "helm {} did not end within {}s",
                    args.first().and_then(|a| a.to_str()).unwrap_or(""),
                    limit.as_secs()
                ))))
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Failure::Run(ApiError::unavailable(format!(
                    "the helm binary {} was not found: install helm, or set NODEAGENT_HELM to its path",
                    self.helm.display()
                ))))
            }
            Ok(Err(e)) => {
                return Err(Failure::Run(ApiError::unavailable(format!(
                    "running {}: {e}",
                    self.helm.display()
                ))))
            }
            Ok(Ok(o)) => o,
        };
        if out.status.success() {
            return Ok(out.stdout);
        }
        Err(Failure::Helm(stderr_message(&out.stderr, out.status)))
    }

    /// `helm upgrade [--install]`: the chart, its version, the value files then the values'
    /// file, `--wait` with `--timeout`. Positional arguments come after `--`.
    pub async fn upgrade(&self, sec: &HelmSpec, install: bool) -> Result<(), Failure> {
        let values = self.values_file();
        let text = sec.values_json();
        tokio::task::spawn_blocking(move || write_private(&values, text.as_bytes()))
            .await
            .map_err(|e| Failure::Run(ApiError::internal(e.to_string())))?
            .map_err(|e| {
                Failure::Run(ApiError::internal(format!("writing the values file: {e}")))
            })?;
        let mut a: Vec<OsString> = vec!["upgrade".into()];
        if install {
            a.push("--install".into());
            a.push("--create-namespace".into());
        }
        a.extend(self.common());
        if let Some(v) = &sec.version {
            a.push("--version".into());
            a.push(v.clone().into());
        }
        for f in &sec.value_files {
            a.push("--values".into());
            a.push(f.clone().into());
        }
        a.push("--values".into());
        a.push(self.values_file().into());
        let timeout = sec.timeout();
        a.push("--timeout".into());
        a.push(format!("{}s", timeout.as_secs()).into());
        if sec.wait {
            a.push("--wait=watcher".into());
        }
        a.push("--".into());
        a.push(self.release.clone().into());
        a.push(sec.chart.clone().into());
        self.run(a, timeout + QUICK).await.map(|_| ())
    }

    /// `helm uninstall --wait`: `Ok(false)` when there was no such release.
    pub async fn uninstall(&self, timeout: Duration) -> Result<bool, Failure> {
        let mut a: Vec<OsString> = vec!["uninstall".into()];
        a.extend(self.common());
        a.push("--wait".into());
        a.push("--timeout".into());
        a.push(format!("{}s", timeout.as_secs().max(1)).into());
        a.push("--".into());
        a.push(self.release.clone().into());
        match self.run(a, timeout + QUICK).await {
            Ok(_) => Ok(true),
            Err(Failure::Helm(m)) if is_not_found(&m) => Ok(false),
            Err(f) => Err(f),
        }
    }

    /// The release as helm knows it now (`helm status`, then `helm history`), or `None`.
    pub async fn look(&self) -> Result<Option<Release>, ApiError> {
        let mut a: Vec<OsString> = vec!["status".into()];
        a.extend(self.common());
        a.extend(["-o".into(), "json".into(), "--".into()]);
        a.push(self.release.clone().into());
        let status = match self.run(a, QUICK).await {
            Ok(s) => s,
            Err(Failure::Helm(m)) if is_not_found(&m) => return Ok(None),
            Err(f) => return Err(self.unavailable(f)),
        };
        let mut rel = parse_status(&status)?;
        let mut a: Vec<OsString> = vec!["history".into()];
        a.extend(self.common());
        a.extend(["-o".into(), "json".into(), "--".into()]);
        a.push(self.release.clone().into());
        let history = match self.run(a, QUICK).await {
            Ok(h) => h,
            Err(Failure::Helm(m)) if is_not_found(&m) => return Ok(None),
            Err(f) => return Err(self.unavailable(f)),
        };
        rel.history = parse_history(&history)?;
        if let Some(cur) = rel.history.iter().find(|h| h.revision == rel.revision) {
            rel.chart = cur.chart.clone();
            rel.app_version = cur.app_version.clone();
        }
        Ok(Some(rel))
    }

    fn unavailable(&self, f: Failure) -> ApiError {
        match f {
            Failure::Run(e) => e,
            Failure::Helm(m) => ApiError::unavailable(format!(
                "release {} in namespace {} of cluster {}: {m}",
                self.release,
                self.namespace,
                self.cluster.name()
            )),
        }
    }
}

/// Whether helm's message says the release does not exist.
pub fn is_not_found(m: &str) -> bool {
    m.contains("release: not found")
}

fn stderr_message(stderr: &[u8], status: std::process::ExitStatus) -> String {
    let text = String::from_utf8_lossy(stderr);
    // helm's warnings ("WARNING: ...") go to stderr too; the error is the `Error:` lines.
    let errors: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("WARNING:"))
        .collect();
    let mut m = errors
        .iter()
        .map(|l| l.strip_prefix("Error: ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("; ");
    if m.is_empty() {
        m = format!("helm exited with {status} and no message");
    }
    if m.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !m.is_char_boundary(cut) {
            cut -= 1;
        }
        m.truncate(cut);
        m.push_str("...");
    }
    m
}

fn parse_status(out: &[u8]) -> Result<Release, ApiError> {
    let v: Value = serde_json::from_slice(out)
        .map_err(|e| ApiError::internal(format!("helm status -o json: {e}")))?;
    let text = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    Ok(Release {
        revision: v
            .get("version")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0),
        status: text("/info/status"),
        description: text("/info/description"),
        ..Release::default()
    })
}

fn parse_history(out: &[u8]) -> Result<Vec<HelmRevision>, ApiError> {
    let v: Value = serde_json::from_slice(out)
        .map_err(|e| ApiError::internal(format!("helm history -o json: {e}")))?;
    let text = |e: &Value, k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    Ok(v.as_array()
        .map(|a| {
            a.iter()
                .map(|e| HelmRevision {
                    revision: e
                        .get("revision")
                        .and_then(Value::as_u64)
                        .and_then(|n| u32::try_from(n).ok())
                        .unwrap_or(0),
                    updated: text(e, "updated"),
                    status: text(e, "status"),
                    chart: text(e, "chart"),
                    app_version: text(e, "app_version"),
                    description: text(e, "description"),
                })
                .collect()
        })
        .unwrap_or_default())
}

/// helm's failure as the API's error: the field at fault where the message shows it
/// (`helm.chart`, `helm.version`, `helm.value_files[i]`, `helm.values`), a 503 when the cluster
/// could not be reached, a 409 naming `helm.timeout` when `--wait` ran out.
pub fn classify(f: Failure, sec: &HelmSpec) -> ApiError {
    let m = match f {
        Failure::Run(e) => return e,
        Failure::Helm(m) => m,
    };
    let has = |s: &str| m.contains(s);
    if has("connection refused")
        || has("Kubernetes cluster unreachable")
        || has("no such host")
        || has("i/o timeout")
        || has("Unauthorized")
        || has("x509:")
    {
        return ApiError::unavailable(format!("helm could not reach the cluster: {m}"));
    }
    if let Some(i) = sec.value_files.iter().position(|f| m.contains(f.as_str())) {
        return ApiError::invalid(format!("helm.value_files[{i}]"), m);
    }
    if sec.version.is_some() && (has("no chart version") || has("version") && has("not found")) {
        return ApiError::invalid("helm.version", m);
    }
    if sec.wait && (has("context deadline exceeded") || has("not ready") || has("timed out")) {
        return ApiError::precondition(m).with_field("helm.timeout");
    }
    let chart = has(&sec.chart)
        || has("Chart.yaml")
        || has("parse error")
        || has("chart not found")
        || has("not a valid chart")
        || has("failed to download")
        || has("chart.metadata")
        || has("dependencies");
    if chart && !has("execution error") {
        return ApiError::invalid("helm.chart", m);
    }
    if has("execution error")
        || has("ValidationError")
        || has("unable to build kubernetes objects")
        || has(" is invalid")
        || has("values")
        || has("typed patch")
        || has("cannot unmarshal")
    {
        return ApiError::invalid("helm.values", m);
    }
    ApiError::invalid("helm.chart", m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sec(extra: &str) -> HelmSpec {
        serde_json::from_str(&format!(r#"{{"chart":"/charts/demo"{extra}}}"#)).expect("test")
    }

    #[test]
    fn helm_messages_name_the_field() {
        let f = |m: &str, s: &HelmSpec| classify(Failure::Helm(m.into()), s);
        let s = sec("");
        assert_eq!(
            f("path \"/charts/demo\" not found", &s).field.as_deref(),
            Some("helm.chart")
        );
        assert_eq!(
            f(
                "parse error at (demo/templates/cm.yaml:3): unexpected }",
                &s
            )
            .field
            .as_deref(),
            Some("helm.chart")
        );
        assert_eq!(
            f(
                "execution error at (demo/templates/configmap.yaml:2:4): values.fail is set",
                &s
            )
            .field
            .as_deref(),
            Some("helm.values")
        );
        assert_eq!(
            f("unable to build kubernetes objects from release manifest: error validating data: ValidationError(Deployment.spec.replicas)", &s)
                .field
                .as_deref(),
            Some("helm.values")
        );
        let e = f(
            "Kubernetes cluster unreachable: dial tcp: connection refused",
            &s,
        );
        assert_eq!(e.code, nodeagent_types::ErrorCode::Unavailable);
        let s = sec(r#","value_files":["/etc/v.yaml"],"wait":true"#);
        assert_eq!(
            f("open /etc/v.yaml: no such file or directory", &s)
                .field
                .as_deref(),
            Some("helm.value_files[0]")
        );
        let e = f(
            "resource Deployment/t/w not ready. status: InProgress; context deadline exceeded",
            &s,
        );
        assert_eq!(e.field.as_deref(), Some("helm.timeout"));
        assert_eq!(e.code, nodeagent_types::ErrorCode::FailedPrecondition);
    }

    #[test]
    fn stderr_keeps_the_error_lines() {
        let st = std::process::Command::new("false").status().expect("test");
        assert_eq!(
            stderr_message(
                b"WARNING: kube config is group-readable\nError: path \"/x\" not found\n",
                st
            ),
            "path \"/x\" not found"
        );
        assert!(stderr_message(b"", st).contains("no message"));
        let long = "x".repeat(5000);
        assert!(stderr_message(long.as_bytes(), st).len() <= MAX_MESSAGE + 3);
    }

    #[test]
    fn status_and_history_parse() {
        let r = parse_status(br#"{"name":"r1","info":{"status":"deployed","description":"Install complete"},"version":2,"namespace":"t1"}"#).expect("test");
        assert_eq!((r.revision, r.status.as_str()), (2, "deployed"));
        let h = parse_history(br#"[{"revision":1,"updated":"2026-12-07T23:01:03Z","status":"superseded","chart":"demo-0.1.0","app_version":"1.0.0","description":"Install complete"},{"revision":2,"status":"deployed","chart":"demo-0.1.0"}]"#).expect("test");
        assert_eq!(h.len(), 2);
        assert_eq!(h[1].revision, 2);
        assert_eq!(h[0].app_version, "1.0.0");
        assert!(parse_status(b"not json").is_err());
    }
}
