//! Hot-hot write replication: every write a primary accepted is delivered to
//! all its peers, in order, with the same version and idempotency key.
//!
//! The proxy ([`crate::proxy`]) captures a write while it streams to the
//! primary, and hands it over with [`Replicator::submit`] once the primary has
//! answered. Each peer has a backlog (`queue`) drained by its own worker
//! (`deliver`); `sync` clients wait on the write's acknowledgements.

mod deliver;
mod pipeline;
mod queue;
mod recover;
mod version;
mod write;

use crate::config::{ReplicationConfig, ReplicationMode, Timeouts};
use crate::journal::{Journal, JournalError};
use crate::metrics::Metrics;
use crate::pool::Pool;
use async_trait::async_trait;
use deliver::{Backoff, PeerWorker};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use queue::PeerQueue;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
pub use version::VersionClock;
pub use write::{CapturedRequest, NewWrite, Write};

/// Set on every copy sent to a peer; names the primary.
pub const REPLICATED_FROM: &str = "x-hothot-replicated-from";
/// The write's version, on the primary's request and every copy.
pub const VERSION: &str = "x-hothot-version";
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// `partial` on a sync answer whose quorum timed out under `on_timeout: degrade`.
pub const REPLICATION_STATUS: &str = "x-hothot-replication";

/// How often lag gauges are refreshed and the journal trimmed.
const HOUSEKEEPING: Duration = Duration::from_millis(100);

/// Why a write was refused before reaching any origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// Some peer's backlog holds `max_pending` writes.
    Backlog,
    /// The journal holds `journal.max_bytes`.
    Journal,
}

pub struct Replicator {
    config: ReplicationConfig,
    clock: VersionClock,
    /// One backlog per origin, indexed like the pool: the writes other primaries sent it.
    queues: Vec<PeerQueue>,
    /// `None` when replication is off.
    journal: Option<Journal>,
    /// The next sequence number. Held while a write is journaled and queued,
    /// so that the journal and every backlog see writes in the same order.
    next_seq: Mutex<u64>,
    journal_full: AtomicBool,
    pool: Arc<Pool>,
    metrics: Arc<Metrics>,
}

