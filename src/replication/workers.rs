//! The replication workers: the delivery lanes of every origin, the hand-off
//! of writes the log has made durable (write-ahead), and the housekeeping
//! ticker (lag gauges, read rotation, log trimming).

use super::backoff::Backoff;
use super::deliver::Lane;
use super::Replicator;
use crate::config::{ReplicationMode, Timeouts};
use crate::pool::{Origin, OriginId};
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::collections::HashMap;
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
    /// Refreshes the lag, backlog and applied-sequence gauges, takes lagging
    /// origins out of read rotation (and drained ones back), puts resynced
    /// origins that caught up back in service, detaches those past
    /// `replication.retain`, and lets the journal drop what every origin has.
    fn housekeeping(&self) {
        let mut changed = false;
        let max_lag = self.config().max_lag;
        for origin in self.pool.members() {
            let backlog = &origin.backlog;
            let lag = self.lag_of(origin);
            let metrics = &origin.metrics.replication;
            metrics.lag.set(lag.as_secs_f64());
            metrics.backlog_bytes.set(backlog.bytes() as i64);
            metrics.applied_sequence.set(backlog.applied_seq() as i64);
            let name = &origin.name;
            if lag > max_lag && self.pool.set_lagging(origin.id, true) {
                changed = true;
                log::warn!(
                    "origin {name} lags {lag:.1?} behind on replicated writes (max_lag {:?}): \
                     no reads until it catches up",
                    max_lag
                );
            } else if origin.is_lagging()
                // Under steady writes a backlog is rarely empty: half the
                // bound is caught up enough.
                && ((backlog.is_empty() && backlog.is_open()) || lag <= max_lag / 2)
                && self.pool.set_lagging(origin.id, false)
            {
                changed = true;
                log::info!("origin {name} caught up on replicated writes: back in read rotation");
            }
            changed |= self.caught_up(origin);
        }
        self.enforce_retention();
        if changed {
            self.metrics.publish_pool(&self.pool);
        }
        if let Some(log) = self.sequencer.log() {
            log.trim(self.sequencer.oldest_pending());
            let usage = log.usage();
            let replication = &self.metrics.replication;
            replication
                .journal_bytes
                .set(i64::try_from(usage.bytes).unwrap_or(i64::MAX));
            replication
                .journal_disk_bytes
                .set(i64::try_from(usage.disk_bytes).unwrap_or(i64::MAX));
        }
    }

    /// The lanes of `origin`.
    fn lanes(self: &Arc<Self>, origin: &Arc<Origin>, timeouts: Timeouts) -> Vec<Lane> {
        let lanes = if self.keying.is_per_key() {
            KEY_LANES
        } else {
            1
        };
        let config = self.config();
        (0..lanes)
            .map(|lane| Lane {
                replicator: self.clone(),
                origin: origin.clone(),
                lane,
                timeouts,
                backoff: Backoff::new(
                    config.retry_initial,
                    config.retry_max,
                    self.clock.next() ^ (origin.id.slot() * KEY_LANES + lane) as u64,
                ),
            })
            .collect()
    }

    /// Write-ahead: hands writes to the backlogs as the log makes them
    /// durable, for as long as the log runs. Never returns.
    async fn release_durable(&self) {
        if let Some(log) = self
            .sequencer
            .log()
            .filter(|_| self.sequencer.is_write_ahead())
        {
            let mut known = 0;
            while let Some(durable) = log.durable_after(known).await {
                self.sequencer.release(durable);
                known = durable;
            }
        }
        std::future::pending().await
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

/// The running lanes, by origin.
#[derive(Default)]
struct Workers {
    set: JoinSet<()>,
    by_origin: HashMap<OriginId, Vec<AbortHandle>>,
}

impl Workers {
    /// Starts the lanes of origins that joined, stops those of origins that left.
    fn follow(&mut self, replicator: &Arc<Replicator>, timeouts: Timeouts) {
        for origin in replicator.pool.all() {
            let handles = self.by_origin.entry(origin.id).or_default();
            if origin.is_retired() {
                handles.drain(..).for_each(|h| h.abort());
            } else if handles.is_empty() {
                for lane in replicator.lanes(origin, timeouts) {
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
        if let Some(log) = replicator.sequencer.log() {
            if let Err(e) = log.start() {
                log::error!("journal: cannot start its writer thread: {e}");
                std::process::exit(1);
            }
        }
        if let Some(shared) = &replicator.shared {
            let deliveries: Arc<dyn crate::cluster::member::Deliveries> = replicator.clone();
            if let Err(e) = shared.member.start(deliveries) {
                log::error!("cluster: cannot start (cluster.listen): {e}");
                std::process::exit(1);
            }
        }
        let mut workers = Workers::default();
        workers.follow(replicator, self.timeouts);
        let mut ticker = tokio::time::interval(HOUSEKEEPING);
        let release = replicator.release_durable();
        tokio::pin!(release);
        loop {
            tokio::select! {
                () = &mut release => {}
                _ = ticker.tick() => replicator.housekeeping(),
                () = replicator.membership_changed() => workers.follow(replicator, self.timeouts),
                // Finished lanes (aborted ones) are reaped here.
                Some(_) = workers.set.join_next(), if !workers.set.is_empty() => {}
                _ = shutdown.changed() => break,
            }
        }
        // In a cluster, the origins go to the other instances first, while
        // the lanes still answer what is in flight.
        if let Some(shared) = &replicator.shared {
            shared.member.leave().await;
        }
        workers.set.abort_all();
        let backlogs = replicator.pool.members().map(|o| &o.backlog);
        let undelivered: usize = backlogs.map(|b| b.len()).sum();
        match replicator.sequencer.log() {
            Some(log) => {
                log.close();
                log::info!("replication: stopped; {undelivered} copies stay in the journal for the next start");
            }
            None if undelivered > 0 => {
                log::warn!("replication: stopping with {undelivered} undelivered copies")
            }
            None => {}
        }
    }
}
