//! TLS on both sides. The `listen` entries: a plain address
//! (`"0.0.0.0:8080"`, cleartext HTTP/1.1), or `{address, tls: {cert, key}}`
//! for a listener that terminates TLS and offers HTTP/2 and HTTP/1.1 by
//! ALPN. And `origins[].tls: {sni, verify, ca}`: an origin reached over TLS.

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
                    Some(tls) => {
                        let cert = readable(&format!("listen[{i}].tls.cert"), &tls.cert)?;
                        let key = readable(&format!("listen[{i}].tls.key"), &tls.key)?;
                        crate::certificates::ListenerCertificate::check(&cert, &key).map_err(
                            |e| ConfigError::invalid(format!("listen[{i}].tls"), e.to_string()),
                        )?;
                        Some(TlsFiles { cert, key })
                    }
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginTlsSection {
    pub sni: Option<String>,
    pub verify: Option<bool>,
    pub ca: Option<PathBuf>,
}

/// How an origin is reached over TLS (proxied requests, probes and
/// replicated copies alike).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginTls {
    /// Server name sent (SNI) and, when verifying, the name the certificate
    /// must hold; empty: no SNI, and only the chain is verified.
    pub sni: String,
    /// Verify the origin's certificate. Default true.
    pub verify: bool,
    /// PEM file of the CAs to trust instead of the system's.
    pub ca: Option<PathBuf>,
}

pub fn validate_origin_tls(
    index: usize,
    section: Option<&OriginTlsSection>,
) -> Result<Option<OriginTls>, ConfigError> {
    let Some(section) = section else {
        return Ok(None);
    };
    let sni = section.sni.clone().unwrap_or_default();
    check_sni(&format!("origins[{index}].tls.sni"), &sni)?;
    let ca = match &section.ca {
        None => None,
        Some(path) => Some(pem_certificates(
            &format!("origins[{index}].tls.ca"),
            path.clone(),
        )?),
    };
    Ok(Some(OriginTls {
        sni,
        verify: section.verify.unwrap_or(true),
        ca,
    }))
}

/// A server name to send and verify (SNI): empty, or a host name.
pub(super) fn check_sni(key: &str, sni: &str) -> Result<(), ConfigError> {
    let host_name = sni
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'));
    match host_name {
        true => Ok(()),
        false => Err(ConfigError::invalid(
            key,
            format!("{sni:?} is not a host name"),
        )),
    }
}

/// The contents of the file `key` names.
pub(super) fn read_file(key: &str, path: &std::path::Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path)
        .map_err(|e| ConfigError::invalid(key, format!("cannot read {}: {e}", path.display())))
}

/// A PEM file holding at least one certificate (CAs to trust, or a
/// certificate to present).
pub(super) fn pem_certificates(key: &str, path: PathBuf) -> Result<PathBuf, ConfigError> {
    match openssl::x509::X509::stack_from_pem(&read_file(key, &path)?) {
        Ok(found) if !found.is_empty() => Ok(path),
        _ => Err(ConfigError::invalid(
            key,
            format!("{} holds no PEM certificate", path.display()),
        )),
    }
}
