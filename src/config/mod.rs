//! Configuration: which origins exist, how they are probed, how the proxy listens.
//!
//! Two layers, as in River: `file` holds the serde structs that mirror the
//! YAML file, and [`validate`] turns them into the plain types below, which are
//! what the rest of hothot reads. Every mistake is reported as a
//! [`ConfigError`] naming the offending key (`origins[1].capacity`).

pub mod access_log;
pub mod admin;
pub mod balancing;
mod cidr;
pub mod cluster;
pub mod etcd_tls;
pub mod file;
mod journal;
mod limits;
pub mod listen;
mod origins;
pub mod paths;
pub mod replication;
pub mod retention;
pub mod routes;
mod shape;
pub mod units;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use access_log::{AccessLogConfig, AccessLogFormat};
pub use admin::Admin;
pub use balancing::{Balancing, LimitMode};
pub use cidr::Cidr;
pub use cluster::Cluster;
pub use file::Join;
pub use journal::{FsyncPolicy, JournalConfig};
pub use limits::Limits;
pub use listen::{Listener, OriginTls, TlsFiles};
pub(crate) use origins::lookup;
pub use replication::{OnTimeout, Order, OrderKey, Oversize, ReplicateOn, ReplicationConfig};
pub use validate::{validate, MAX_RETRIES};

/// How writes reach the other origins (`replication.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicationMode {
    /// Writes go to one origin only.
    Off,
    /// The client gets the primary's answer at once; peers follow behind.
    Async,
    /// The client's answer waits for `quorum` peers or `timeout`.
    Sync,
}

impl ReplicationMode {
    /// As written in the config file.
    pub fn name(self) -> &'static str {
        match self {
            ReplicationMode::Off => "off",
            ReplicationMode::Async => "async",
            ReplicationMode::Sync => "sync",
        }
    }
}

