//! What the unit tests build pools and replicators from: origins named
//! `o0`, `o1`, ... on addresses nothing listens on, and a log in memory.

use super::log::memory::MemoryLog;
use super::log::Log;
use super::Replicator;
use crate::config::{Config, OriginConfig};
use crate::journal::Recovered;
use crate::metrics::Metrics;
use crate::pool::{NewOrigin, Pool};
use std::sync::Arc;

/// A configuration of origins with `capacities`, then `rest` (YAML).
pub fn config(capacities: &[u32], rest: &str) -> Config {
    let origins: String = capacities
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "  - {{name: o{i}, address: \"127.0.0.1:{}\", capacity: {c}}}\n",
                9000 + i
            )
        })
        .collect();
    let text = format!("listen: [\"127.0.0.1:8080\"]\norigins:\n{origins}{rest}");
    crate::config::parse(&text).unwrap()
}

/// A pool with no origin yet.
pub fn empty_pool() -> (Arc<Pool>, Arc<Metrics>) {
    let config = config(&[1], "");
    let metrics = Arc::new(Metrics::new().unwrap());
    let pool = Pool::new(config.health.passive, config.timeouts, metrics.clone());
    (Arc::new(pool), metrics)
}

/// Origins with `capacities`, replication off.
pub fn pool(capacities: &[u32]) -> (Arc<Pool>, Arc<Replicator>) {
    let (pool, replicator) = with_log(
        &config(capacities, "replication: {mode: off}\n"),
        None,
        Recovered::default(),
    );
    (pool, replicator)
}

/// The pool and replicator of `config` over `log`, which held `recovered`.
pub fn with_log(
    config: &Config,
    log: Option<Arc<MemoryLog>>,
    recovered: Recovered,
) -> (Arc<Pool>, Arc<Replicator>) {
    let (pool, metrics) = empty_pool();
    let origins = config.origins.iter().map(new_origin).collect();
    let log = log.map(|log| log as Arc<dyn Log>);
    let replicator = Replicator::with_log(
        config.replication.clone(),
        pool.clone(),
        metrics,
        config.timeouts,
        origins,
        log,
        recovered,
    );
    (pool, Arc::new(replicator))
}

pub fn new_origin(config: &OriginConfig) -> NewOrigin {
    NewOrigin::build(config).unwrap()
}
