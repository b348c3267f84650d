//! Hot-hot write replication: every write reaches every origin, in one
//! order, with the same version and idempotency key.
//!
//! Under `order: total` (the default) and `key`, the proxy ([`crate::proxy`])
//! reads a write whole and hands it over with [`Replicator::order`]: it gets
//! its place in the sequence (`sequencer`), is journaled, and joins every
//! origin's backlog (`queue`), the primary's included; each origin's lanes
//! (`deliver`) send their backlog in order, and the client gets the primary's
//! answer (`reply`). Under `order: version` the write streams to its primary
//! as any request does, and [`Replicator::submit`] hands it to the other
//! origins' backlogs once the primary has answered. A sampled fraction of
//! writes is read back from every origin and compared (`verify`).

mod admission;
mod deliver;
mod key;
mod membership;
mod pipeline;
mod queue;
mod recover;
mod reply;
mod sequencer;
mod service;
mod verify;
mod version;
mod write;

use crate::config::{ReplicationConfig, ReplicationMode, Timeouts};
use crate::journal::{Journal, JournalError};
use crate::metrics::Metrics;
use crate::pool::Pool;
use arc_swap::ArcSwap;
use bytes::Bytes;
use key::Keying;
use pingora_http::RequestHeader;
pub use pipeline::{decode as decode_answer, Decoded};
use queue::PeerQueue;
use reply::{Outcome, Reply};
use sequencer::{Sequencer, Targets};
pub use service::ReplicationService;
use std::net::IpAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;
use verify::Verifier;
pub use version::VersionClock;
pub use write::{CapturedRequest, NewWrite, Write};

/// Set on every copy sent to an origin other than the primary; names the primary.
pub const REPLICATED_FROM: &str = "x-hothot-replicated-from";
/// The write's version, on every origin's copy.
pub const VERSION: &str = "x-hothot-version";
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// `partial` on a sync answer whose quorum timed out under `on_timeout: degrade`.
pub const REPLICATION_STATUS: &str = "x-hothot-replication";

/// Why a write was refused before reaching any origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// Some origin's backlog holds `max_pending` writes.
    Backlog,
    /// The journal holds `journal.max_bytes`.
    Journal,
}

/// What the client of a sequenced write gets.
#[derive(Debug)]
pub enum Ordered {
    /// The answer of `origin` (the primary, unless it could not answer).
    Answer {
        origin: usize,
        raw: Bytes,
        /// False when a sync write's quorum did not acknowledge within `timeout`.
        quorum: bool,
    },
    /// No origin's answer: this status from hothot (the write was not
    /// sequenced, or stays queued for every origin).
    Status(u16, &'static str),
}

pub const NOT_STORED_MESSAGE: &str =
    "service unavailable: the replication journal could not store the write\n";
pub const NO_ANSWER_MESSAGE: &str =
    "bad gateway: no origin could apply the write; it stays queued for every origin\n";
pub const ANSWER_TIMEOUT_MESSAGE: &str =
    "gateway timeout: no origin answered the write in time; it stays queued for every origin\n";

pub struct Replicator {
    /// Swapped by a reload (the keys [`crate::reload`] lets change live).
    config: ArcSwap<ReplicationConfig>,
    clock: VersionClock,
    keying: Keying,
    sequencer: Sequencer,
    verifier: Arc<Verifier>,
    journal_full: AtomicBool,
    pool: Arc<Pool>,
    metrics: Arc<Metrics>,
    timeouts: Timeouts,
    /// Told when a reload added or removed origins: the service starts or
    /// stops their lanes.
    membership: tokio::sync::Notify,
}

impl Replicator {
    /// Opens the journal (unless replication is off) and queues what it
    /// still holds for each origin, in the original order.
    pub fn open(
        config: ReplicationConfig,
        pool: Arc<Pool>,
        metrics: Arc<Metrics>,
        timeouts: Timeouts,
    ) -> Result<Self, JournalError> {
        let names: Vec<String> = pool.members().map(|(_, o)| o.name.clone()).collect();
        let queues = (0..names.len())
            .map(|index| PeerQueue::new(index, config.max_pending, 0))
            .collect();
        let pending = metrics
            .replication
            .peers
            .iter()
            .map(|(_, p)| p.pending.clone());
        let (journal, recovered) = match config.mode {
            ReplicationMode::Off => (None, None),
            _ => {
                let (journal, recovered) = Journal::open(&config.journal, &names)?;
                (Some(journal), Some(recovered))
            }
        };
        let next_seq = recovered.as_ref().map_or(1, recover::next_seq);
        let write_ahead = config.order.is_sequenced()
            && config.journal.fsync == crate::config::FsyncPolicy::Always;
        let sequencer = Sequencer::new(queues, pending.collect(), journal, next_seq, write_ahead);
        let clock = VersionClock::new();
        let keying = Keying::new(config.order, config.order_key.clone());
        if let Some(recovered) = recovered {
            recover::requeue(recovered, &names, &sequencer, &clock, &metrics, &keying);
        }
        metrics.publish_replication_settings(&config);
        let verifier = Arc::new(Verifier::new(
            match config.mode {
                ReplicationMode::Off => 0.0,
                _ => config.verify_sample,
            },
            pool.clone(),
            metrics.clone(),
        ));
        Ok(Replicator {
            config: ArcSwap::from_pointee(config),
            clock,
            keying,
            sequencer,
            verifier,
            journal_full: AtomicBool::new(false),
            pool,
            metrics,
            timeouts,
            membership: tokio::sync::Notify::new(),
        })
    }

