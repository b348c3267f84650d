//! hothot: an HTTP reverse proxy for hot-hot (active-active) origin pools.
//!
//! Requests are spread over the origins in proportion to their declared
//! capacities ([`selection`]), origins are probed actively and passively
//! ([`health`], [`pool`]), and everything is exported to Prometheus
//! ([`metrics`]). [`embed::spawn`] starts a proxy in-process; `hothot -c FILE`
//! ([`cli`]) runs one as a program.

pub mod access_log;
pub mod adaptive;
pub mod admin;
#[cfg(feature = "mimalloc")]
pub mod alloc;
pub mod certificates;
pub mod classify;
pub mod cli;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod connections;
pub mod drain;
pub mod embed;
pub mod health;
pub mod journal;
pub mod limit;
pub mod log_throttle;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod origin_tls;
pub mod pingora_conf;
pub mod pool;
pub mod proxy;
pub mod proxy_service;
pub mod reload;
pub mod replication;
pub mod resolve;
pub mod routes;
pub mod selection;
pub mod server;
pub mod side_listener;
pub mod signals;

pub use config::{Config, ConfigError};
pub use embed::{spawn, RunningProxy};
pub use server::StartError;
