//! The `admin` section: where the admin API listens and the token its
//! write endpoints require. Off when the section is absent (a fixed default
//! port would collide between instances on one machine).

use super::{ConfigError, Limits};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    pub listen: Option<String>,
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub limits: super::limits::LimitsSection,
}

/// The address `admin.listen` takes when the section is present without it.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9101";

/// Longest token accepted: a token file is one line.
const MAX_TOKEN_BYTES: usize = 4096;

/// Validated admin settings.
#[derive(Clone, PartialEq, Eq)]
pub struct Admin {
    pub listen: SocketAddr,
    /// The bearer token of the write endpoints, read from `admin.token_file`
    /// (surrounding whitespace removed). `None`: write endpoints only from a
    /// loopback listener.
    pub token: Option<String>,
    /// Its connections (`admin.limits`, see [`Limits::side_listener`]).
    pub limits: Limits,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("Admin")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("limits", &self.limits)
            .finish()
    }
}

pub fn validate(
    section: Option<AdminSection>,
    parse_addr: impl Fn(&str, &str) -> Result<SocketAddr, ConfigError>,
) -> Result<Option<Admin>, ConfigError> {
    let Some(section) = section else {
        return Ok(None);
    };
    let listen = parse_addr(
        "admin.listen",
        section.listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN),
    )?;
    let token = match section.token_file {
        None => None,
        Some(path) => Some(read_token("admin.token_file", &path)?),
    };
    let limits =
        super::limits::validate_at(section.limits, "admin.limits", Limits::side_listener())?;
    Ok(Some(Admin {
        listen,
        token,
        limits,
    }))
}

/// The one token in the file at `path` (the value of `key`).
pub(super) fn read_token(key: &str, path: &std::path::Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::invalid(key, format!("cannot read {}: {e}", path.display())))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(ConfigError::invalid(
            key,
            format!("{} is empty", path.display()),
        ));
    }
    if token.len() > MAX_TOKEN_BYTES || token.chars().any(char::is_whitespace) {
        return Err(ConfigError::invalid(
            key,
            format!(
                "{} must hold one token of at most 4096 bytes, without spaces",
                path.display()
            ),
        ));
    }
    Ok(token.to_owned())
}
