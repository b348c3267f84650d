//! Hot-hot write replication: every write a primary accepted is delivered to
//! all its peers, in order, with the same version and idempotency key.
//!
//! The proxy ([`crate::proxy`]) captures a write while it streams to the
//! primary, and hands it over with [`Replicator::submit`] once the primary has
//! answered. Each peer has a backlog ([`queue`]) drained by its own worker
//! ([`deliver`]); `sync` clients wait on the write's acknowledgements.

mod deliver;
mod pipeline;
mod queue;
mod version;
mod write;

use crate::config::{ReplicationConfig, ReplicationMode, Timeouts};
use crate::metrics::Metrics;
use crate::pool::Pool;
use async_trait::async_trait;
use deliver::{Backoff, PeerWorker};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use queue::PeerQueue;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
pub use version::VersionClock;
pub use write::Write;

/// Set on every copy sent to a peer; names the primary.
pub const REPLICATED_FROM: &str = "x-hothot-replicated-from";
/// The write's version, on the primary's request and every copy.
pub const VERSION: &str = "x-hothot-version";
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// `partial` on a sync answer whose quorum timed out under `on_timeout: degrade`.
pub const REPLICATION_STATUS: &str = "x-hothot-replication";

/// How often the lag gauges are refreshed.
const LAG_REFRESH: Duration = Duration::from_millis(100);

pub struct Replicator {
    config: ReplicationConfig,
    clock: VersionClock,
    /// One backlog per origin, indexed like the pool: the writes other primaries sent it.
    queues: Vec<Arc<PeerQueue>>,
    metrics: Arc<Metrics>,
}

impl Replicator {
    pub fn new(config: ReplicationConfig, origins: usize, metrics: Arc<Metrics>) -> Self {
        let queues = (0..origins)
            .map(|_| Arc::new(PeerQueue::new(config.max_pending)))
            .collect();
        Replicator {
            config,
            clock: VersionClock::new(),
            queues,
            metrics,
        }
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

    /// Every peer has room for one more write; otherwise the full ones count a rejection.
    pub fn admit(&self) -> bool {
        let mut admitted = true;
        for (index, queue) in self.queues.iter().enumerate() {
            if !queue.has_room() {
                self.metrics.replication.peers[index].rejected.inc();
                admitted = false;
            }
        }
        admitted
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

    /// Queues a write for every peer of its primary.
    pub fn submit(&self, write: Write) -> Arc<Write> {
        let write = Arc::new(write);
        for (index, queue) in self.queues.iter().enumerate() {
            if index != write.primary {
                queue.push(write.clone());
                self.metrics.replication.peers[index].pending.inc();
            }
        }
        write
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

    /// The background service delivering every backlog.
    pub fn service(self: &Arc<Self>, pool: &Pool, timeouts: Timeouts) -> ReplicationService {
        ReplicationService {
            replicator: self.clone(),
            names: Arc::new(pool.origins().iter().map(|o| o.name.clone()).collect()),
            addresses: pool.origins().iter().map(|o| o.address).collect(),
            timeouts,
        }
    }
}

/// Runs one delivery worker per peer, and refreshes the lag gauges.
pub struct ReplicationService {
    replicator: Arc<Replicator>,
    names: Arc<Vec<String>>,
    addresses: Vec<std::net::SocketAddr>,
    timeouts: Timeouts,
}

#[async_trait]
impl BackgroundService for ReplicationService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let replicator = &self.replicator;
        let mut workers = tokio::task::JoinSet::new();
        for (index, queue) in replicator.queues.iter().enumerate() {
            let worker = PeerWorker {
                name: self.names[index].clone(),
                address: self.addresses[index],
                origin_names: self.names.clone(),
                queue: queue.clone(),
                metrics: replicator.metrics.clone(),
                index,
                timeouts: self.timeouts,
                backoff: Backoff::new(
                    replicator.config.retry_initial,
                    replicator.config.retry_max,
                    replicator.clock.next() ^ index as u64,
                ),
            };
            workers.spawn(worker.run());
        }
        let mut ticker = tokio::time::interval(LAG_REFRESH);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    for (queue, metrics) in replicator.queues.iter().zip(&replicator.metrics.replication.peers) {
                        metrics.lag.set(queue.oldest_age().as_secs_f64());
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
        let undelivered: usize = replicator.queues.iter().map(|q| q.len()).sum();
        if undelivered > 0 {
            log::warn!("replication: stopping with {undelivered} undelivered copies");
        }
        workers.abort_all();
    }
}