    /// The replication settings in force.
    pub fn config(&self) -> arc_swap::Guard<Arc<ReplicationConfig>> {
        self.config.load()
    }

    /// Is a request with this method a write to replicate?
    pub fn replicates(&self, method: &http::Method) -> bool {
        let config = self.config();
        config.mode != ReplicationMode::Off && config.methods.contains(method)
    }

    /// May this client mark its request as an already-replicated copy?
    pub fn trusts(&self, client: Option<IpAddr>) -> bool {
        client.is_some_and(|ip| {
            self.config()
                .trusted_sources
                .iter()
                .any(|range| range.contains(ip))
        })
    }

    pub fn next_version(&self) -> u64 {
        self.clock.next()
    }

    /// The `Idempotency-Key` every origin receives with the write stamped
    /// `version`: it must name one write, or origins that deduplicate on it
    /// would keep different writes. Under `order: total` the client's own key
    /// passes through unchanged: every origin sees the same writes in the
    /// same order, so every origin keeps the same one of two writes sharing
    /// it (and a client's retry is deduplicated as the client meant). Under
    /// `key` and `version` two writes sharing a key can reach origins in
    /// different orders, so the key names the write: the client's key (if
    /// any) followed by hothot's own for this version.
    pub fn idempotency_key(&self, client: Option<&str>, version: u64) -> String {
        let own = self.clock.idempotency_key(version);
        match (client, self.config().order) {
            (Some(client), crate::config::Order::Total) => client.to_owned(),
            (Some(client), _) => format!("{client}.{own}"),
            (None, _) => own,
        }
    }

    /// The key that orders `request` among other writes (`order: key`).
    pub fn key_of(&self, request: &RequestHeader) -> u64 {
        self.keying.key(request.uri.path(), |name| {
            request.headers.get(name).map(|v| v.as_bytes())
        })
    }

    /// Numbers the write, journals it, and hands it to its targets' backlogs
    /// (with the read that verifies it, if sampled). Under total and key
    /// order a write the journal could not store is refused (`Err`).
    fn sequence(
        &self,
        new: &NewWrite,
        reply: Option<Arc<Reply>>,
    ) -> Result<(Arc<Write>, Option<crate::journal::Durability>), String> {
        let sequenced = self.config().order.is_sequenced();
        let targets = match sequenced {
            true => Targets::All,
            false => Targets::AllBut(new.primary),
        };
        // Under the sequence lock: the origins in the pool cannot change
        // until this write has joined their backlogs.
        let next = self.sequencer.next();
        let names: Vec<&str> = self
            .sequencer
            .members()
            .filter(|(i, _)| targets.contains(*i))
            .map(|(i, _)| self.origin_name(i))
            .collect();
        let primary = self.origin_name(new.primary);
        let write = Arc::new(Write::new(next.seq, new, primary, reply));
        // A pool of one has nobody to copy to under version order, and nothing to journal.
        let stored = match names.is_empty() {
            true => None,
            false => next.append(&new.record(next.seq, primary, &names)),
        };
        if let Some(error) = stored.as_ref().and_then(|s| s.failed()) {
            if sequenced {
                return Err(error.to_owned());
            }
        }
        let read = self
            .verifier
            .read_for(&write, self.sequencer.members().count());
        next.hand_off(write.clone(), read, targets);
        Ok((write, stored))
    }

