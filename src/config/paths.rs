//! Where hothot keeps its files when the configuration does not say: the
//! directories systemd made for the service (`StateDirectory=hothot`,
//! `RuntimeDirectory=hothot` set `$STATE_DIRECTORY` and
//! `$RUNTIME_DIRECTORY`), else `/var/lib/hothot` and `/run/hothot`, the
//! places a packaged daemon's state and pid file live (nginx's
//! `/run/nginx.pid`). Absolute either way: a default relative to wherever
//! hothot happened to be started would move with the shell's directory.

use std::path::PathBuf;

/// `replication.journal.dir` by default.
pub fn default_journal_dir() -> PathBuf {
    systemd_directory("STATE_DIRECTORY")
        .unwrap_or_else(|| PathBuf::from("/var/lib/hothot"))
        .join("journal")
}

/// `server.pid_file` as set (never empty), else its default.
pub fn pid_file(setting: Option<&str>) -> Result<PathBuf, super::ConfigError> {
    match setting {
        Some("") => Err(super::ConfigError::invalid(
            "server.pid_file",
            "must not be empty",
        )),
        Some(path) => Ok(path.into()),
        None => Ok(default_pid_file()),
    }
}

/// `server.pid_file` by default.
fn default_pid_file() -> PathBuf {
    systemd_directory("RUNTIME_DIRECTORY")
        .unwrap_or_else(|| PathBuf::from("/run/hothot"))
        .join("hothot.pid")
}

/// The first directory of a systemd directory variable (a colon-separated
/// list when a unit names several).
fn systemd_directory(variable: &str) -> Option<PathBuf> {
    let value = std::env::var_os(variable)?;
    let first = value.to_str()?.split(':').next()?.to_owned();
    (!first.is_empty()).then(|| PathBuf::from(first))
}
