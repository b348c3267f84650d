//! The `replication.journal` section: where and how durably writes are kept.

use super::units::{ByteSize, HumanDuration};
use super::ConfigError;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// Group-commit fdatasync before the client is answered.
    Always,
    /// fdatasync every `fsync_interval`; a power loss can lose that window.
    Interval,
    /// Never fdatasync on the write path; the OS flushes (process crashes lose nothing).
    Off,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalSection {
    pub dir: Option<std::path::PathBuf>,
    pub fsync: Option<FsyncPolicy>,
    pub fsync_interval: Option<HumanDuration>,
    pub commit_delay: Option<HumanDuration>,
    pub max_bytes: Option<ByteSize>,
}

/// Validated journal settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalConfig {
    /// Default [`super::paths::default_journal_dir`]: `/var/lib/hothot/journal`.
    pub dir: std::path::PathBuf,
    /// Default `always`.
    pub fsync: FsyncPolicy,
    /// Default 10ms.
    pub fsync_interval: Duration,
    /// With `fsync: always`, how often at most a busy journal starts an
    /// fdatasync, so that more writes share each one. Default 300us; at most 10ms.
    pub commit_delay: Duration,
    /// Default 1GiB.
    pub max_bytes: u64,
}

pub fn validate_journal(section: JournalSection) -> Result<JournalConfig, ConfigError> {
    let dir = section
        .dir
        .unwrap_or_else(super::paths::default_journal_dir);
    if dir.as_os_str().is_empty() {
        return Err(ConfigError::invalid(
            "replication.journal.dir",
            "must not be empty",
        ));
    }
    let fsync_interval = section
        .fsync_interval
        .map_or(Duration::from_millis(10), |d| d.0);
    if fsync_interval.is_zero() {
        return Err(ConfigError::invalid(
            "replication.journal.fsync_interval",
            "must be longer than 0",
        ));
    }
    let commit_delay = section
        .commit_delay
        .map_or(Duration::from_micros(300), |d| d.0);
    if commit_delay > Duration::from_millis(10) {
        return Err(ConfigError::invalid(
            "replication.journal.commit_delay",
            "must be at most 10ms: a write of a busy journal can wait that long",
        ));
    }
    let max_bytes = section.max_bytes.map_or(1 << 30, |b| b.0);
    if max_bytes < 1 << 20 {
        return Err(ConfigError::invalid(
            "replication.journal.max_bytes",
            "must be at least 1MiB",
        ));
    }
    Ok(JournalConfig {
        dir,
        fsync: section.fsync.unwrap_or(FsyncPolicy::Always),
        fsync_interval,
        commit_delay,
        max_bytes,
    })
}
