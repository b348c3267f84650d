//! The `access_log` section: where request lines go and in which format.
//! Off when the section is absent, as nginx's `access_log off`.

use super::ConfigError;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogSection {
    pub path: String,
    pub format: Option<AccessLogFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    /// nginx's `combined`, then hothot's fields as `key=value`.
    #[default]
    Combined,
    /// One JSON object per line.
    Json,
}

/// Validated access log settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogConfig {
    /// `None`: standard output.
    pub path: Option<PathBuf>,
    pub format: AccessLogFormat,
}

pub fn validate(section: Option<AccessLogSection>) -> Result<Option<AccessLogConfig>, ConfigError> {
    let Some(section) = section else {
        return Ok(None);
    };
    let path = match section.path.as_str() {
        "" => {
            return Err(ConfigError::invalid(
                "access_log.path",
                "must be stdout or a file path",
            ))
        }
        "stdout" | "-" => None,
        file => Some(PathBuf::from(file)),
    };
    if let Some(dir) = path.as_ref().and_then(|p| p.parent()) {
        if !dir.as_os_str().is_empty() && !dir.is_dir() {
            return Err(ConfigError::invalid(
                "access_log.path",
                format!("{} is not a directory", dir.display()),
            ));
        }
    }
    Ok(Some(AccessLogConfig {
        path,
        format: section.format.unwrap_or_default(),
    }))
}
