//! The clusters a `k8s` object may name (`[[cluster]]` in the config file), their kube-rs
//! clients (made on first use, so that a cluster that is down does not stop the agent's start),
//! and a discovery cache per cluster.
//!
//! Discovery is one request per group version, made when a kind is first seen, and again when
//! the cache does not know a kind (a CRD created since): not the full discovery of every group
//! (about 30 requests on 1.20) that kubectl caches on disk.
//!
//! Credentials stay in the kube-rs `Config`: nothing here logs it or puts it in an error. An
//! error names the cluster and the kubeconfig's path only.

use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::{ApiCapabilities, Scope};
use kube::Client;
use nodeagent_types::ApiError;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OnceCell;

/// Where the service account of a pod is mounted.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// One `[[cluster]]` of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// What `k8s.cluster` names.
    pub name: String,
    /// A kubeconfig file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    /// Its context (default: its current context).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// The pod's own service account, when the agent runs in a pod: the API server from
    /// `KUBERNETES_SERVICE_HOST`/`_PORT`, the token and CA from `service_account_dir`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_cluster: bool,
    /// Where the service account is mounted (default
    /// `/var/run/secrets/kubernetes.io/serviceaccount`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_dir: Option<PathBuf>,
}

impl ClusterConfig {
    /// Checks one entry; `at` is its place in the file (`cluster[0]`).
    pub fn check(&self, at: &str) -> Result<(), String> {
        if self.name.len() > 63 || !nodeagent_types::is_dns_subdomain(&self.name) {
            return Err(format!("{at}.name: {:?} is not a cluster name (lowercase letters, digits, '-' and '.', at most 63)", self.name));
        }
        match (&self.kubeconfig, self.in_cluster) {
            (Some(_), true) => Err(format!(
                "{at}: give either kubeconfig or in_cluster = true, not both"
            )),
            (None, false) => Err(format!(
                "{at}: give a kubeconfig, or in_cluster = true when the agent runs in a pod"
            )),
            (Some(p), false) if !p.is_absolute() => {
                Err(format!("{at}.kubeconfig: give an absolute path"))
            }
            _ if self.context.is_some() && self.in_cluster => {
                Err(format!("{at}.context: only with a kubeconfig"))
            }
            _ => Ok(()),
        }
    }

    /// Where the credentials come from, for messages (a path, never the credentials).
    pub fn source(&self) -> String {
        match &self.kubeconfig {
            Some(p) => format!("kubeconfig {}", p.display()),
            None => "the pod's service account".to_string(),
        }
    }
}

/// Where a kind lives in a cluster, as discovery found it.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub resource: ApiResource,
    pub namespaced: bool,
}

/// One configured cluster.
pub struct Cluster {
    pub cfg: ClusterConfig,
    client: OnceCell<Client>,
    discovery: Mutex<HashMap<GroupVersionKind, Resolved>>,
}

impl Cluster {
    pub fn new(cfg: ClusterConfig) -> Cluster {
        Cluster {
            cfg,
            client: OnceCell::new(),
            discovery: Mutex::new(HashMap::new()),
        }
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// The client, made on first use. A failure is a 503 that names the cluster and where its
    /// credentials come from (and is tried again on the next use).
    pub async fn client(&self) -> Result<Client, ApiError> {
        self.client
            .get_or_try_init(|| async {
                let config = self.config().await.map_err(|why| {
                    ApiError::unavailable(format!(
                        "cluster {}: {}: {why}",
                        self.cfg.name,
                        self.cfg.source()
                    ))
                })?;
                Client::try_from(config).map_err(|e| {
                    ApiError::unavailable(format!(
                        "cluster {}: making the client: {e}",
                        self.cfg.name
                    ))
                })
            })
            .await
            .cloned()
    }

    async fn config(&self) -> Result<kube::Config, String> {
        let mut config = match &self.cfg.kubeconfig {
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| e.to_string())?;
                let opts = kube::config::KubeConfigOptions {
                    context: self.cfg.context.clone(),
                    cluster: None,
                    user: None,
                };
                kube::Config::from_custom_kubeconfig(kc, &opts)
                    .await
                    .map_err(|e| e.to_string())?
            }
            None => self.in_cluster_config()?,
        };
        // A cluster that does not answer is an error within seconds, not minutes; reads stay
        // long (a watch holds its request open for minutes).
        config.connect_timeout = Some(Duration::from_secs(5));
        config.write_timeout = Some(Duration::from_secs(30));
        Ok(config)
    }

    /// The pod's service account, read from an injectable directory (kube-rs's own in-cluster
    /// loader reads only the fixed path).
    fn in_cluster_config(&self) -> Result<kube::Config, String> {
        let dir = self
            .cfg
            .service_account_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(SERVICE_ACCOUNT_DIR));
        let host = std::env::var("KUBERNETES_SERVICE_HOST")
            .map_err(|_| "KUBERNETES_SERVICE_HOST is not set (the agent does not run in a pod)")?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        let url = format!("https://{host}:{port}");
        let mut config = kube::Config::new(
            url.parse()
                .map_err(|e| format!("the API server address {url}: {e}"))?,
        );
        let ca_path = dir.join("ca.crt");
        let pem = std::fs::read(&ca_path).map_err(|e| format!("{}: {e}", ca_path.display()))?;
        use rustls_pki_types::pem::PemObject as _;
        let certs: Vec<Vec<u8>> = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
            .filter_map(Result::ok)
            .map(|c| c.to_vec())
            .collect();
        if certs.is_empty() {
            return Err(format!("{}: no certificate", ca_path.display()));
        }
        config.root_cert = Some(certs);
        let token = dir.join("token");
        if !token.exists() {
            return Err(format!("{}: no such file", token.display()));
        }
        // A file, not its contents: kube-rs reads it again as the kubelet rotates it.
        config.auth_info.token_file = Some(token.display().to_string());
        if let Ok(ns) = std::fs::read_to_string(dir.join("namespace")) {
            config.default_namespace = ns.trim().to_string();
        }
        Ok(config)
    }

    /// Where `gvk` lives; `refresh` asks the server again even when the cache knows it.
    pub async fn resolve(
        &self,
        client: &Client,
        gvk: &GroupVersionKind,
        refresh: bool,
    ) -> Result<Option<Resolved>, ApiError> {
        if !refresh {
            if let Some(r) = self.cached(gvk) {
                return Ok(Some(r));
            }
        }
        match kube::discovery::pinned_kind(client, gvk).await {
            Ok((resource, caps)) => {
                let r = resolved(resource, &caps);
                if let Ok(mut d) = self.discovery.lock() {
                    d.insert(gvk.clone(), r.clone());
                }
                Ok(Some(r))
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
            // pinned_kind's own "not in this group version" error.
            Err(kube::Error::Discovery(_)) => Ok(None),
            Err(e) => Err(api_error(&self.cfg.name, e)),
        }
    }

    fn cached(&self, gvk: &GroupVersionKind) -> Option<Resolved> {
        self.discovery.lock().ok()?.get(gvk).cloned()
    }
}

