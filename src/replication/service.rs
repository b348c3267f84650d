//! The replication workers: the delivery lanes of every origin, and the
//! housekeeping ticker (lag gauges, read rotation, journal trimming).

use super::deliver::{Backoff, Lane};
use super::Replicator;
use crate::config::{ReplicationMode, Timeouts};
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;

/// How often lag gauges are refreshed and the journal trimmed.
const HOUSEKEEPING: Duration = Duration::from_millis(100);

/// Lanes (connections) per origin under `order: key`: up to this many keys
/// are worked on at once by each origin; a key waiting out a backoff holds
/// only its own writes.
pub const KEY_LANES: usize = 4;

/// Runs the delivery lanes of every origin, and the housekeeping ticker.
#[derive(Clone)]
pub struct ReplicationService {
    pub(super) replicator: Arc<Replicator>,
    pub(super) timeouts: Timeouts,
}

impl Replicator {
    /// Refreshes the lag gauges, takes lagging origins out of read rotation
    /// (and drained ones back), and lets the journal drop what every origin has.
    fn housekeeping(&self) {
        let mut changed = false;
        let queues = self.sequencer.queues();
        let origins = queues.iter().zip(&self.metrics.replication.peers);
        for (index, (queue, metrics)) in origins.enumerate() {
            let lag = queue.oldest_age();
            metrics.lag.set(lag.as_secs_f64());
            let name = self.origin_name(index);
            let max_lag = self.config().max_lag;
            if lag > max_lag && self.pool.set_lagging(index, true) {
                changed = true;
                log::warn!(
                    "origin {name} lags {lag:.1?} behind on replicated writes (max_lag {:?}): \
                     no reads until it catches up",
                    max_lag
                );
            } else if self.pool.is_lagging(index)
                && queue.is_empty()
                && self.pool.set_lagging(index, false)
            {
                changed = true;
                log::info!("origin {name} caught up on replicated writes: back in read rotation");
            }
        }
        if changed {
            self.metrics.publish_pool(&self.pool);
        }
        if let Some(journal) = self.sequencer.journal() {
            journal.trim(self.sequencer.oldest_pending());
            self.metrics
                .replication
                .journal_bytes
                .set(journal.bytes() as i64);
        }
    }

    fn lanes(self: &Arc<Self>, timeouts: Timeouts) -> Vec<Lane> {
        let lanes = if self.keying.is_per_key() {
            KEY_LANES
        } else {
            1
        };
        let linger = match self.config().mode {
            ReplicationMode::Async => self.config().linger,
            // A sync client waits for its copies: they must leave at once.
            _ => Duration::ZERO,
        };
        let origins = self.pool.origins().iter().enumerate();
        origins
            .flat_map(|(index, origin)| (0..lanes).map(move |lane| (index, lane, origin.address)))
            .map(|(index, lane, address)| Lane {
                replicator: self.clone(),
                index,
                lane,
                address,
                timeouts,
                linger,
                backoff: Backoff::new(
                    self.config().retry_initial,
                    self.config().retry_max,
                    self.clock.next() ^ (index * KEY_LANES + lane) as u64,
                ),
            })
            .collect()
    }
}

#[async_trait]
impl BackgroundService for ReplicationService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let replicator = &self.replicator;
        if let Some(journal) = replicator.sequencer.journal() {
            if let Err(e) = journal.start() {
                log::error!("journal: cannot start its writer thread: {e}");
                std::process::exit(1);
            }
        }
        let mut workers = tokio::task::JoinSet::new();
        for lane in replicator.lanes(self.timeouts) {
            workers.spawn(lane.run());
        }
        let mut ticker = tokio::time::interval(HOUSEKEEPING);
        loop {
            tokio::select! {
                _ = ticker.tick() => replicator.housekeeping(),
                _ = shutdown.changed() => break,
            }
        }
        workers.abort_all();
        let queues = replicator.sequencer.queues();
        let undelivered: usize = queues.iter().map(|q| q.len()).sum();
        match replicator.sequencer.journal() {
            Some(journal) => {
                journal.close();
                log::info!("replication: stopped; {undelivered} copies stay in the journal for the next start");
            }
            None if undelivered > 0 => {
                log::warn!("replication: stopping with {undelivered} undelivered copies")
            }
            None => {}
        }
    }
}
