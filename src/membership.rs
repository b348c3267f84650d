//! Which origins are in the pool: what a reload's `origins` list adds,
//! removes and changes, applied without a restart.
//!
//! Origins are matched by name. A name the running pool does not have is
//! added: it starts down, is probed at once and serves once a probe passes,
//! ramps up like a rejoining origin (`balancing.slow_start`), and receives
//! replicated writes from now on (see [`crate::replication`]). A name the new list no
//! longer has is removed: no new request goes to it (requests in flight
//! finish), it is no longer probed, and its replication backlog is dropped
//! and counted. A renamed origin is one removed and one added. An origin
//! whose `address` or `tls` changed is a different server under the same
//! name: it is removed and added again (its backlog is dropped; the new
//! server starts from now). A kept origin keeps its runtime state (a drain
//! from the admin API, its adaptive factor) and takes its new capacity.
//!
//! Every origin keeps its index for the life of the process: a removed
//! origin's index is retired, never reused, so that per-origin state held
//! elsewhere (selection, limiter, metrics, backlogs, requests in flight)
//! never points at another origin.

use crate::config::{Config, OriginConfig};
use crate::origin_tls::TlsClient;
use crate::reload::Live;

/// What the new list does to the pool.
#[derive(Debug, Default)]
struct Plan<'a> {
    /// Indexes of origins to retire (removed, or replaced by a new server).
    retire: Vec<usize>,
    /// Origins to add.
    add: Vec<&'a OriginConfig>,
    /// Kept origins whose capacity changes: (index, new capacity).
    capacity: Vec<(usize, u32)>,
}

/// Applies `new.origins` to the running pool, which holds `old.origins`;
/// returns what changed, for the log. Refuses (changing nothing) an origin
/// whose TLS settings OpenSSL refuses.
pub fn apply(live: &Live, old: &Config, new: &Config) -> Result<Vec<String>, String> {
    let pool = &live.pool;
    let mut plan = Plan::default();
    for running in &old.origins {
        let Some(index) = pool.find(&running.name) else {
            continue;
        };
        match new.origins.iter().find(|o| o.name == running.name) {
            None => plan.retire.push(index),
            Some(wanted) if (wanted.address, &wanted.tls) != (running.address, &running.tls) => {
                plan.retire.push(index);
                plan.add.push(wanted);
            }
            Some(wanted) if wanted.capacity != running.capacity => {
                plan.capacity.push((index, wanted.capacity));
            }
            Some(_) => {}
        }
    }
    for origin in &new.origins {
        if !old.origins.iter().any(|o| o.name == origin.name) {
            plan.add.push(origin);
        }
    }
    // Checked before anything changes: a refusal leaves the pool as it was.
    for (i, origin) in new.origins.iter().enumerate() {
        if let (Some(tls), true) = (&origin.tls, plan.add.contains(&origin)) {
            TlsClient::new(tls).map_err(|e| format!("origins[{i}].tls: {e}"))?;
        }
    }
    let mut changed = Vec::new();
    for &index in &plan.retire {
        let Some(origin) = pool.origin(index) else {
            continue;
        };
        pool.retire(index);
        live.metrics.forget_origin(&origin.name);
        log::warn!(
            "origin {} ({}) removed from the pool",
            origin.name,
            origin.address
        );
        changed.push(format!("origin {} removed", origin.name));
    }
    for origin in &plan.add {
        pool.add(origin)?;
        log::warn!(
            "origin {} ({}) added to the pool; it serves once its first probe passes",
            origin.name,
            origin.address
        );
        changed.push(format!("origin {} added", origin.name));
    }
    for &(index, capacity) in &plan.capacity {
        let name = pool.origin(index).map_or("", |o| o.name.as_str());
        changed.push(format!(
            "origin {name} capacity {} -> {capacity}",
            pool.capacity(index)
        ));
        pool.set_capacity(index, capacity);
        live.limiter.set_capacity(index, capacity);
    }
    if !plan.add.is_empty() {
        // Per-origin state for the new indexes, before selection can pick them.
        live.limiter.add_new_origins(pool);
        live.metrics.add_new_origins(pool);
    }
    if !plan.add.is_empty() || !plan.retire.is_empty() {
        // Backlogs: the leaving and the joining in one step between two writes.
        live.replicator.change_origins(&plan.retire);
        live.probe_added.notify_one();
        live.proxy.set(pool, new.timeouts, new.retries);
        live.balancer.rebuild();
    }
    Ok(changed)
}
