//! Listeners that say who connected: every one yields a [`Peer`], which the router sees as
//! `ConnectInfo<Peer>` and the guard uses for authentication and the audit log.

use crate::auth::Peer;
use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};

/// Plain TCP, with `TCP_NODELAY`: small request/response exchanges are the whole workload, and
/// Nagle's algorithm would hold a response back for the client's delayed ACK (up to 40 ms) on a
/// millisecond-level API.
pub(crate) struct PlainTcp(pub(crate) tokio::net::TcpListener);

impl Listener for PlainTcp {
    type Io = tokio::net::TcpStream;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Peer) {
        let (stream, addr) = Listener::accept(&mut self.0).await;
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY: {e}");
        }
        (stream, Peer::Tcp { addr })
    }

    fn local_addr(&self) -> std::io::Result<Peer> {
        Ok(Peer::Tcp {
            addr: self.0.local_addr()?,
        })
    }
}

/// The unix socket, with the client's credentials from the kernel (`SO_PEERCRED`).
pub(crate) struct UnixPeers(pub(crate) tokio::net::UnixListener);

impl Listener for UnixPeers {
    type Io = tokio::net::UnixStream;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Peer) {
        let (stream, _) = Listener::accept(&mut self.0).await;
        let peer = match stream.peer_cred() {
            Ok(c) => Peer::Unix {
                uid: Some(c.uid()),
                gid: Some(c.gid()),
                pid: c.pid(),
            },
            Err(e) => {
                tracing::debug!("SO_PEERCRED: {e}");
                Peer::Unix {
                    uid: None,
                    gid: None,
                    pid: None,
                }
            }
        };
        (stream, peer)
    }

    fn local_addr(&self) -> std::io::Result<Peer> {
        Ok(Peer::Unix {
            uid: None,
            gid: None,
            pid: None,
        })
    }
}

macro_rules! peer_info {
    ($($listener:ty),*) => {$(
        impl Connected<IncomingStream<'_, $listener>> for Peer {
            fn connect_info(stream: IncomingStream<'_, $listener>) -> Peer {
                stream.remote_addr().clone()
            }
        }
    )*};
}

peer_info!(PlainTcp, UnixPeers, crate::tls::TlsListener);
