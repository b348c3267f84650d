//! Hot-hot write replication: every write reaches every origin, in one
//! order, with the same version and idempotency key.
//!
//! Under `order: total` (the default) and `key`, the proxy ([`crate::proxy`])
//! reads a write whole and hands it over with [`Replicator::order`]: it gets
//! its place in the sequence (`sequencer`), is stored in the log (`log`,
//! what it stores encoded by `payload`), and joins every origin's backlog
//! (`backlog`), the primary's included; each origin's lanes (`deliver`, run
//! by `workers`) send their backlog in order, and the client gets the
//! primary's answer (`reply`). Under `order: version` the write streams to
//! its primary as any request does, and [`Replicator::submit`] hands it to
//! the other origins' backlogs once the primary has answered. A sampled
//! fraction of writes is read back from every origin and compared
//! (`verify`). Replication answers in its own terms ([`Ordered`],
//! [`Unanswered`], [`Full`]); the proxy alone turns them into statuses.

mod admission;
mod backlog;
mod backoff;
mod deliver;
mod detach;
mod entry;
mod fate;
mod key;
pub mod log;
mod payload;
mod pipeline;
mod reconfigure;
mod recover;
mod reply;
mod resync;
mod sequencer;
mod shared;
mod streak;
#[cfg(test)]
pub(crate) mod testing;
mod verify;
mod version;
mod workers;
mod write;

use crate::config::{ReplicationConfig, ReplicationMode, Timeouts};
use crate::journal::{Journal, JournalError, Recovered};
use crate::metrics::Metrics;
use crate::pool::{NewOrigin, Origin, OriginId, Pool};
use crate::routes::Consistency;
use arc_swap::ArcSwap;
pub use backlog::Backlog;
use bytes::Bytes;
use key::Keying;
use log::Log;
use pingora_http::RequestHeader;
pub use pipeline::{decode as decode_answer, Decoded};
use reply::Reply;
pub use resync::{ResyncError, Started as ResyncStarted};
pub use sequencer::Cut;
use sequencer::{Sequencer, Targets};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use verify::Verifier;
pub use version::VersionClock;
pub use workers::ReplicationService;
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
    /// The log holds `journal.max_bytes`.
    Journal,
}

/// Why a sequenced write's client gets no origin's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unanswered {
    /// The log could not store it: it was not sequenced, no origin got it.
    NotStored,
    /// Every origin failed it (or is out of service); it stays queued.
    NoAnswer,
    /// No origin answered within `timeouts.read`; it stays queued.
    TimedOut,
    /// A cluster's shared order did not take it (etcd unreachable or
    /// without quorum): no origin got it.
    ClusterUnavailable,
}

/// What the client of a sequenced write gets.
#[derive(Debug)]
pub enum Ordered {
    /// The answer of `origin` (the primary, unless it could not answer).
    Answer {
        origin: OriginId,
        raw: Bytes,
        /// False when a sync write's quorum did not acknowledge within `timeout`.
        quorum: bool,
        /// The write's place in the sequence (a cluster's read-your-writes
        /// cookie names it).
        position: u64,
    },
    Unanswered(Unanswered),
}

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
    /// Told when a reload added or removed origins: the workers start or
    /// stop their lanes.
    membership: tokio::sync::Notify,
    /// The resync running, if any.
    resyncs: resync::Resyncs,
    /// In a cluster (#25): the shared order and this instance's part in it.
    shared: Option<shared::Shared>,
}

impl Replicator {
    /// Opens the journal (unless replication is off), adds `origins` to the
    /// pool, and queues what the journal still holds for each of them, in
    /// the original order.
    /// In a cluster (`member`, under `order: total` or `key`) the order is
    /// etcd's and there is no journal: every origin's backlog starts with
    /// another instance delivering to it, until this one takes it over.
    pub fn open(
        config: ReplicationConfig,
        pool: Arc<Pool>,
        metrics: Arc<Metrics>,
        timeouts: Timeouts,
        origins: Vec<NewOrigin>,
        member: Option<Arc<crate::cluster::member::Member>>,
    ) -> Result<Self, JournalError> {
        let member =
            member.filter(|_| config.mode != ReplicationMode::Off && config.order.is_sequenced());
        if let Some(member) = member {
            return Ok(Self::open_shared(
                config, pool, metrics, timeouts, origins, member,
            ));
        }
        let (log, recovered): (Option<Arc<dyn Log>>, _) = match config.mode {
            ReplicationMode::Off => (None, Recovered::default()),
            _ => {
                let (journal, recovered) = Journal::open(&config.journal)?;
                (Some(Arc::new(journal)), recovered)
            }
        };
        Ok(Self::with_log(
            config, pool, metrics, timeouts, origins, log, recovered,
        ))
    }