/// The clusters by name.
#[derive(Default)]
pub struct Clusters {
    by_name: HashMap<String, Arc<Cluster>>,
    /// The only one, when one is configured (what a spec without `cluster` means).
    only: Option<Arc<Cluster>>,
}

impl Clusters {
    pub fn new(cfgs: Vec<ClusterConfig>) -> Clusters {
        let mut c = Clusters::default();
        let n = cfgs.len();
        for cfg in cfgs {
            let cl = Arc::new(Cluster::new(cfg));
            if n == 1 {
                c.only = Some(cl.clone());
            }
            c.by_name.insert(cl.name().to_string(), cl);
        }
        c
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The cluster a spec names (or the only one): 503 when none is configured, 400 naming
    /// `k8s.cluster` when it is not one of them.
    pub fn pick(&self, name: Option<&str>) -> Result<Arc<Cluster>, ApiError> {
        self.pick_for("k8s", name)
    }

    /// [`Clusters::pick`] for the kind whose section is `key` (errors name `<key>.cluster`).
    pub fn pick_for(&self, key: &str, name: Option<&str>) -> Result<Arc<Cluster>, ApiError> {
        if self.by_name.is_empty() {
            return Err(ApiError::unavailable(format!(
                "the {key} kind has no cluster: add a [[cluster]] (name, kubeconfig) to the config file"
            )));
        }
        let field = format!("{key}.cluster");
        match name {
            Some(n) => self.by_name.get(n).cloned().ok_or_else(|| {
                ApiError::invalid(
                    field,
                    format!(
                        "no cluster {n:?} is configured (configured: {})",
                        self.names()
                    ),
                )
            }),
            None => self.only.clone().ok_or_else(|| {
                ApiError::invalid(
                    field,
                    format!("name one of the configured clusters: {}", self.names()),
                )
            }),
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<Cluster>> {
        self.by_name.get(name).cloned()
    }

    fn names(&self) -> String {
        let mut v: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
        v.sort_unstable();
        v.join(", ")
    }
}

fn resolved(resource: ApiResource, caps: &ApiCapabilities) -> Resolved {
    Resolved {
        resource,
        namespaced: matches!(caps.scope, Scope::Namespaced),
    }
}

/// A kube-rs error as the API's: the server's refusal keeps its status (400 for a bad object,
/// 409 for a conflict, 403, 404); a cluster that cannot be reached is a 503.
pub fn api_error(cluster: &str, e: kube::Error) -> ApiError {
    use nodeagent_types::ErrorCode;
    match e {
        kube::Error::Api(s) => {
            let code = match s.code {
                400 | 422 => ErrorCode::InvalidArgument,
                403 | 401 => ErrorCode::Forbidden,
                404 => ErrorCode::NotFound,
                409 => ErrorCode::FailedPrecondition,
                413 => ErrorCode::PayloadTooLarge,
                500..=599 => ErrorCode::Unavailable,
                _ => ErrorCode::Internal,
            };
            let msg = if s.message.is_empty() {
                format!("cluster {cluster} answered {} {}", s.code, s.reason)
            } else {
                format!("cluster {cluster}: {}", s.message)
            };
            ApiError::new(code, msg)
        }
        other => ApiError::unavailable(format!("cluster {cluster}: {other}")),
    }
}
