//! The keys of `replication` that say how far an origin may fall behind
//! before it is detached (`retain`, `detach_after`), and how a detached
//! origin is rebuilt from a peer (`resync`).

use super::units::{ByteSize, HumanDuration};
use super::ConfigError;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetainSection {
    pub bytes: Option<ByteSize>,
    pub age: Option<HumanDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResyncSection {
    pub command: Option<Vec<String>>,
    pub timeout: Option<HumanDuration>,
}

/// Validated retention, detach and resync settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// `retain.bytes`: the most journal kept for one origin that is behind;
    /// past it the origin is detached. Default 4GiB.
    pub bytes: u64,
    /// `retain.age`: the oldest write kept for one origin that is behind.
    /// Default 24h.
    pub age: Duration,
    /// How long an origin may keep failing one write its peers applied
    /// (with at least `retry.max_attempts` attempts) before it is detached.
    /// Default 5m.
    pub detach_after: Duration,
    /// `resync.command`: a program and its arguments (no shell), run after
    /// the cut of a resync; exit 0 completes it. Default none.
    pub resync_command: Option<Vec<String>>,
    /// `resync.timeout`: how long the command may run. Default 1h.
    pub resync_timeout: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            bytes: 4 << 30,
            age: Duration::from_secs(24 * 3600),
            detach_after: Duration::from_secs(300),
            resync_command: None,
            resync_timeout: Duration::from_secs(3600),
        }
    }
}

pub fn validate_retention(
    retain: Option<RetainSection>,
    detach_after: Option<HumanDuration>,
    resync: Option<ResyncSection>,
) -> Result<Retention, ConfigError> {
    let defaults = Retention::default();
    let retain = retain.unwrap_or_default();
    let resync = resync.unwrap_or_default();
    let bytes = retain.bytes.map_or(defaults.bytes, |b| b.0);
    if bytes == 0 {
        return Err(ConfigError::invalid(
            "replication.retain.bytes",
            "must be above 0",
        ));
    }
    let age = retain.age.map_or(defaults.age, |d| d.0);
    if age.is_zero() {
        return Err(ConfigError::invalid(
            "replication.retain.age",
            "must be longer than 0",
        ));
    }
    let detach_after = detach_after.map_or(defaults.detach_after, |d| d.0);
    let resync_timeout = resync.timeout.map_or(defaults.resync_timeout, |d| d.0);
    if resync_timeout.is_zero() {
        return Err(ConfigError::invalid(
            "replication.resync.timeout",
            "must be longer than 0",
        ));
    }
    let resync_command = match resync.command {
        None => None,
        Some(command) => Some(validate_command(command)?),
    };
    Ok(Retention {
        bytes,
        age,
        detach_after,
        resync_command,
        resync_timeout,
    })
}

/// A program and its arguments: the program must be named, and a name
/// without a slash must be found on `PATH` now, not at the first resync.
fn validate_command(command: Vec<String>) -> Result<Vec<String>, ConfigError> {
    let key = "replication.resync.command";
    let Some(program) = command.first() else {
        return Err(ConfigError::invalid(
            key,
            "list the program and its arguments",
        ));
    };
    if program.is_empty() {
        return Err(ConfigError::invalid(
            format!("{key}[0]"),
            "name the program",
        ));
    }
    let found = match program.contains('/') {
        true => PathBuf::from(program).is_file(),
        false => std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path).any(|dir| dir.join(program).is_file())
        }),
    };
    if !found {
        return Err(ConfigError::invalid(
            format!("{key}[0]"),
            format!("{program:?} is not a file (nor on PATH)"),
        ));
    }
    Ok(command)
}
