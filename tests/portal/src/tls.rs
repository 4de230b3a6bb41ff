//! https and wss for the whole portal (box endpoint, repository, admin API,
//! console) when `serve` is given a certificate and its key, so that tests
//! can show the box's transport rules against real TLS: a private CA named
//! by `ca_file`, and a redirect from https to http.
//!
//! axum serves any [`Listener`]; [`TlsListener`] is one whose connections
//! have finished the TLS handshake. The handshakes run in tasks of their
//! own, so a client that stalls in its handshake delays no other client.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use axum::serve::Listener;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
};
use tokio_rustls::{
    rustls::{
        self,
        pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    },
    server::TlsStream,
    TlsAcceptor,
};

use super::PortalError;

/// A handshake that has not finished in this time is dropped: a real
/// client on a slow link needs a few round trips, not more.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshaken connections waiting for the server to take them; the accept
/// loop waits while it is full, as a kernel backlog does.
const READY_QUEUE: usize = 64;

/// The PEM files `serve --tls-cert --tls-key` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl TlsFiles {
    /// The server configuration: rustls with ring, http/1.1 (WebSocket
    /// upgrades need it).
    pub(crate) fn acceptor(&self) -> Result<TlsAcceptor, PortalError> {
        let bad = |path: &Path, reason: String| PortalError::Tls {
            path: path.to_owned(),
            reason,
        };
        let certs = CertificateDer::pem_file_iter(&self.cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| bad(&self.cert, e.to_string()))?;
        if certs.is_empty() {
            return Err(bad(&self.cert, "holds no PEM certificate".into()));
        }
        let key =
            PrivateKeyDer::from_pem_file(&self.key).map_err(|e| bad(&self.key, e.to_string()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(&self.cert, e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| bad(&self.key, e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// Connections of `tcp` after their TLS handshake, for `axum::serve`.
pub(crate) struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `tcp` until `shutdown` is signalled or the listener is
    /// dropped.
    pub(crate) fn new(
        mut tcp: TcpListener,
        acceptor: TlsAcceptor,
        mut shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    _ = super::stopped(&mut shutdown) => return,
                    _ = tx.closed() => return,
                    accepted = Listener::accept(&mut tcp) => accepted,
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(error)) => tracing::debug!(%peer, %error, "tls handshake failed"),
                        Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop ended (shutdown): no more connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_certificate_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("cert.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        for cert in [empty, dir.path().join("missing.pem")] {
            let files = TlsFiles {
                cert: cert.clone(),
                key: dir.path().join("key.pem"),
            };
            match files.acceptor() {
                Err(PortalError::Tls { path, .. }) => assert_eq!(path, cert),
                Err(other) => panic!("{cert:?}: {other}"),
                Ok(_) => panic!("{cert:?} accepted"),
            }
        }
    }
}