    /// [`Replicator::open`] over `log`, which held `recovered`.
    pub(crate) fn with_log(
        config: ReplicationConfig,
        pool: Arc<Pool>,
        metrics: Arc<Metrics>,
        timeouts: Timeouts,
        origins: Vec<NewOrigin>,
        log: Option<Arc<dyn Log>>,
        recovered: Recovered,
    ) -> Self {
        let write_ahead = config.order.is_sequenced()
            && config.journal.fsync == crate::config::FsyncPolicy::Always;
        let next_seq = recover::next_seq(&recovered);
        let sequencer = Sequencer::new(pool.clone(), log, next_seq, write_ahead);
        let cut = sequencer.start_cut(config.max_pending);
        for origin in origins {
            pool.add(origin, &cut);
        }
        drop(cut);
        let keying = Keying::new(config.order, config.order_key.clone());
        metrics.publish_replication_settings(&config);
        let verifier = Arc::new(Verifier::new(
            match config.mode {
                ReplicationMode::Off => 0.0,
                _ => config.verify_sample,
            },
            pool.clone(),
            metrics.clone(),
        ));
        let replicator = Replicator {
            config: ArcSwap::from_pointee(config),
            clock: VersionClock::new(),
            keying,
            sequencer,
            verifier,
            journal_full: AtomicBool::new(false),
            pool,
            metrics,
            timeouts,
            membership: tokio::sync::Notify::new(),
            resyncs: resync::Resyncs::default(),
            shared: None,
        };
        let known = recovered.cursors.keys().cloned().collect();
        replicator.detach_at_start(&known, next_seq > 1);
        let Replicator {
            pool,
            sequencer,
            clock,
            metrics,
            ..
        } = &replicator;
        // A log that recovered nothing at all (a cluster's) has nothing to requeue.
        let read_back = recovered.last_seq > 0 || !recovered.elapsed.is_zero();
        if let Some(log) = sequencer.log().filter(|_| read_back) {
            recover::requeue(recovered, log.as_ref(), pool, sequencer, clock, metrics);
        }
        metrics.publish_pool(pool);
        replicator
    }

    /// The replication settings in force.
    pub fn config(&self) -> arc_swap::Guard<Arc<ReplicationConfig>> {
        self.config.load()
    }

    /// Is replication on (so that a write is replicated)?
    pub fn is_on(&self) -> bool {
        self.config().mode != ReplicationMode::Off
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

    /// Numbers the write, stores it in the log, and hands it to its targets'
    /// backlogs (with the read that verifies it, if sampled); with
    /// `answered`, the write carries the [`Reply`] its client waits on,
    /// over the origins it went to. Under total and key order a write the
    /// log could not store is refused.
    ///
    /// In a cluster the write is in the shared order already, at `at`.
    fn sequence(
        &self,
        new: &NewWrite,
        answered: bool,
        at: Option<u64>,
    ) -> Result<(Arc<Write>, Option<log::Stored>), Unanswered> {
        let sequenced = self.config().order.is_sequenced();
        let targets = match sequenced {
            true => Targets::All,
            false => Targets::AllBut(new.primary),
        };
        // Under the sequence lock: the origins in the pool cannot change
        // until this write has joined their backlogs.
        let numbered = match at {
            Some(position) => self.sequencer.next_at(position),
            None => self.sequencer.next(),
        };
        let origins: Vec<&Arc<Origin>> = self.pool.members().collect();
        let names: Vec<&str> = origins
            .iter()
            .filter(|o| targets.contains(o.id))
            .map(|o| o.name.as_str())
            .collect();
        let members: Vec<OriginId> = origins.iter().map(|o| o.id).collect();
        let primary = self.pool.name(new.primary);
        let reply = answered.then(|| Arc::new(Reply::new(new.primary, members.clone())));
        let write = Arc::new(Write::new(numbered.seq, new, primary, reply));
        // A pool of one has nobody to copy to under version order, and nothing to store.
        let stored = match names.is_empty() || at.is_some() {
            true => None,
            false => {
                let head = new.payload_head(primary);
                let prefix = payload::body_prefix(&new.body);
                numbered.append(&names, &new.payload(&head, &prefix))
            }
        };
        if let Some(error) = stored.as_ref().and_then(|s| s.failed()) {
            if sequenced {
                ::log::error!("journal: write refused, it could not be stored: {error}");
                return Err(Unanswered::NotStored);
            }
        }
        let read = self.verifier.read_for(&write, members);
        numbered.hand_off(write.clone(), read, targets);
        Ok((write, stored))
    }

    /// `order: version`: stores a write its primary has answered and queues
    /// it for every other origin; returns once the log has stored it per
    /// the fsync policy, or once every other origin has acknowledged it
    /// (nothing is left pending for the log to keep, so a slow `fdatasync`
    /// does not hold the client). `None` only if the write was refused
    /// (never under version order).
    pub async fn submit(&self, new: NewWrite) -> Option<Arc<Write>> {
        let others = self.pool.members().count().saturating_sub(1);
        let others = u32::try_from(others).unwrap_or(u32::MAX);
        let (write, stored) = self.sequence(&new, false, None).ok()?;
        if let Some(stored) = stored {
            tokio::select! {
                biased;
                stored = stored.wait() => {
                    if let Err(e) = stored {
                        ::log::error!("journal: write #{} not stored: {e}", write.seq);
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
    pub async fn order(&self, new: NewWrite, consistency: &Consistency) -> Ordered {
        if let Some(shared) = &self.shared {
            return self.order_shared(shared, new, consistency).await;
        }
        let write = match self.sequence(&new, true, None) {
            Ok((write, _)) => write,
            Err(unanswered) => return Ordered::Unanswered(unanswered),
        };
        let deadline = tokio::time::Instant::now() + self.timeouts.read;
        self.answer(&write, deadline, consistency).await
    }

    /// Name of the origin `origin`.
    pub fn origin_name(&self, origin: OriginId) -> &str {
        self.pool.name(origin)
    }

    /// Does `origin` hold the write stamped `version` (and everything before
    /// it)? True for the origin that answered it, and for any origin with no
    /// pending write at or below that version. (In a cluster the cookie
    /// names a position instead, which the backlog compares.)
    pub fn has_applied(origin: &Origin, version: u64, answered_by: Option<OriginId>) -> bool {
        answered_by == Some(origin.id) || origin.backlog.is_past(version)
    }

    /// The workers delivering every backlog; [`crate::proxy_service`] runs
    /// them on the proxy's runtime.
    pub fn service(self: &Arc<Self>) -> ReplicationService {
        ReplicationService {
            replicator: self.clone(),
            timeouts: self.timeouts,
        }
    }
}
