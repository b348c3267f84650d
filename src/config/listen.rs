//! The `listen` entries: a plain address (`"0.0.0.0:8080"`, HTTP/1.1 and
//! h2c-less cleartext), or `{address, tls: {cert, key}}` for a listener that
//! terminates TLS and offers HTTP/2 and HTTP/1.1 by ALPN.

use super::ConfigError;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ListenEntry {
    Address(String),
    Listener(ListenerSection),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSection {
    pub address: String,
    pub tls: Option<TlsSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A validated proxy listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub address: SocketAddr,
    pub tls: Option<TlsFiles>,
}

/// PEM files of a TLS listener: the certificate chain and its private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn validate(
    entries: &[ListenEntry],
    parse_addr: impl Fn(&str, &str) -> Result<SocketAddr, ConfigError>,
) -> Result<Vec<Listener>, ConfigError> {
    if entries.is_empty() {
        return Err(ConfigError::invalid(
            "listen",
            "at least one address is required",
        ));
    }
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| match entry {
            ListenEntry::Address(address) => Ok(Listener {
                address: parse_addr(&format!("listen[{i}]"), address)?,
                tls: None,
            }),
            ListenEntry::Listener(section) => Ok(Listener {
                address: parse_addr(&format!("listen[{i}].address"), &section.address)?,
                tls: match &section.tls {
                    None => None,
                    Some(tls) => Some(TlsFiles {
                        cert: readable(&format!("listen[{i}].tls.cert"), &tls.cert)?,
                        key: readable(&format!("listen[{i}].tls.key"), &tls.key)?,
                    }),
                },
            }),
        })
        .collect()
}

/// A PEM file that can be read now (its contents are checked at start-up).
fn readable(key: &str, path: &std::path::Path) -> Result<PathBuf, ConfigError> {
    std::fs::File::open(path)
        .map(|_| path.to_owned())
        .map_err(|e| ConfigError::invalid(key, format!("cannot read {}: {e}", path.display())))
}