/// Why a config file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Syntax, types, unknown keys: serde_yaml's message starts with the key's path.
    #[error("{0}")]
    Parse(#[source] serde_yaml::Error),
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
    /// Too large or too deeply nested to be a hothot config.
    #[error("{0}")]
    Shape(String),
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: file::ServerSection,
    /// Where the running hothot writes its pid (`server.pid_file`), which
    /// `hothot -s` reads. Default [`paths::pid_file`]'s: `/run/hothot/hothot.pid`.
    pub pid_file: PathBuf,
    /// Proxy listeners; at least one.
    pub listen: Vec<Listener>,
    /// Where `/metrics` is served. Default `127.0.0.1:9100`.
    pub metrics_listen: SocketAddr,
    /// Its connections (`metrics.limits`, see [`Limits::side_listener`]).
    pub metrics_limits: Limits,
    /// The admin API; `None` when the `admin` section is absent.
    pub admin: Option<Admin>,
    /// The access log; `None` (off) when the section is absent.
    pub access_log: Option<AccessLogConfig>,
    /// At least one origin, unique names and addresses, not all drained.
    pub origins: Vec<OriginConfig>,
    pub health: HealthConfig,
    pub timeouts: Timeouts,
    /// Extra attempts on another origin. Default 2.
    pub retries: u32,
    pub replication: ReplicationConfig,
    pub limits: Limits,
    pub balancing: Balancing,
    /// Several instances sharing one order on etcd; `None`: one instance.
    pub cluster: Option<Cluster>,
    /// Settings that are valid but have no effect, one sentence each.
    pub warnings: Vec<String>,
    /// SHA-256 of the file's text (hex).
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginConfig {
    pub name: String,
    /// Where it is: `address` as written if it is an IP address, else the
    /// first address its DNS name resolved to (see [`origins`]).
    pub address: SocketAddr,
    /// `address` as written (`10.0.0.5:80`, `app1.internal:80`): what
    /// identifies the origin's server across reloads.
    pub written_address: String,
    /// The DNS name in `address`, when it is one.
    pub host_name: Option<String>,
    /// How often the name is resolved again in the background
    /// (`origins[].resolve`); `None`: at start-up and reloads only.
    pub resolve: Option<Duration>,
    /// Requests per second the origin can take; 0 means drained.
    pub capacity: u32,
    /// Reached over TLS when set.
    pub tls: Option<OriginTls>,
    /// How it joins a pool with history. Default `resync`.
    pub join: Join,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeKind {
    /// `GET path`; healthy when the status is one of `expect_status` (default `[200]`).
    Http {
        path: String,
        expect_status: Vec<u16>,
    },
    /// Healthy when a TCP connection opens.
    Tcp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// Default: HTTP `GET /health` expecting 200.
    pub kind: ProbeKind,
    /// Default 1s.
    pub interval: Duration,
    /// Default 500ms.
    pub timeout: Duration,
    /// Consecutive successes that bring a down origin up. Default 2.
    pub rise: u32,
    /// Consecutive failures that take an up origin down. Default 2.
    pub fall: u32,
    /// HTTP probes carried by one connection before a fresh connect
    /// (1 = a fresh connection per probe). Default 10.
    pub connect_every: u32,
    pub passive: PassiveConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassiveConfig {
    /// Consecutive live-traffic failures (connect errors, upstream errors, 5xx)
    /// that eject an origin. Default 3; 0 turns passive ejection off.
    pub failures: u32,
    /// How long an ejected origin gets no traffic. Default 10s.
    pub eject: Duration,
    /// Most origins (percent of the pool, rounded down, but at least one
    /// of two or more unless 0; a lone origin never) ejected at once, Envoy's `max_ejection_percent`.
    /// Default 50: live failures that hit every origin at once look like
    /// one bad path or client, not like the whole pool failing.
    pub max_ejection_percent: u32,
}

/// Timeouts of every upstream connection (Pingora's default is none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Default 1s.
    pub connect: Duration,
    /// Default 30s.
    pub read: Duration,
    /// Default 30s.
    pub write: Duration,
    /// How long an idle upstream connection is kept for reuse. Default 60s.
    pub idle: Duration,
    /// How long an upgraded connection (WebSocket, anything after `101`)
    /// may pass no byte either way before it is closed; `read` does not
    /// apply to it. Default 1h, HAProxy's usual `timeout tunnel`: nginx
    /// keeps its 60s `proxy_read_timeout`, which cuts an idle WebSocket
    /// whose application pings less often.
    pub tunnel_idle: Duration,
}

/// Reads, parses and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let read_error = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    // Refused before it is read: a config file is never this large.
    let length = std::fs::metadata(path).map_err(read_error)?.len();
    if length > shape::MAX_BYTES as u64 {
        return Err(ConfigError::Shape(format!(
            "the file is {length} bytes; a config file may hold at most {}",
            shape::MAX_BYTES
        )));
    }
    let text = std::fs::read_to_string(path).map_err(read_error)?;
    parse(&text)
}

/// Where the hothot running with the file at `path` writes its pid
/// (`server.pid_file`, else its default), read without validating the rest
/// of the file: `hothot -s reopen|stop|quit` must reach the process even
/// when the file no longer validates (an origin's name that stopped
/// resolving, say, while logrotate asks for a reopen).
pub fn pid_file_of(path: &Path) -> Result<PathBuf, ConfigError> {
    #[derive(serde::Deserialize)]
    struct Server {
        pid_file: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct File {
        server: Option<Server>,
    }
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    shape::check(&text)?;
    let file: File = serde_yaml::from_str(&text).map_err(ConfigError::Parse)?;
    paths::pid_file(file.server.and_then(|s| s.pid_file).as_deref())
}

/// Parses and validates config text.
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    shape::check(text)?;
    let file: file::FileConfig = serde_yaml::from_str(text).map_err(ConfigError::Parse)?;
    let mut config = validate(file)?;
    config.sha256 = sha256_hex(text.as_bytes());
    Ok(config)
}

/// The SHA-256 of a config file's bytes, as `sha256sum` prints it: what
/// `/status` reports as the configuration's version.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
