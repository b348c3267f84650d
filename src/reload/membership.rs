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
//! A change is prepared first ([`Plan::prepare`]: every new origin's TLS
//! client is built once, here), and only a plan that could be made is
//! applied ([`Plan::apply`], which cannot fail): a refused reload changes
//! nothing. Removals and additions happen together, between two writes
//! ([`crate::replication::Replicator::change_members`]).

use super::{Live, ReloadError};
use crate::config::Config;
use crate::pool::{NewOrigin, OriginId, Pool};

/// What a new `origins` list does to the pool.
#[derive(Default)]
pub struct Plan {
    /// Origins to retire (removed, or replaced by a new server).
    retire: Vec<OriginId>,
    /// Origins to add, ready to join.
    add: Vec<NewOrigin>,
    /// Kept origins whose capacity changes: (origin, new capacity).
    capacity: Vec<(OriginId, u32)>,
}

impl Plan {
    /// What turning `old.origins` (the running pool) into `new.origins`
    /// takes; refused, naming the key, if a new origin's TLS settings
    /// cannot be used.
    pub fn prepare(pool: &Pool, old: &Config, new: &Config) -> Result<Plan, ReloadError> {
        let mut plan = Plan::default();
        let mut adding = Vec::new();
        for running in &old.origins {
            let Some(origin) = pool.find(&running.name) else {
                continue;
            };
            match new.origins.iter().position(|o| o.name == running.name) {
                None => plan.retire.push(origin.id),
                Some(at) => {
                    let wanted = &new.origins[at];
                    if (wanted.address, &wanted.tls) != (running.address, &running.tls) {
                        plan.retire.push(origin.id);
                        adding.push(at);
                    } else if wanted.capacity != running.capacity {
                        plan.capacity.push((origin.id, wanted.capacity));
                    }
                }
            }
        }
        for (at, origin) in new.origins.iter().enumerate() {
            if !old.origins.iter().any(|o| o.name == origin.name) {
                adding.push(at);
            }
        }
        adding.sort_unstable();
        for at in adding {
            let origin =
                NewOrigin::build(&new.origins[at]).map_err(|source| ReloadError::OriginTls {
                    key: format!("origins[{at}].tls"),
                    source,
                })?;
            plan.add.push(origin);
        }
        Ok(plan)
    }

    pub fn changes_members(&self) -> bool {
        !self.add.is_empty() || !self.retire.is_empty()
    }

    /// Applies the plan to the running pool; returns what changed, for the log.
    pub fn apply(self, live: &Live) -> Vec<String> {
        let pool = &live.pool;
        let mut changed = Vec::new();
        for &id in &self.retire {
            if let Some(origin) = pool.get(id) {
                log::warn!(
                    "origin {} ({}) removed from the pool",
                    origin.name,
                    origin.address
                );
                changed.push(format!("origin {} removed", origin.name));
            }
        }
        for &(id, capacity) in &self.capacity {
            if let Some(origin) = pool.get(id) {
                changed.push(format!(
                    "origin {} capacity {} -> {capacity}",
                    origin.name,
                    origin.capacity()
                ));
            }
            pool.set_capacity(id, capacity);
        }
        let members = self.changes_members();
        let joined = live.replicator.change_members(&self.retire, self.add);
        for id in joined {
            if let Some(origin) = pool.get(id) {
                log::warn!(
                    "origin {} ({}) added to the pool; it serves once its first probe passes",
                    origin.name,
                    origin.address
                );
                changed.push(format!("origin {} added", origin.name));
            }
        }
        if members {
            live.probe_added.notify_one();
            live.balancer.rebuild();
        }
        changed
    }
}
