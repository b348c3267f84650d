//! The config file as written by users: serde structs mirroring the YAML.
//!
//! Every struct denies unknown keys, so a misspelt key is an error that names
//! it instead of a setting silently ignored. These types are only read by
//! [`super::validate`], which turns them into the plain types the proxy uses.

use super::replication::ReplicationSection;
use super::units::HumanDuration;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerSection,
    pub listen: Vec<super::listen::ListenEntry>,
    #[serde(default)]
    pub metrics: MetricsSection,
    pub origins: Vec<OriginSection>,
    #[serde(default)]
    pub health: HealthSection,
    #[serde(default)]
    pub timeouts: TimeoutsSection,
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default)]
    pub replication: ReplicationSection,
    #[serde(default)]
    pub limits: super::limits::LimitsSection,
    #[serde(default)]
    pub balancing: super::balancing::BalancingSection,
    pub admin: Option<super::admin::AdminSection>,
    pub access_log: Option<super::access_log::AccessLogSection>,
    pub cluster: Option<super::cluster::ClusterSection>,
}

fn default_retries() -> u32 {
    2
}

/// Pingora server settings passed through to `ServerConf`. Only the keys that
/// make sense for hothot are accepted; the rest are decided by hothot.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub threads: Option<usize>,
    pub work_stealing: Option<bool>,
    pub daemon: Option<bool>,
    pub error_log: Option<String>,
    pub pid_file: Option<String>,
    pub upgrade_sock: Option<String>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub grace_period_seconds: Option<u64>,
    pub graceful_shutdown_timeout_seconds: Option<u64>,
    pub upstream_keepalive_pool_size: Option<usize>,
    pub listener_tasks_per_fd: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    pub listen: Option<String>,
    #[serde(default)]
    pub limits: super::limits::LimitsSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginSection {
    pub name: String,
    pub address: String,
    pub capacity: u32,
    pub tls: Option<super::listen::OriginTlsSection>,
    pub join: Option<Join>,
    pub resolve: Option<super::units::HumanDuration>,
}

/// How an origin joins a pool that already has writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Join {
    /// Detached until a resync copies a peer's data to it (the default).
    #[default]
    Resync,
    /// From the next write on, with no history (caches, stateless backends).
    Now,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKindName {
    Http,
    Tcp,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    pub kind: Option<ProbeKindName>,
    pub path: Option<String>,
    pub expect_status: Option<Vec<u16>>,
    pub interval: Option<HumanDuration>,
    pub timeout: Option<HumanDuration>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
    pub connect_every: Option<u32>,
    #[serde(default)]
    pub passive: PassiveSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveSection {
    pub failures: Option<u32>,
    pub eject: Option<HumanDuration>,
    pub max_ejection_percent: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsSection {
    pub connect: Option<HumanDuration>,
    pub read: Option<HumanDuration>,
    pub write: Option<HumanDuration>,
    pub idle: Option<HumanDuration>,
    pub tunnel_idle: Option<HumanDuration>,
}
