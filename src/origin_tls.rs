//! How hothot's own connections reach an origin that speaks TLS
//! (`origins[].tls`): health probes and replicated copies. Proxied requests
//! go through Pingora's connector, configured from the same settings (see
//! [`TlsClient::apply_to`]).

use crate::config::OriginTls;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use openssl::x509::X509;
use pingora_core::upstreams::peer::HttpPeer;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

/// Why an origin's TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    ReadCa {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: not PEM certificates: {source}")]
    NotPem {
        path: std::path::PathBuf,
        #[source]
        source: openssl::error::ErrorStack,
    },
    #[error("{0} holds no certificate")]
    NoCertificate(std::path::PathBuf),
    #[error("{0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
}

/// One origin's TLS client settings, built once when the origin joins.
pub struct TlsClient {
    connector: SslConnector,
    settings: OriginTls,
    /// The CAs of `settings.ca`, for Pingora's peer options.
    ca: Option<Arc<Box<[X509]>>>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("settings", &self.settings)
            .finish()
    }
}

impl TlsClient {
    /// Builds the client; the error names what is wrong with the CA file.
    pub fn new(settings: &OriginTls) -> Result<Self, TlsError> {
        let mut builder = SslConnector::builder(SslMethod::tls_client())?;
        let ca = match &settings.ca {
            None => None,
            Some(path) => {
                let pem = std::fs::read(path).map_err(|source| TlsError::ReadCa {
                    path: path.clone(),
                    source,
                })?;
                let certificates =
                    X509::stack_from_pem(&pem).map_err(|source| TlsError::NotPem {
                        path: path.clone(),
                        source,
                    })?;
                if certificates.is_empty() {
                    return Err(TlsError::NoCertificate(path.clone()));
                }
                for certificate in &certificates {
                    builder.cert_store_mut().add_cert(certificate.clone())?;
                }
                Some(Arc::new(certificates.into_boxed_slice()))
            }
        };
        if !settings.verify {
            builder.set_verify(SslVerifyMode::NONE);
        }
        Ok(TlsClient {
            connector: builder.build(),
            settings: settings.clone(),
            ca,
        })
    }

    /// Makes Pingora's peer for this origin speak TLS the same way.
    pub fn apply_to(&self, peer: &mut HttpPeer) {
        peer.scheme = pingora_core::upstreams::peer::Scheme::HTTPS;
        peer.sni = self.settings.sni.clone();
        peer.options.verify_cert = self.settings.verify;
        peer.options.verify_hostname = self.settings.verify && !self.settings.sni.is_empty();
        peer.options.ca = self.ca.clone();
    }

    async fn handshake(&self, tcp: TcpStream) -> io::Result<SslStream<TcpStream>> {
        let mut config = self.connector.configure().map_err(io::Error::other)?;
        let sni = &self.settings.sni;
        config.set_use_server_name_indication(!sni.is_empty());
        config.set_verify_hostname(self.settings.verify && !sni.is_empty());
        let ssl = config.into_ssl(sni).map_err(io::Error::other)?;
        let mut stream = SslStream::new(ssl, tcp).map_err(io::Error::other)?;
        Pin::new(&mut stream)
            .connect()
            .await
            .map_err(|e| io::Error::other(format!("TLS handshake: {e}")))?;
        Ok(stream)
    }
}

/// A connection to an origin, in clear or over TLS.
pub enum OriginStream {
    Plain(TcpStream),
    Tls(Box<SslStream<TcpStream>>),
}

impl OriginStream {
    /// Connects to `address`, with a TLS handshake when `tls` is set.
    pub async fn connect(address: SocketAddr, tls: Option<&TlsClient>) -> io::Result<Self> {
        let tcp = TcpStream::connect(address).await?;
        match tls {
            None => Ok(OriginStream::Plain(tcp)),
            Some(client) => Ok(OriginStream::Tls(Box::new(client.handshake(tcp).await?))),
        }
    }

    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            OriginStream::Plain(tcp) => tcp,
            OriginStream::Tls(tls) => tls.get_ref(),
        }
    }
}

impl AsyncRead for OriginStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            OriginStream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            OriginStream::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for OriginStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            OriginStream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            OriginStream::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            OriginStream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            OriginStream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            OriginStream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            OriginStream::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}
