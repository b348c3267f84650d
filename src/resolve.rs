//! Where an origin reached by DNS name is now: with `origins[].resolve`,
//! its name is resolved again in the background every that long, through
//! the system's resolver (as at start-up: [`crate::config`]'s origins),
//! and the origin moves to the new first address. New connections go
//! there; connections already open finish where they are. When the name
//! stops resolving, the origin keeps its last good address: a resolver's
//! outage must not take a live origin away. Each change of state (moved,
//! failing, resolving again) is logged once.

use crate::pool::{OriginId, Pool};
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the service looks for names that are due.
const TICK: Duration = Duration::from_secs(1);

pub struct ResolveService {
    pool: Arc<Pool>,
}

impl ResolveService {
    pub fn new(pool: Arc<Pool>) -> Self {
        ResolveService { pool }
    }
}

#[async_trait]
impl BackgroundService for ResolveService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // When each origin's name was last resolved (start-up resolved all).
        let mut last: HashMap<OriginId, Instant> = HashMap::new();
        let mut failing: HashSet<OriginId> = HashSet::new();
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let now = Instant::now();
            let due: Vec<(OriginId, String, u16)> = (self.pool.members())
                .filter_map(|origin| {
                    let every = origin.resolve_every()?;
                    let host = origin.host_name.clone()?;
                    let since = *last.entry(origin.id).or_insert(now);
                    (now.duration_since(since) >= every)
                        .then(|| (origin.id, host, origin.address().port()))
                })
                .collect();
            for (id, host, port) in due {
                last.insert(id, Instant::now());
                let lookup = {
                    let host = host.clone();
                    tokio::task::spawn_blocking(move || crate::config::lookup(&host, port)).await
                };
                let Some(origin) = self.pool.get(id) else {
                    continue;
                };
                match lookup {
                    Ok(Ok(addresses)) => {
                        if failing.remove(&id) {
                            log::info!("origin {}: {host} resolves again", origin.name);
                        }
                        self.pool.set_address(id, addresses[0]);
                    }
                    Ok(Err(e)) => {
                        if failing.insert(id) {
                            log::warn!(
                                "origin {}: {e}; it stays at {} until the name resolves again",
                                origin.name,
                                origin.address()
                            );
                        }
                    }
                    Err(e) => log::error!("origin {}: resolving {host}: {e}", origin.name),
                }
            }
            // Origins that left the pool.
            last.retain(|id, _| self.pool.get(*id).is_some_and(|o| !o.is_retired()));
        }
    }
}
