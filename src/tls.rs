//! TLS on the gRPC listener (rustls, ring provider), with optional client
//! certificates (mTLS).
//!
//! The server certificate, its key and the client CA are read from PEM
//! files. [`TlsServer::reload`] reads them again and swaps the whole rustls
//! configuration atomically: handshakes that start afterwards use the new
//! one, established connections keep theirs (nothing is dropped).
//!
//! Handshakes run in their own tasks, bounded by [`HANDSHAKE_TIMEOUT`], so
//! a slow or silent client never holds up the accept loop; a failed
//! handshake is logged and its connection closed, never handed to the
//! server. The identity of a verified client certificate (SPIFFE ID, DNS
//! SANs) is read once per connection and travels with every request of
//! that connection as [`PeerInfo`] (tonic's connect info).
//!
//! With a client CA, a client must present a certificate it signed, unless
//! `tls_client_cert_required = false` (then callers without one use bearer
//! tokens); one that the CA did not sign always fails the handshake.

use std::{
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use arc_swap::ArcSwap;
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::{
    rustls::{self, server::WebPkiClientVerifier, RootCertStore, ServerConfig},
    server::TlsStream,
    TlsAcceptor,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

/// How long a client has to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; beyond, accepting waits (the kernel's
/// backlog queues new connections), so a flood of silent clients costs a
/// bounded number of tasks.
pub const MAX_HANDSHAKES: usize = 1024;

/// Where the PEM files are (`GATEWAY_TLS_CERT_FILE`, `GATEWAY_TLS_KEY_FILE`,
/// `GATEWAY_TLS_CLIENT_CA_FILE`).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
    /// With a client CA: a client without a certificate fails the handshake.
    pub client_cert_required: bool,
}

/// The identity a verified client certificate gives its caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertIdentity {
    /// URI SANs that are SPIFFE IDs (`spiffe://...`).
    pub spiffe_ids: Vec<String>,
    /// DNS SANs, lower case.
    pub dns_names: Vec<String>,
}

/// What the gateway knows of a gRPC connection's peer, in every request's
/// extensions: the connect info of TLS connections and of plaintext ones
/// ([`crate::server::Unvectored`], which have no certificate). tonic's own
/// `Request::remote_addr()` looks for its `TcpConnectInfo` and so finds
/// nothing: read `remote_addr` here.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote_addr: Option<SocketAddr>,
    /// Set when the client presented a certificate the client CA verified.
    pub certificate: Option<Arc<CertIdentity>>,
    /// Marked by the connection's reads and writes ([`crate::conn_activity`]).
    pub activity: Arc<crate::conn_activity::Activity>,
}

/// The listener's TLS configuration, swappable on reload.
#[derive(Debug)]
pub struct TlsServer {
    files: TlsFiles,
    config: ArcSwap<ServerConfig>,
}

impl TlsServer {
    /// Reads the files; an error names the setting and the problem, never
    /// the file's contents.
    pub fn load(files: TlsFiles) -> anyhow::Result<Self> {
        let config = server_config(&files)?;
        Ok(Self {
            files,
            config: ArcSwap::from_pointee(config),
        })
    }

    /// Whether clients may present certificates (a client CA is set).
    pub fn mutual(&self) -> bool {
        self.files.client_ca.is_some()
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Reads the files again. Returns the new configuration without
    /// installing it: [`TlsServer::install`] does, so a reload of several
    /// sources can check them all before swapping any.
    pub fn read(&self) -> anyhow::Result<Arc<ServerConfig>> {
        Ok(Arc::new(server_config(&self.files)?))
    }

    /// New handshakes use `config`; established connections keep theirs.
    pub fn install(&self, config: Arc<ServerConfig>) {
        self.config.store(config);
    }

    /// Accepts TCP connections on `listener` and yields those whose TLS
    /// handshake succeeded. Stops accepting when the stream is dropped.
    pub fn incoming(
        self: &Arc<Self>,
        listener: TcpListener,
    ) -> ReceiverStream<io::Result<TlsConn>> {
        let (tx, rx) = mpsc::channel(64);
        let tls = self.clone();
        let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let permit = tokio::select! {
                    p = handshakes.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => return,
                    },
                    _ = tx.closed() => return,
                };
                let (tcp, remote) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Out of file descriptors and the like: pause
                            // rather than spin.
                            tracing::warn!("gRPC listener: accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    _ = tx.closed() => return,
                };
                // Nagle off, as on the plaintext listener (077d383): a small
                // answer must not wait for the caller's delayed ACK.
                let _ = tcp.set_nodelay(true);
                let acceptor = TlsAcceptor::from(tls.config.load_full());
                let tx = tx.clone();
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                    drop(permit);
                    match handshake {
                        Ok(Ok(stream)) => {
                            let certificate = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .map(|certs| Arc::new(identity(certs)));
                            let peer = PeerInfo {
                                remote_addr: Some(remote),
                                certificate,
                                activity: Arc::default(),
                            };
                            let _ = tx.send(Ok(TlsConn { stream, peer })).await;
                        }
                        Ok(Err(e)) => {
                            tracing::info!(%remote, "TLS handshake refused: {e}");
                        }
                        Err(_) => {
                            tracing::info!(%remote, "TLS handshake timed out");
                        }
                    }
                });
            }
        });
        ReceiverStream::new(rx)
    }
}

