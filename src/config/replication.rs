//! The `replication` section: how writes are mirrored to the peer origins.

use super::units::{ByteSize, HumanDuration};
use super::ConfigError;
use serde::Deserialize;
use std::net::IpAddr;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicationMode {
    /// Writes go to one origin only.
    Off,
    /// The client gets the primary's answer at once; peers follow behind.
    Async,
    /// The client's answer waits for `quorum` peers or `timeout`.
    Sync,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicateOn {
    /// Only writes the primary answered with 2xx.
    Success,
    Always,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnTimeout {
    /// Answer 504; the write stays queued for the late peers.
    Fail,
    /// Answer with the primary's response plus `X-Hothot-Replication: partial`.
    Degrade,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Oversize {
    /// 413 before anything reaches an origin.
    Reject,
    /// Proxy it to the primary only, and count it as skipped.
    Pass,
}

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
    /// Default `./data/journal` (relative to the working directory).
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationSection {
    pub mode: Option<ReplicationMode>,
    pub methods: Option<Vec<String>>,
    pub replicate_on: Option<ReplicateOn>,
    pub quorum: Option<usize>,
    pub timeout: Option<HumanDuration>,
    pub on_timeout: Option<OnTimeout>,
    pub max_body: Option<ByteSize>,
    pub oversize: Option<Oversize>,
    pub retry: Option<RetrySection>,
    pub max_pending: Option<usize>,
    pub trusted_sources: Option<Vec<String>>,
    pub journal: Option<JournalSection>,
    pub max_lag: Option<HumanDuration>,
    pub read_your_writes: Option<bool>,
    pub linger: Option<HumanDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySection {
    pub initial: Option<HumanDuration>,
    pub max: Option<HumanDuration>,
}

/// Validated replication settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// Default `async`.
    pub mode: ReplicationMode,
    /// Default POST, PUT, PATCH, DELETE. Reads can never be listed.
    pub methods: Vec<http::Method>,
    /// Default `success`.
    pub replicate_on: ReplicateOn,
    /// Peers that must acknowledge in `sync` mode. Default 1.
    pub quorum: usize,
    /// How long a `sync` client waits for the quorum. Default 2s.
    pub timeout: Duration,
    /// Default `fail`.
    pub on_timeout: OnTimeout,
    /// Largest replicated body. Default 8MiB.
    pub max_body: usize,
    /// Default `reject`.
    pub oversize: Oversize,
    /// First retry delay to a failing peer. Default 100ms.
    pub retry_initial: Duration,
    /// Longest retry delay. Default 10s.
    pub retry_max: Duration,
    /// Undelivered writes held per peer before new writes are refused. Default 100000.
    pub max_pending: usize,
    /// Clients whose `X-Hothot-Replicated-From` is honoured. Default none.
    pub trusted_sources: Vec<Cidr>,
    pub journal: JournalConfig,
    /// A peer whose oldest undelivered write is older than this gets no reads. Default 5s.
    pub max_lag: Duration,
    /// Reads after a client's own write go only to origins that have it. Default true.
    pub read_your_writes: bool,
    /// `async` only: how long a peer's few pending copies wait for more to
    /// join their batch. Default 1ms; `0s` sends each copy at once.
    pub linger: Duration,
}

/// An address range such as `10.0.0.0/8`; a bare address is a range of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Option<Cidr> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix.parse::<u8>().ok()?)),
            None => (text, None),
        };
        let network: IpAddr = address.trim().parse().ok()?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Cidr { network, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                same_prefix(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                same_prefix(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V4(net), IpAddr::V6(ip)) => ip
                .to_ipv4_mapped()
                .is_some_and(|ip| same_prefix(&net.octets(), &ip.octets(), self.prefix)),
            (IpAddr::V6(_), IpAddr::V4(_)) => false,
        }
    }
}

fn same_prefix(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let prefix = usize::from(prefix);
    let (whole, rest) = (prefix / 8, prefix % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    rest == 0 || (a[whole] ^ b[whole]) >> (8 - rest) == 0
}

const READS: [&str; 3] = ["GET", "HEAD", "OPTIONS"];

pub fn validate(
    section: ReplicationSection,
    origins: usize,
) -> Result<ReplicationConfig, ConfigError> {
    let mode = section.mode.unwrap_or(ReplicationMode::Async);
    let names = section.methods.unwrap_or_else(|| {
        ["POST", "PUT", "PATCH", "DELETE"]
            .map(String::from)
            .to_vec()
    });
    if names.is_empty() {
        return Err(ConfigError::invalid(
            "replication.methods",
            "list at least one method",
        ));
    }
    let mut methods = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let key = format!("replication.methods[{i}]");
        let upper = name.to_ascii_uppercase();
        if READS.contains(&upper.as_str()) {
            return Err(ConfigError::invalid(
                key,
                format!("{name} is a read: reads are never replicated"),
            ));
        }
        let method = http::Method::from_bytes(upper.as_bytes())
            .map_err(|_| ConfigError::invalid(&key, format!("{name:?} is not an HTTP method")))?;
        methods.push(method);
    }
    let peers = origins.saturating_sub(1);
    let quorum = section.quorum.unwrap_or(1);
    if mode == ReplicationMode::Sync && (quorum == 0 || quorum > peers) {
        return Err(ConfigError::invalid(
            "replication.quorum",
            format!(
                "{quorum} peers cannot acknowledge: the pool has {peers} peers besides the primary"
            ),
        ));
    }
    let timeout = section.timeout.map_or(Duration::from_secs(2), |d| d.0);
    if timeout.is_zero() {
        return Err(ConfigError::invalid(
            "replication.timeout",
            "must be longer than 0",
        ));
    }
    let (retry_initial, retry_max) = match section.retry {
        Some(r) => (
            r.initial.map_or(Duration::from_millis(100), |d| d.0),
            r.max.map_or(Duration::from_secs(10), |d| d.0),
        ),
        None => (Duration::from_millis(100), Duration::from_secs(10)),
    };
    if retry_initial.is_zero() {
        return Err(ConfigError::invalid(
            "replication.retry.initial",
            "must be longer than 0",
        ));
    }
    if retry_max < retry_initial {
        return Err(ConfigError::invalid(
            "replication.retry.max",
            "must be at least retry.initial",
        ));
    }
    let max_pending = section.max_pending.unwrap_or(100_000);
    if max_pending == 0 {
        return Err(ConfigError::invalid(
            "replication.max_pending",
            "must be at least 1",
        ));
    }
    let max_body = section.max_body.map_or(8 << 20, |s| s.0);
    let max_body = usize::try_from(max_body)
        .map_err(|_| ConfigError::invalid("replication.max_body", "too large for this machine"))?;
    let trusted_sources = section
        .trusted_sources
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, text)| {
            Cidr::parse(text).ok_or_else(|| {
                ConfigError::invalid(
                    format!("replication.trusted_sources[{i}]"),
                    format!("{text:?} is not an address range like 10.0.0.0/8 or 127.0.0.1"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let journal = validate_journal(section.journal.unwrap_or_default())?;
    let max_lag = section.max_lag.map_or(Duration::from_secs(5), |d| d.0);
    if max_lag.is_zero() {
        return Err(ConfigError::invalid(
            "replication.max_lag",
            "must be longer than 0",
        ));
    }
    let linger = section.linger.map_or(Duration::from_millis(1), |d| d.0);
    if linger > Duration::from_secs(1) {
        return Err(ConfigError::invalid(
            "replication.linger",
            "must be at most 1s (it delays every copy to the peers)",
        ));
    }
    Ok(ReplicationConfig {
        linger,
        journal,
        max_lag,
        read_your_writes: section.read_your_writes.unwrap_or(true),
        mode,
        methods,
        replicate_on: section.replicate_on.unwrap_or(ReplicateOn::Success),
        quorum,
        timeout,
        on_timeout: section.on_timeout.unwrap_or(OnTimeout::Fail),
        max_body,
        oversize: section.oversize.unwrap_or(Oversize::Reject),
        retry_initial,
        retry_max,
        max_pending,
        trusted_sources,
    })
}

fn validate_journal(section: JournalSection) -> Result<JournalConfig, ConfigError> {
    let dir = section.dir.unwrap_or_else(|| "./data/journal".into());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_ranges() {
        let lan = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(lan.contains("10.1.2.3".parse().unwrap()));
        assert!(!lan.contains("11.0.0.1".parse().unwrap()));
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(one.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("ten/8").is_none());
        let odd = Cidr::parse("192.168.0.0/23").unwrap();
        assert!(odd.contains("192.168.1.200".parse().unwrap()));
        assert!(!odd.contains("192.168.2.1".parse().unwrap()));
    }
}
