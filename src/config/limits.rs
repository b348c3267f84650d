//! The `limits` section: how many client connections hothot holds, and for
//! how long a client may take over each part of a request. The names and
//! defaults are nginx's: `keepalive_timeout` 75s, `client_header_timeout`
//! and `client_body_timeout` 60s. Two per-connection buffers are sized
//! here too (see [`Limits::client_read_buffer`]).
//!
//! The side listeners take the same keys under `admin.limits` and
//! `metrics.limits`, with defaults of their own ([`Limits::side_listener`]).

use super::units::{ByteSize, HumanDuration};
use super::ConfigError;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub max_connections: Option<usize>,
    pub keepalive_timeout: Option<HumanDuration>,
    pub header_timeout: Option<HumanDuration>,
    pub body_timeout: Option<HumanDuration>,
    pub client_read_buffer: Option<ByteSize>,
    pub client_write_buffer: Option<ByteSize>,
}

/// Largest per-connection buffer accepted: more would only waste memory.
const MAX_CLIENT_BUFFER: u64 = 1 << 20;

/// Validated limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Client connections held at once; `None`: as many as the descriptor
    /// limit allows after a reserve for origins, probes and replication.
    pub max_connections: Option<usize>,
    /// How long an idle keep-alive connection waits for its next request. Default 75s.
    pub keepalive_timeout: Duration,
    /// How long a client may take to send a whole request header (not per
    /// read: a byte every few seconds does not extend it). Default 60s.
    pub header_timeout: Duration,
    /// How long a read of the request body may wait (between two reads, as
    /// nginx's client_body_timeout). Default 60s.
    pub body_timeout: Duration,
    /// Bytes read from a client socket at once, held for the connection's
    /// whole life (Pingora's L4 read buffer, 64 KiB by default there).
    /// Default 1 KiB, nginx's `client_header_buffer_size`: one read takes a
    /// typical request header whole; larger ones take more reads.
    pub client_read_buffer: usize,
    /// Bytes of the answer gathered before a write to the client, held for
    /// the connection's life (Pingora's L4 write buffer). Default 1460, one
    /// TCP segment, as Pingora's default.
    pub client_write_buffer: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: None,
            keepalive_timeout: Duration::from_secs(75),
            header_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            client_read_buffer: 1024,
            client_write_buffer: 1460,
        }
    }
}

impl Limits {
    /// A side listener's defaults (admin, metrics): 64 connections (scrapers
    /// and operators open a handful; the cap keeps a flood from taking the
    /// proxy's descriptors), 10s for a whole header (a scraper or `curl`
    /// sends it at once; nginx's 60s is for slow clients far away), 10s per
    /// body read, and nginx's 75s keep-alive (longer than a one-minute
    /// scrape interval, so a scraper keeps its connection).
    pub fn side_listener() -> Self {
        Limits {
            max_connections: Some(crate::side_listener::DEFAULT_MAX_CONNECTIONS),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            ..Limits::default()
        }
    }
}

/// The proxy's `limits`.
pub fn validate(section: LimitsSection) -> Result<Limits, ConfigError> {
    validate_at(section, "limits", Limits::default())
}

/// A `limits` section at `prefix` (`limits`, `admin.limits`, ...), with
/// `defaults` for what it leaves out.
pub fn validate_at(
    section: LimitsSection,
    prefix: &str,
    defaults: Limits,
) -> Result<Limits, ConfigError> {
    let key = |name: &str| format!("{prefix}.{name}");
    if section.max_connections == Some(0) {
        return Err(ConfigError::invalid(
            key("max_connections"),
            "must be at least 1",
        ));
    }
    let positive = |key: String, value: Option<HumanDuration>, default: Duration| {
        let value = value.map_or(default, |d| d.0);
        match value.is_zero() {
            true => Err(ConfigError::invalid(key, "must be longer than 0")),
            false => Ok(value),
        }
    };
    let keepalive_timeout = positive(
        key("keepalive_timeout"),
        section.keepalive_timeout,
        defaults.keepalive_timeout,
    )?;
    if keepalive_timeout.subsec_nanos() != 0 {
        // Pingora keeps connections alive for whole seconds.
        return Err(ConfigError::invalid(
            key("keepalive_timeout"),
            "must be a whole number of seconds",
        ));
    }
    let buffer = |key: String, value: Option<ByteSize>, default: usize| match value {
        None => Ok(default),
        Some(ByteSize(size)) if size > MAX_CLIENT_BUFFER => {
            Err(ConfigError::invalid(key, "must be at most 1MiB"))
        }
        Some(ByteSize(size)) => Ok(usize::try_from(size).unwrap_or(default)),
    };
    Ok(Limits {
        client_read_buffer: buffer(
            key("client_read_buffer"),
            section.client_read_buffer,
            defaults.client_read_buffer,
        )?,
        client_write_buffer: buffer(
            key("client_write_buffer"),
            section.client_write_buffer,
            defaults.client_write_buffer,
        )?,
        max_connections: section.max_connections.or(defaults.max_connections),
        keepalive_timeout,
        header_timeout: positive(
            key("header_timeout"),
            section.header_timeout,
            defaults.header_timeout,
        )?,
        body_timeout: positive(
            key("body_timeout"),
            section.body_timeout,
            defaults.body_timeout,
        )?,
    })
}
