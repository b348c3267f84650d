//! `cluster.tls` (#25): how an instance reaches an etcd that serves
//! `https://`, with the keys an origin's TLS has (`ca`, `sni`, `verify`)
//! and a client certificate (`cert`, `key`) for an etcd started with
//! `--client-cert-auth`.

use super::listen::{check_sni, pem_certificates, read_file};
use super::ConfigError;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdTlsSection {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub sni: Option<String>,
    pub verify: Option<bool>,
}

/// Validated `cluster.tls`; the files are read again at each connection,
/// so that renewed certificates are picked up when etcd is reached anew.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdTls {
    /// PEM file of the CAs that sign etcd's certificates; `None`: the
    /// system's trusted CAs.
    pub ca: Option<PathBuf>,
    /// Client certificate and its key (PEM), for an etcd that asks for one.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// The name etcd's certificate must hold; empty: the server URL's host
    /// (an IP address works when the certificate holds it).
    pub sni: String,
}

/// `cluster.tls` for `servers`: every server `https://` or none. `None`
/// for plain `http://` servers.
pub fn validate(
    section: Option<EtcdTlsSection>,
    servers: &[String],
) -> Result<Option<EtcdTls>, ConfigError> {
    let secure = servers.iter().filter(|s| s.starts_with("https://")).count();
    if secure != 0 && secure != servers.len() {
        return Err(ConfigError::invalid(
            "cluster.servers",
            "list every server with https:// or none (one client reaches them all alike)",
        ));
    }
    if secure == 0 {
        return match section {
            Some(_) => Err(ConfigError::invalid(
                "cluster.tls",
                "the servers are http://: list them with https:// to reach them over TLS",
            )),
            None => Ok(None),
        };
    }
    let section = section.unwrap_or_default();
    if section.verify == Some(false) {
        return Err(ConfigError::invalid(
            "cluster.tls.verify",
            "etcd's certificate is always verified (it holds the order every origin follows): \
             give the CA that signed it in cluster.tls.ca",
        ));
    }
    let sni = section.sni.unwrap_or_default();
    check_sni("cluster.tls.sni", &sni)?;
    let ca = match section.ca {
        Some(path) => Some(pem_certificates("cluster.tls.ca", path)?),
        None => None,
    };
    let identity = match (section.cert, section.key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some((
            pem_certificates("cluster.tls.cert", cert)?,
            private_key("cluster.tls.key", key)?,
        )),
        (Some(_), None) => {
            return Err(ConfigError::invalid(
                "cluster.tls.key",
                "required with cert",
            ))
        }
        (None, Some(_)) => {
            return Err(ConfigError::invalid(
                "cluster.tls.cert",
                "required with key",
            ))
        }
    };
    Ok(Some(EtcdTls { ca, identity, sni }))
}

/// A PEM file holding a private key.
fn private_key(key: &str, path: PathBuf) -> Result<PathBuf, ConfigError> {
    match openssl::pkey::PKey::private_key_from_pem(&read_file(key, &path)?) {
        Ok(_) => Ok(path),
        Err(_) => Err(ConfigError::invalid(
            key,
            format!("{} holds no PEM private key", path.display()),
        )),
    }
}
