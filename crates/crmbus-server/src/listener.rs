//! The API's listener: plain TCP, or TLS (rustls) when `[server] tls_cert` and `tls_key`
//! are set. The certificate and key are read at start and again on [`TlsCertificate::reload`]
//! (the server calls it on SIGHUP): connections made after a reload get the new
//! certificate, open ones keep theirs, and a reload that fails (a missing file, a key that
//! does not match) keeps the old pair and says why.
//!
//! TLS handshakes run in their own tasks, so a client that connects and stalls holds up
//! nobody else's connection; one that has not finished within [`HANDSHAKE_TIMEOUT`] is
//! dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use crmbus::sync::RwLockExt;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long a TLS client may take to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections whose handshake is done, waiting for the server to take them.
const READY_CONNECTIONS: usize = 128;

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {message}")]
pub struct TlsError {
    /// Which file or setting.
    pub what: String,
    /// What is wrong.
    pub message: String,
}

fn tls_error(what: impl Into<String>, message: impl std::fmt::Display) -> TlsError {
    TlsError {
        what: what.into(),
        message: message.to_string(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The API's certificate and key, reloadable.
#[derive(Debug)]
pub struct TlsCertificate {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

/// Reads a PEM certificate chain and its private key, checking that they belong together.
fn read_pair(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, TlsError> {
    let what_cert = format!("server.tls_cert ({})", cert_path.display());
    let what_key = format!("server.tls_key ({})", key_path.display());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| tls_error(&what_cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_error(&what_cert, e))?;
    if certs.is_empty() {
        return Err(tls_error(what_cert, "holds no PEM certificate"));
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| tls_error(&what_key, e))?;
    CertifiedKey::from_der(certs, key, &provider()).map_err(|e| {
        tls_error(
            format!("{what_key} with {what_cert}"),
            format!("not a usable pair: {e}"),
        )
    })
}

impl TlsCertificate {
    /// Loads the pair at `cert_path` and `key_path` (PEM).
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<TlsCertificate, TlsError> {
        let pair = read_pair(cert_path, key_path)?;
        Ok(TlsCertificate {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: RwLock::new(Arc::new(pair)),
        })
    }

    /// Reads the files again; the new pair serves the connections made from now on. On
    /// an error the old pair stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let pair = read_pair(&self.cert_path, &self.key_path)?;
        *self.current.write_locked() = Arc::new(pair);
        Ok(())
    }
}

impl ResolvesServerCert for TlsCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.read_locked()))
    }
}

/// A connection, plain or TLS.
pub trait Connection: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Connection for T {}

/// The address a request came from, as handlers see it (`ConnectInfo<ClientAddr>`).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

impl Connected<IncomingStream<'_, ApiListener>> for ClientAddr {
    fn connect_info(stream: IncomingStream<'_, ApiListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

/// The API's listener (see the module's documentation).
pub struct ApiListener {
    local: SocketAddr,
    inner: Inner,
}

enum Inner {
    Plain(TcpListener),
    Tls {
        ready: mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
        acceptor: JoinHandle<()>,
    },
}

impl Drop for ApiListener {
    fn drop(&mut self) {
        if let Inner::Tls { acceptor, .. } = &self.inner {
            acceptor.abort();
        }
    }
}

/// Waits a little after a failed accept (out of file descriptors, say) before the next.
async fn accept_failed(e: std::io::Error) {
    tracing::warn!(error = %e, "accepting a connection failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

impl ApiListener {
    /// Serves plain HTTP on `listener`.
    pub fn plain(listener: TcpListener) -> std::io::Result<ApiListener> {
        Ok(ApiListener {
            local: listener.local_addr()?,
            inner: Inner::Plain(listener),
        })
    }

    /// Serves HTTPS on `listener` with `cert`: HTTP/1.1, the only version the server speaks,
    /// which ALPN tells clients that would rather have HTTP/2.
    pub fn tls(listener: TcpListener, cert: Arc<TlsCertificate>) -> std::io::Result<ApiListener> {
        let local = listener.local_addr()?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .with_no_client_auth()
            .with_cert_resolver(cert);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let (tx, ready) = mpsc::channel(READY_CONNECTIONS);
        let acceptor = tokio::spawn(async move {
            loop {
                let (stream, addr) = match listener.accept().await {
                    Ok(s) => s,
                    Err(e) => {
                        accept_failed(e).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, addr)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(client = %addr, error = %e, "TLS handshake failed");
                        }
                        Err(_) => {
                            tracing::debug!(client = %addr, "TLS handshake timed out");
                        }
                    }
                });
            }
        });
        Ok(ApiListener {
            local,
            inner: Inner::Tls { ready, acceptor },
        })
    }
}

impl Listener for ApiListener {
    type Io = Box<dyn Connection>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match &mut self.inner {
            Inner::Plain(l) => {
                // axum's own accept of a TCP listener (it waits and retries on errors).
                let (s, addr) = Listener::accept(l).await;
                (Box::new(s), addr)
            }
            Inner::Tls { ready, .. } => match ready.recv().await {
                Some((s, addr)) => (Box::new(s), addr),
                // The acceptor ended (only when the listener is dropped): nothing comes.
                None => std::future::pending().await,
            },
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