impl Replicator {
    /// Opens the journal (unless replication is off) and queues what it
    /// still holds for each peer, in the original order.
    pub fn open(
        config: ReplicationConfig,
        pool: Arc<Pool>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, JournalError> {
        let names: Vec<String> = pool.origins().iter().map(|o| o.name.clone()).collect();
        let queues: Vec<PeerQueue> = names
            .iter()
            .map(|_| PeerQueue::new(config.max_pending))
            .collect();
        let clock = VersionClock::new();
        let mut next_seq = 1;
        let journal = if config.mode == ReplicationMode::Off {
            None
        } else {
            let (journal, recovered) = Journal::open(&config.journal, &names)?;
            next_seq = recover::requeue(recovered, &names, &queues, &clock, &metrics);
            Some(journal)
        };
        Ok(Replicator {
            config,
            clock,
            queues,
            journal,
            next_seq: Mutex::new(next_seq),
            journal_full: AtomicBool::new(false),
            pool,
            metrics,
        })
    }

    pub fn config(&self) -> &ReplicationConfig {
        &self.config
    }

    /// Is a request with this method a write to replicate?
    pub fn replicates(&self, method: &http::Method) -> bool {
        self.config.mode != ReplicationMode::Off && self.config.methods.contains(method)
    }

    /// May this client mark its request as an already-replicated copy?
    pub fn trusts(&self, client: Option<IpAddr>) -> bool {
        client.is_some_and(|ip| {
            self.config
                .trusted_sources
                .iter()
                .any(|range| range.contains(ip))
        })
    }

    /// Room for one more write in every peer's backlog and in the journal?
    /// A refusal is counted and says which is full.
    pub fn admit(&self) -> Result<(), Full> {
        let mut admitted = true;
        for (index, queue) in self.queues.iter().enumerate() {
            if !queue.has_room() {
                self.metrics.replication.peers[index].rejected.inc();
                admitted = false;
            }
        }
        let journal_full = self.journal.as_ref().is_some_and(|j| !j.has_room());
        if self.journal_full.swap(journal_full, Ordering::Relaxed) != journal_full {
            match journal_full {
                true => log::error!(
                    "journal full (max_bytes): refusing new writes until peers catch up"
                ),
                false => log::info!("journal has room again: accepting writes"),
            }
        }
        if journal_full && admitted {
            self.count_rejected();
        }
        match (admitted, journal_full) {
            (true, false) => Ok(()),
            (_, true) => Err(Full::Journal),
            (false, false) => Err(Full::Backlog),
        }
    }

    /// Counts a write refused before reaching any origin, on every peer.
    pub fn count_rejected(&self) {
        self.metrics
            .replication
            .peers
            .iter()
            .for_each(|p| p.rejected.inc());
    }

    /// Counts a write deliberately not replicated, on the peers of `primary`.
    pub fn count_skipped(&self, primary: Option<usize>) {
        for (index, peer) in self.metrics.replication.peers.iter().enumerate() {
            if Some(index) != primary {
                peer.skipped.inc();
            }
        }
    }

    pub fn next_version(&self) -> u64 {
        self.clock.next()
    }

    pub fn generated_idempotency_key(&self, version: u64) -> String {
        self.clock.idempotency_key(version)
    }

    /// Journals a write and queues it for every peer of its primary; returns
    /// once the journal has stored it per the fsync policy, or once every
    /// peer has acknowledged it (nothing is left pending for the journal to
    /// keep, so a slow `fdatasync` does not hold the client).
    pub async fn submit(&self, new: NewWrite) -> Arc<Write> {
        let primary = new.primary;
        let (write, stored, peer_count) = {
            let mut next_seq = self.next_seq.lock().unwrap_or_else(|e| e.into_inner());
            let seq = *next_seq;
            *next_seq += 1;
            let name = self.origin_name(primary);
            let write = Arc::new(Write::new(seq, &new, name));
            let peers: Vec<usize> = (0..self.queues.len()).filter(|i| *i != primary).collect();
            // A pool of one has nobody to replicate to, and nothing to journal.
            let stored = self
                .journal
                .as_ref()
                .filter(|_| !peers.is_empty())
                .map(|journal| {
                    let targets: Vec<&str> = peers.iter().map(|i| self.origin_name(*i)).collect();
                    new.journal(journal, seq, name, &targets)
                });
            let peer_count = u32::try_from(peers.len()).unwrap_or(u32::MAX);
            for index in peers {
                self.queues[index].push(write.clone());
                self.metrics.replication.peers[index].pending.inc();
            }
            (write, stored, peer_count)
        };
        if let Some(stored) = stored {
            tokio::select! {
                biased;
                stored = stored.wait() => {
                    if let Err(e) = stored {
                        log::error!("journal: write #{} not stored: {e}", write.seq);
                    }
                }
                () = write.acknowledged_by(peer_count) => {}
            }
        }
        write
    }

    /// The peer at `index` settled its backlog's head (delivered or refused for good).
    pub fn settled(&self, index: usize, write: &Write) {
        self.queues[index].pop();
        self.metrics.replication.peers[index].pending.dec();
        if let Some(journal) = &self.journal {
            journal.ack(index, write.seq);
        }
    }

    /// Waits until `quorum` peers acknowledged `write`, at most `timeout`.
    /// False (and counted) on timeout; the write stays queued either way.
    pub async fn wait_for_quorum(&self, write: &Write) -> bool {
        let quorum = u32::try_from(self.config.quorum).unwrap_or(u32::MAX);
        let acknowledged =
            tokio::time::timeout(self.config.timeout, write.acknowledged_by(quorum)).await;
        if acknowledged.is_err() {
            self.metrics.replication.quorum_timeouts.inc();
        }
        acknowledged.is_ok()
    }

    /// Name of the origin at `index`.
    pub fn origin_name(&self, index: usize) -> &str {
        self.pool
            .origins()
            .get(index)
            .map_or("", |o| o.name.as_str())
    }

    /// Does the origin at `index` hold the write stamped `version` (and
    /// everything before it)? True for its primary, and for a peer with no
    /// pending write at or below that version.
    pub fn has_applied(&self, index: usize, version: u64, primary: Option<usize>) -> bool {
        primary == Some(index) || self.queues.get(index).is_some_and(|q| q.is_past(version))
    }

    /// Refreshes the lag gauges, takes lagging peers out of read rotation (and
    /// drained ones back), and lets the journal drop what every peer has.
    fn housekeeping(&self) {
        let mut changed = false;
        let peers = self.queues.iter().zip(&self.metrics.replication.peers);
        for (index, (queue, metrics)) in peers.enumerate() {
            let lag = queue.oldest_age();
            metrics.lag.set(lag.as_secs_f64());
            let name = self.origin_name(index);
            if lag > self.config.max_lag && self.pool.set_lagging(index, true) {
                changed = true;
                log::warn!(
                    "origin {name} lags {lag:.1?} behind on replicated writes (max_lag {:?}): \
                     no reads until it catches up",
                    self.config.max_lag
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
        if let Some(journal) = &self.journal {
            journal.trim(self.oldest_pending_seq());
            self.metrics
                .replication
                .journal_bytes
                .set(journal.bytes() as i64);
        }
    }

    /// The sequence below which every write is settled by every peer.
    fn oldest_pending_seq(&self) -> u64 {
        // Held so that no write is between taking its number and joining the backlogs.
        let next_seq = self.next_seq.lock().unwrap_or_else(|e| e.into_inner());
        let heads = self.queues.iter().filter_map(|q| q.head_seq());
        heads.min().unwrap_or(*next_seq)
    }

    /// The workers delivering every backlog; [`crate::service::ProxyService`]
    /// runs them on the proxy's runtime.
    pub fn service(self: &Arc<Self>, timeouts: Timeouts) -> ReplicationService {
        ReplicationService {
            replicator: self.clone(),
            addresses: self.pool.origins().iter().map(|o| o.address).collect(),
            timeouts,
        }
    }
}

/// Runs one delivery worker per peer, and the housekeeping ticker.
#[derive(Clone)]
pub struct ReplicationService {
    replicator: Arc<Replicator>,
    addresses: Vec<std::net::SocketAddr>,
    timeouts: Timeouts,
}

#[async_trait]
impl BackgroundService for ReplicationService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let replicator = &self.replicator;
        if let Some(journal) = &replicator.journal {
            if let Err(e) = journal.start() {
                log::error!("journal: cannot start its writer thread: {e}");
                std::process::exit(1);
            }
        }
        let mut workers = tokio::task::JoinSet::new();
        for (index, address) in self.addresses.iter().enumerate() {
            let worker = PeerWorker {
                replicator: replicator.clone(),
                index,
                address: *address,
                timeouts: self.timeouts,
                linger: match replicator.config.mode {
                    ReplicationMode::Async => replicator.config.linger,
                    // A sync client waits for its copy: it must leave at once.
                    _ => Duration::ZERO,
                },
                backoff: Backoff::new(
                    replicator.config.retry_initial,
                    replicator.config.retry_max,
                    replicator.clock.next() ^ index as u64,
                ),
            };
            workers.spawn(worker.run());
        }
        let mut ticker = tokio::time::interval(HOUSEKEEPING);
        loop {
            tokio::select! {
                _ = ticker.tick() => replicator.housekeeping(),
                _ = shutdown.changed() => break,
            }
        }
        workers.abort_all();
        let undelivered: usize = replicator.queues.iter().map(|q| q.len()).sum();
        match &replicator.journal {
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