/// The identity in a verified chain's end-entity certificate.
fn identity(certs: &[CertificateDer<'_>]) -> CertIdentity {
    use x509_parser::{certificate::X509Certificate, extensions::GeneralName, prelude::FromDer};
    let mut id = CertIdentity::default();
    let Some(leaf) = certs.first() else {
        return id;
    };
    let Ok((_, cert)) = X509Certificate::from_der(leaf.as_ref()) else {
        return id;
    };
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(uri) if uri.starts_with("spiffe://") => {
                    id.spiffe_ids.push((*uri).to_owned());
                }
                GeneralName::DNSName(dns) => id.dns_names.push(dns.to_ascii_lowercase()),
                _ => {}
            }
        }
    }
    id
}

/// Builds the rustls configuration from the files.
fn server_config(files: &TlsFiles) -> anyhow::Result<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs(&files.cert, "GATEWAY_TLS_CERT_FILE")?;
    let key = read_key(&files.key)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("TLS: {e}"))?;
    let builder = match &files.client_ca {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(path, "GATEWAY_TLS_CLIENT_CA_FILE")? {
                roots.add(cert).map_err(|e| {
                    anyhow::anyhow!(
                        "GATEWAY_TLS_CLIENT_CA_FILE: {} holds a certificate that is not a CA: {e}",
                        path.display()
                    )
                })?;
            }
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if !files.client_cert_required {
                // Callers without a certificate still authenticate with a
                // bearer token; a certificate from another CA fails here.
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier
                .build()
                .map_err(|e| anyhow::anyhow!("GATEWAY_TLS_CLIENT_CA_FILE: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        anyhow::anyhow!(
            "GATEWAY_TLS_KEY_FILE: the key does not fit the certificate of GATEWAY_TLS_CERT_FILE: {e}"
        )
    })?;
    // gRPC is HTTP/2 only.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

pub(crate) fn read_certs(
    path: &Path,
    setting: &str,
) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let text = std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("{setting}: cannot read {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| {
            anyhow::anyhow!(
                "{setting}: {} is not a PEM file of certificates",
                path.display()
            )
        })?;
    if certs.is_empty() {
        anyhow::bail!("{setting}: {} holds no certificate", path.display());
    }
    Ok(certs)
}

/// The private key; the error never quotes the file (a malformed key file
/// is still a key).
fn read_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let text = std::fs::read(path).map_err(|e| {
        anyhow::anyhow!("GATEWAY_TLS_KEY_FILE: cannot read {}: {e}", path.display())
    })?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|_| {
        anyhow::anyhow!(
            "GATEWAY_TLS_KEY_FILE: {} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
            path.display()
        )
    })
}

/// A TLS connection and what is known of its peer.
#[derive(Debug)]
pub struct TlsConn {
    stream: TlsStream<TcpStream>,
    peer: PeerInfo,
}

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.peer.activity.touch();
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.peer.activity.touch();
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    /// No vectored writes, as on plaintext connections
    /// ([`crate::server::Unvectored`]): HTTP/2 then gathers small frames in
    /// its buffer, and a unary answer is one write (one TLS record) instead
    /// of two.
    fn is_write_vectored(&self) -> bool {
        false
    }
}
