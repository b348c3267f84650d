//! Which certificate a TLS listener presents: read from its files at
//! start-up, and again at each reload (`SIGHUP`), so that a renewed
//! certificate written over the old files is served without a restart.
//! Connections already open keep the certificate they were handshaken with.

use arc_swap::ArcSwap;
use async_trait::async_trait;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use pingora_core::listeners::TlsAccept;
use pingora_core::protocols::tls::TlsRef;
use pingora_core::tls::ext;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What is wrong with a listener's certificate files.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a PEM certificate chain: {source}")]
    NotChain {
        path: PathBuf,
        #[source]
        source: openssl::error::ErrorStack,
    },
    #[error("{0} holds no certificate")]
    NoCertificate(PathBuf),
    #[error("{path}: not a PEM private key: {source}")]
    NotKey {
        path: PathBuf,
        #[source]
        source: openssl::error::ErrorStack,
    },
    #[error("{key} is not the key of the certificate in {cert}")]
    KeyMismatch { key: PathBuf, cert: PathBuf },
}

/// A certificate chain (leaf first) and its private key.
struct Loaded {
    chain: Vec<X509>,
    key: PKey<Private>,
}

/// One TLS listener's certificate.
pub struct ListenerCertificate {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<Loaded>,
}

impl ListenerCertificate {
    /// Reads the PEM files of a certificate chain and its key; the error
    /// says what is wrong with them.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, CertificateError> {
        Ok(Arc::new(ListenerCertificate {
            current: ArcSwap::from_pointee(read(cert, key)?),
            cert: cert.to_owned(),
            key: key.to_owned(),
        }))
    }

    /// Checks the files as [`Self::load`] would (for `hothot -t`).
    pub fn check(cert: &Path, key: &Path) -> Result<(), CertificateError> {
        read(cert, key).map(|_| ())
    }

    /// Reads every listener's files again and, only if all of them are
    /// valid, switches every listener to its new certificate; otherwise the
    /// certificates in use stay.
    pub fn reload_all(certificates: &[Arc<Self>]) -> Result<(), CertificateError> {
        let loaded = certificates
            .iter()
            .map(|c| read(&c.cert, &c.key))
            .collect::<Result<Vec<_>, _>>()?;
        for (certificate, loaded) in certificates.iter().zip(loaded) {
            certificate.current.store(Arc::new(loaded));
        }
        Ok(())
    }

    /// Pingora's handshake callback presenting this certificate.
    pub fn presenter(self: &Arc<Self>) -> Box<dyn TlsAccept + Send + Sync> {
        Box::new(Presenter(self.clone()))
    }
}

fn read(cert: &Path, key: &Path) -> Result<Loaded, CertificateError> {
    let pem = |path: &Path| {
        std::fs::read(path).map_err(|source| CertificateError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let chain = X509::stack_from_pem(&pem(cert)?).map_err(|source| CertificateError::NotChain {
        path: cert.to_owned(),
        source,
    })?;
    let Some(leaf) = chain.first() else {
        return Err(CertificateError::NoCertificate(cert.to_owned()));
    };
    let key_path = key;
    let key =
        PKey::private_key_from_pem(&pem(key_path)?).map_err(|source| CertificateError::NotKey {
            path: key_path.to_owned(),
            source,
        })?;
    let matches = leaf.public_key().is_ok_and(|public| public.public_eq(&key));
    if !matches {
        return Err(CertificateError::KeyMismatch {
            key: key_path.to_owned(),
            cert: cert.to_owned(),
        });
    }
    Ok(Loaded { chain, key })
}

struct Presenter(Arc<ListenerCertificate>);

#[async_trait]
impl TlsAccept for Presenter {
    async fn certificate_callback(&self, ssl: &mut TlsRef) {
        let loaded = self.0.current.load();
        let mut result = ext::ssl_use_certificate(ssl, &loaded.chain[0])
            .and_then(|()| ext::ssl_use_private_key(ssl, &loaded.key));
        for intermediate in &loaded.chain[1..] {
            result = result.and_then(|()| ext::ssl_add_chain_cert(ssl, intermediate));
        }
        if let Err(e) = result {
            log::error!("TLS: cannot present the certificate: {e}");
        }
    }
}
