//! TLS for the TCP listener, optionally with client certificates (mTLS), and the client side
//! for the CLI and other clients of the agent.
//!
//! One listener serves HTTP/1.1, HTTP/2 and gRPC over TLS: ALPN offers `h2` and `http/1.1`, and
//! the server tells the two apart by the connection preface as it does in clear text.
//!
//! Handshakes run in tasks of their own, at most [`MAX_HANDSHAKES`] at a time and each within
//! [`HANDSHAKE_TIMEOUT`], so a client that connects and stays silent cannot hold up others.
//! The crypto provider is `ring`.

use crate::auth::Peer;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// TLS handshakes in progress at once; more connections wait in the kernel's backlog.
pub const MAX_HANDSHAKES: usize = 256;
/// A client that has not finished its handshake by then is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Where Debian keeps the system's trusted CAs, used by clients when no CA file is given.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {path}: not valid PEM: {source}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{what} {path}: no certificate in it")]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("{0}")]
    KeyFile(String),
    #[error("{what}: {source}")]
    Rustls {
        what: &'static str,
        source: rustls::Error,
    },
    #[error("tls_client_ca {path}: {source}")]
    Verifier {
        path: PathBuf,
        source: rustls::server::VerifierBuilderError,
    },
    #[error("server name {0:?} is not a valid DNS name or IP address")]
    ServerName(String),
}

/// The server side's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFiles {
    /// The server's certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1). Must be private to the agent's user.
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by one of these CAs (PEM).
    pub client_ca: Option<PathBuf>,
}

/// A loaded server TLS configuration.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    client_auth: bool,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("client_auth", &self.client_auth)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads the certificate, the key (refused unless private to the agent's user) and the
    /// client CA.
    pub fn load(files: &ServerFiles) -> Result<ServerTls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = certs("tls_cert", &files.cert)?;
        crate::auth::check_private_file(&files.key, "tls_key").map_err(TlsError::KeyFile)?;
        let key = private_key(&files.key)?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Rustls {
                what: "TLS protocol versions",
                source,
            })?;
        let builder = match &files.client_ca {
            Some(ca) => {
                let roots = roots("tls_client_ca", ca)?;
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|source| TlsError::Verifier {
                        path: ca.clone(),
                        source,
                    })?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config =
            builder
                .with_single_cert(chain, key)
                .map_err(|source| TlsError::Rustls {
                    what: "tls_cert and tls_key do not make a usable pair",
                    source,
                })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(ServerTls {
            config: Arc::new(config),
            client_auth: files.client_ca.is_some(),
        })
    }

    /// Whether clients must present a certificate.
    pub fn client_auth(&self) -> bool {
        self.client_auth
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            what,
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read("tls_key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|source| TlsError::Pem {
        what: "tls_key",
        path: path.to_path_buf(),
        source,
    })
}

fn roots(what: &'static str, path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for c in certs(what, path)? {
        store.add(c).map_err(|source| TlsError::Rustls {
            what: "a CA certificate is not usable",
            source,
        })?;
    }
    Ok(Arc::new(store))
}

/// The client side: which CA to trust for the server (the system's bundle when `None`), and
/// the client certificate and key to present, if any. ALPN offers `alpn`.
pub fn client_config(
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = match ca {
        Some(ca) => roots("CA file", ca)?,
        None => roots("system CA bundle", Path::new(SYSTEM_CA_BUNDLE))?,
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls {
            what: "TLS protocol versions",
            source,
        })?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => {
            let chain = certs("client certificate", cert)?;
            let key = {
                let pem = read("client key", key)?;
                PrivateKeyDer::from_pem_slice(&pem).map_err(|source| TlsError::Pem {
                    what: "client key",
                    path: key.to_path_buf(),
                    source,
                })?
            };
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|source| TlsError::Rustls {
                    what: "client certificate and key do not make a usable pair",
                    source,
                })?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Connects TLS over `tcp` to `server_name` (a DNS name or an IP address, checked against the
/// server's certificate).
pub async fn connect(
    config: Arc<ClientConfig>,
    server_name: &str,
    tcp: TcpStream,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let name = ServerName::try_from(server_name.to_string()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            TlsError::ServerName(server_name.to_string()),
        )
    })?;
    TlsConnector::from(config).connect(name, tcp).await
}

/// The subject of a DER certificate, as `CN=...,O=...` (RFC 4514 order as written in the
/// certificate). `None` if it cannot be parsed (it was verified already, so that is unlikely).
pub fn subject_of(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let s = cert.subject().to_string();
    Some(if s.is_empty() {
        "(empty subject)".to_string()
    } else {
        s
    })
}

/// A TCP listener that hands out finished TLS connections with the client's identity.
pub(crate) struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
    local: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsListener {
    pub(crate) fn new(tcp: TcpListener, tls: &ServerTls) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(tls.config.clone());
        let task = tokio::spawn(accept_loop(tcp, acceptor, tx));
        Ok(TlsListener { rx, local, task })
    }
}

async fn accept_loop(
    mut tcp: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<(TlsStream<TcpStream>, Peer)>,
) {
    let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (stream, addr) = tokio::select! {
            c = axum::serve::Listener::accept(&mut tcp) => c,
            () = tx.closed() => return,
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY: {e}");
        }
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let subject = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(|c| subject_of(c.as_ref()));
                    let _ = tx.send((tls, Peer::Tls { addr, subject })).await;
                }
                Ok(Err(e)) => tracing::debug!(%addr, "TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Peer) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept loop only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Peer> {
        Ok(Peer::Tcp { addr: self.local })
    }
}
