//! The `replication` section: how writes reach every origin, and in which order.

use super::cidr::Cidr;
use super::journal::{validate_journal, JournalConfig, JournalSection};
use super::retention::{validate_retention, ResyncSection, RetainSection, Retention};
use super::units::{ByteSize, HumanDuration};
use super::{ConfigError, ReplicationMode};
use serde::Deserialize;
use std::time::Duration;

/// In which order the origins receive the writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// One sequence for every write: every origin, the primary included,
    /// receives every write in the journal's order.
    Total,
    /// The same per key: writes with the same key arrive in sequence order,
    /// writes to different keys may overtake each other.
    Key,
    /// The primary applies a write when it arrives, peers follow; origins
    /// must resolve conflicts themselves by `X-Hothot-Version`.
    Version,
}

impl Order {
    /// Does every origin, the primary included, receive writes through the sequence?
    pub fn is_sequenced(self) -> bool {
        self != Order::Version
    }
}

/// What makes two writes "the same key" under `order: key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderKey {
    /// The request path, without the query.
    Path,
    /// The value of this request header (writes without it share one key).
    Header(http::HeaderName),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicateOn {
    /// Only writes the primary answered with 2xx.
    Success,
    Always,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
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
    pub order: Option<Order>,
    pub order_key: Option<String>,
    pub verify: Option<VerifySection>,
    pub retain: Option<RetainSection>,
    pub detach_after: Option<HumanDuration>,
    pub resync: Option<ResyncSection>,
    pub routes: Option<Vec<super::routes::RouteSection>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifySection {
    pub sample: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySection {
    pub initial: Option<HumanDuration>,
    pub max: Option<HumanDuration>,
    pub max_attempts: Option<u32>,
}

/// Validated replication settings.
#[derive(Debug, Clone, PartialEq)]
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
    /// Undelivered writes held in memory per peer; more wait in the journal
    /// and are read back as the peer drains. Default 1000.
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
    /// Default `total`.
    pub order: Order,
    /// `order: key` only. Default the path.
    pub order_key: OrderKey,
    /// Fraction of writes whose path is read back from every origin and
    /// compared. Default 0.01; 0 turns it off.
    pub verify_sample: f64,
    /// Failed attempts (a 5xx, closed or timed out before the answer) one
    /// origin may make at one write while its probes pass, before it gives
    /// the write up. Default 10.
    pub retry_max_attempts: u32,
    /// `retain`, `detach_after`, `resync`.
    pub retention: Retention,
    /// `routes`: the first that matches a request decides what it is.
    pub routes: Vec<crate::routes::Route>,
}

/// Default `retry.max_attempts`: with the default backoff (100ms doubling to
/// 10s) ten attempts span about 20-40s, longer than a typical restart or
/// overload blip, yet a write that one origin can never apply (a bug on that
/// origin) holds it up for less than a minute.
const DEFAULT_MAX_ATTEMPTS: u32 = 10;
/// Default `max_pending`: about 1.1 MiB of small writes per origin in
/// memory, read back from the journal 500 at a time (an origin down costs a
/// few MiB whatever its backlog; one 1,000 writes behind, 25 ms at 40,000
/// writes/s, drains from the page cache at about 180,000 writes/s).
const DEFAULT_MAX_PENDING: usize = 1000;
/// `max_body` when it is not set.
pub const DEFAULT_MAX_BODY: usize = 8 << 20;

/// The largest `max_body` accepted.
const MAX_BODY_LIMIT: u64 = 1 << 30;
/// Default `verify.sample`: one write in a hundred costs each origin one GET.
const DEFAULT_VERIFY_SAMPLE: f64 = 0.01;

/// Validates the section; settings that are valid but have no effect are
/// added to `warnings` (`hothot -t` prints them, start-up logs them).
pub fn validate(
    section: ReplicationSection,
    origins: usize,
    warnings: &mut Vec<String>,
) -> Result<ReplicationConfig, ConfigError> {
    let mode = section.mode.unwrap_or(ReplicationMode::Async);
    let order = section.order.unwrap_or(Order::Total);
    let order_key = validate_order_key(section.order_key.as_deref(), order, warnings)?;
    if order.is_sequenced() && mode != ReplicationMode::Off {
        if section.replicate_on.is_some() {
            warnings.push(format!(
                "replication.replicate_on has no effect with replication.order: {}: every origin \
                 receives every write, whatever the primary answered",
                order.name()
            ));
        }
        if section.oversize == Some(Oversize::Pass) {
            warnings.push(format!(
                "replication.oversize: pass sends a write larger than max_body to one origin only, \
                 outside replication.order: {}; the origins can then differ",
                order.name()
            ));
        }
    }
    let verify_sample = section
        .verify
        .and_then(|v| v.sample)
        .unwrap_or(DEFAULT_VERIFY_SAMPLE);
    if !(0.0..=1.0).contains(&verify_sample) {
        return Err(ConfigError::invalid(
            "replication.verify.sample",
            format!("{verify_sample} is not a fraction between 0 and 1"),
        ));
    }
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
    let methods = super::routes::parse_methods("replication.methods", &names, false)?;
    let peers = origins.saturating_sub(1);
    let quorum = section.quorum.unwrap_or(1);
    if mode == ReplicationMode::Sync {
        super::routes::check_quorum("replication.quorum", quorum, peers)?;
    }
    let timeout = section.timeout.map_or(Duration::from_secs(2), |d| d.0);
    if timeout.is_zero() {
        return Err(ConfigError::invalid(
            "replication.timeout",
            "must be longer than 0",
        ));
    }
    let (retry_initial, retry_max, retry_max_attempts) = match section.retry {
        Some(r) => (
            r.initial.map_or(Duration::from_millis(100), |d| d.0),
            r.max.map_or(Duration::from_secs(10), |d| d.0),
            r.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS),
        ),
        None => (
            Duration::from_millis(100),
            Duration::from_secs(10),
            DEFAULT_MAX_ATTEMPTS,
        ),
    };
    if retry_max_attempts == 0 {
        return Err(ConfigError::invalid(
            "replication.retry.max_attempts",
            "must be at least 1",
        ));
    }
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
    let max_pending = section.max_pending.unwrap_or(DEFAULT_MAX_PENDING);
    if max_pending == 0 {
        return Err(ConfigError::invalid(
            "replication.max_pending",
            "must be at least 1",
        ));
    }
    let max_body = section.max_body.map_or(DEFAULT_MAX_BODY as u64, |s| s.0);
    if max_body > MAX_BODY_LIMIT {
        return Err(ConfigError::invalid(
            "replication.max_body",
            "must be at most 1GiB: a replicated write is held in memory until every origin has it",
        ));
    }
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
    let retention = validate_retention(section.retain, section.detach_after, section.resync)?;
    let routes = section.routes.unwrap_or_default();
    let routes = super::routes::validate(routes, origins, mode, warnings)?;
    Ok(ReplicationConfig {
        routes,
        retention,
        order,
        order_key,
        verify_sample,
        retry_max_attempts,
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

impl Order {
    pub fn name(self) -> &'static str {
        match self {
            Order::Total => "total",
            Order::Key => "key",
            Order::Version => "version",
        }
    }
}

fn validate_order_key(
    text: Option<&str>,
    order: Order,
    warnings: &mut Vec<String>,
) -> Result<OrderKey, ConfigError> {
    let Some(text) = text else {
        return Ok(OrderKey::Path);
    };
    if order != Order::Key {
        warnings.push(format!(
            "replication.order_key has no effect with replication.order: {}",
            order.name()
        ));
    }
    if text == "path" {
        return Ok(OrderKey::Path);
    }
    let name = text.strip_prefix("header:").ok_or_else(|| {
        ConfigError::invalid(
            "replication.order_key",
            format!("{text:?} is neither \"path\" nor \"header:NAME\""),
        )
    })?;
    http::HeaderName::from_bytes(name.trim().as_bytes())
        .map(OrderKey::Header)
        .map_err(|_| {
            ConfigError::invalid(
                "replication.order_key",
                format!("{name:?} is not a header name"),
            )
        })
}