    /// `order: version`: journals a write its primary has answered and
    /// queues it for every other origin; returns once the journal has stored
    /// it per the fsync policy, or once every other origin has acknowledged
    /// it (nothing is left pending for the journal to keep, so a slow
    /// `fdatasync` does not hold the client).
    /// `None` only if the write was refused (never under version order).
    pub async fn submit(&self, new: NewWrite) -> Option<Arc<Write>> {
        let others = self.sequencer.members().count().saturating_sub(1);
        let others = u32::try_from(others).unwrap_or(u32::MAX);
        let (write, stored) = self.sequence(&new, None).ok()?;
        if let Some(stored) = stored {
            tokio::select! {
                biased;
                stored = stored.wait() => {
                    if let Err(e) = stored {
                        log::error!("journal: write #{} not stored: {e}", write.seq);
                    }
                }
                () = write.acknowledged_by(others) => {}
            }
        }
        Some(write)
    }

    /// `order: total` and `key`: sequences a write read whole from its
    /// client, and waits for the answer the client gets (see `reply`): the
    /// primary's, or another origin's if the primary cannot answer; in sync
    /// mode, once `quorum` other origins have it too.
    pub async fn order(&self, new: NewWrite) -> Ordered {
        let reply = Arc::new(Reply::new(new.primary, self.pool.len()));
        let write = match self.sequence(&new, Some(reply.clone())) {
            Ok((write, _)) => write,
            Err(e) => {
                log::error!("journal: write refused, it could not be stored: {e}");
                return Ordered::Status(503, NOT_STORED_MESSAGE);
            }
        };
        let deadline = Instant::now() + self.timeouts.read;
        let out_of_service = |i: usize| !self.pool.is_serving(i) || self.is_failing(i);
        match reply.wait(deadline, &out_of_service).await {
            Outcome::Answer { origin, raw } => {
                let quorum = self.config().mode != ReplicationMode::Sync
                    || self.wait_for_quorum(&write).await;
                Ordered::Answer {
                    origin,
                    raw,
                    quorum,
                }
            }
            Outcome::Failed(Some((origin, raw))) => Ordered::Answer {
                origin,
                raw,
                quorum: true,
            },
            Outcome::Failed(None) => Ordered::Status(502, NO_ANSWER_MESSAGE),
            Outcome::TimedOut => Ordered::Status(504, ANSWER_TIMEOUT_MESSAGE),
        }
    }

    /// Are deliveries to the origin at `index` failing (a 5xx or a broken
    /// connection on its last attempt)?
    pub fn is_failing(&self, index: usize) -> bool {
        self.sequencer
            .queues()
            .get(index)
            .is_some_and(PeerQueue::is_failing)
    }

    /// The origin at `index` settled its backlog entry `id`.
    fn settled(&self, index: usize, id: u64, write: &Write) {
        self.sequencer.settled(index, id, write);
    }

    /// Waits until `quorum` origins other than the primary acknowledged
    /// `write`, at most `timeout`. False (and counted) on timeout; the write
    /// stays queued either way.
    pub async fn wait_for_quorum(&self, write: &Write) -> bool {
        let quorum = u32::try_from(self.config().quorum).unwrap_or(u32::MAX);
        let acknowledged =
            tokio::time::timeout(self.config().timeout, write.acknowledged_by(quorum)).await;
        if acknowledged.is_err() {
            self.metrics.replication.quorum_timeouts.inc();
        }
        acknowledged.is_ok()
    }

    /// Name of the origin at `index`.
    pub fn origin_name(&self, index: usize) -> &str {
        self.pool.origin(index).map_or("", |o| o.name.as_str())
    }

    /// Does the origin at `index` hold the write stamped `version` (and
    /// everything before it)? True for the origin that answered it, and for
    /// any origin with no pending write at or below that version.
    pub fn has_applied(&self, index: usize, version: u64, answered_by: Option<usize>) -> bool {
        answered_by == Some(index)
            || self
                .sequencer
                .queues()
                .get(index)
                .is_some_and(|q| q.is_past(version))
    }

    /// The workers delivering every backlog; [`crate::service::ProxyService`]
    /// runs them on the proxy's runtime.
    pub fn service(self: &Arc<Self>) -> ReplicationService {
        ReplicationService {
            replicator: self.clone(),
            timeouts: self.timeouts,
        }
    }
}
