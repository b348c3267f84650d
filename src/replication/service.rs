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
use tokio::task::{AbortHandle, JoinSet};

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
        for (index, queue) in self.sequencer.members() {
            let lag = queue.oldest_age();
            self.peer_metrics(index, |peer| peer.lag.set(lag.as_secs_f64()));
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
            let replication = &self.metrics.replication;
            replication.journal_bytes.set(journal.bytes() as i64);
            replication
                .journal_disk_bytes
                .set(i64::try_from(journal.disk_bytes()).unwrap_or(i64::MAX));
        }
    }

    /// The lanes of the origin at `index`.
    fn lanes(self: &Arc<Self>, index: usize, timeouts: Timeouts) -> Vec<Lane> {
        let lanes = if self.keying.is_per_key() {
            KEY_LANES
        } else {
            1
        };
        let Some(origin) = self.pool.origin(index) else {
            return Vec::new();
        };
        let config = self.config();
        (0..lanes)
            .map(|lane| Lane {
                replicator: self.clone(),
                index,
                lane,
                address: origin.address,
                timeouts,
                backoff: Backoff::new(
                    config.retry_initial,
                    config.retry_max,
                    self.clock.next() ^ (index * KEY_LANES + lane) as u64,
                ),
            })
            .collect()
    }

    /// How long entries nobody waits for wait for company (see `deliver`).
    pub(super) fn linger(&self) -> Duration {
        let config = self.config();
        match config.mode {
            ReplicationMode::Async => config.linger,
            // A sync client waits for its copies: they must leave at once.
            _ => Duration::ZERO,
        }
    }
}

/// The running lanes, by origin index.
#[derive(Default)]
struct Workers {
    set: JoinSet<()>,
    by_origin: Vec<Vec<AbortHandle>>,
}

impl Workers {
    /// Starts the lanes of origins that joined, stops those of origins that left.
    fn follow(&mut self, replicator: &Arc<Replicator>, timeouts: Timeouts) {
        for (index, queue) in replicator.sequencer.queues().iter() {
            if self.by_origin.len() <= index {
                self.by_origin.resize_with(index + 1, Vec::new);
            }
            let handles = &mut self.by_origin[index];
            if queue.is_retired() {
                handles.drain(..).for_each(|h| h.abort());
            } else if handles.is_empty() {
                for lane in replicator.lanes(index, timeouts) {
                    handles.push(self.set.spawn(lane.run()));
                }
            }
        }
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
        let mut workers = Workers::default();
        workers.follow(replicator, self.timeouts);
        let mut ticker = tokio::time::interval(HOUSEKEEPING);
        loop {
            tokio::select! {
                _ = ticker.tick() => replicator.housekeeping(),
                () = replicator.membership_changed() => workers.follow(replicator, self.timeouts),
                // Finished lanes (aborted ones) are reaped here.
                Some(_) = workers.set.join_next(), if !workers.set.is_empty() => {}
                _ = shutdown.changed() => break,
            }
        }
        workers.set.abort_all();
        let queues = replicator.sequencer.members();
        let undelivered: usize = queues.map(|(_, q)| q.len()).sum();
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
