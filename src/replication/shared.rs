//! Writes in a cluster (#25): several instances, one order in etcd.
//!
//! The write path is the one of `order: total` and `key` with the order
//! kept elsewhere: the proxy's write is appended to the shared order
//! ([`crate::cluster::member::Member::append`]) and waits there; every
//! instance's follower hands each entry of the order to its sequencer at
//! the entry's position ([`Deliveries::ordered`]), the appending instance
//! recognising its own write by id and attaching the client's [`Reply`]
//! to it. Each origin's backlog delivers only on the instance holding it
//! (the others' backlogs are [`Intake::Elsewhere`]); answers to a write
//! another instance's client waits for are sent there
//! ([`Replicator::forward`]) and land here ([`Deliveries::forwarded`]).
//!
//! [`Reply`]: super::reply::Reply

use super::backlog::Intake;
use super::log::Log;
use super::sequencer::Targets;
use super::write::{AskedAt, NewWrite, Write};
use super::{payload, Ordered, Replicator, Unanswered};
use crate::cluster::answers::Forwarded;
use crate::cluster::follow::Ordered as Entry;
use crate::cluster::member::{Deliveries, Member};
use crate::config::{ReplicationConfig, Timeouts};
use crate::journal::{EntryRecord, Recovered};
use crate::log_throttle::{suppressed_note, Throttle};
use crate::metrics::Metrics;
use crate::pool::{NewOrigin, Origin, Pool};
use crate::routes::Consistency;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::oneshot;

/// This instance's side of the cluster, as replication sees it.
pub struct Shared {
    pub member: Arc<Member>,
    /// Appended by this instance, not yet handed off by the follower.
    waiting: Mutex<HashMap<String, Waiter>>,
    /// Handed off, its client still waiting: forwarded answers land here.
    asked_here: Mutex<HashMap<String, Arc<Write>>>,
    /// The latest positions handed off and when: how far behind an origin
    /// another instance delivers to is, from its recorded progress.
    recent: Mutex<std::collections::VecDeque<(u64, std::time::Instant)>>,
}

/// Positions kept in [`Shared::recent`] (16 bytes each).
const RECENT: usize = 1 << 17;

struct Waiter {
    new: NewWrite,
    handed: oneshot::Sender<Arc<Write>>,
    /// Answers that came before the follower handed the write off.
    early: Vec<Forwarded>,
}

/// Appends etcd refused, logged (see [`crate::log_throttle`]).
static APPEND_ERRORS: Throttle = Throttle::new();

impl Shared {
    pub fn new(member: Arc<Member>) -> Self {
        Shared {
            member,
            waiting: Mutex::default(),
            asked_here: Mutex::default(),
            recent: Mutex::default(),
        }
    }

    /// `position` was handed off now.
    fn handed_off(&self, position: u64) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back((position, std::time::Instant::now()));
    }

    /// How long ago the first position after `progress` was handed off
    /// (zero when there is none: the origin has everything).
    fn lag_after(&self, progress: u64) -> std::time::Duration {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let first = recent.partition_point(|(position, _)| *position <= progress);
        recent
            .get(first)
            .map_or(Default::default(), |(_, at)| at.elapsed())
    }

    fn waiting(&self) -> MutexGuard<'_, HashMap<String, Waiter>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn asked_here(&self) -> MutexGuard<'_, HashMap<String, Arc<Write>>> {
        self.asked_here.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Replicator {
    /// [`Replicator::open`] in a cluster: the log is the shared order, and
    /// every backlog starts with another instance delivering.
    pub(super) fn open_shared(
        config: ReplicationConfig,
        pool: Arc<Pool>,
        metrics: Arc<Metrics>,
        timeouts: Timeouts,
        origins: Vec<NewOrigin>,
        member: Arc<Member>,
    ) -> Self {
        let names = origins.iter().map(|o| o.config.name.clone()).collect();
        let log = crate::cluster::log::SharedLog::new(member.clone(), names);
        let log: Option<Arc<dyn Log>> = Some(Arc::new(log));
        let recovered = Recovered::default();
        let mut replicator =
            Self::with_log(config, pool, metrics, timeouts, origins, log, recovered);
        for origin in replicator.pool.members() {
            origin.backlog.drop_all(Intake::Elsewhere);
            origin.backlog.set_clustered();
        }
        replicator.shared = Some(Shared::new(member));
        replicator
    }

    /// [`Replicator::order`] in a cluster: appends the write to the shared
    /// order, waits for the follower to hand it off here, then for its answer.
    pub(super) async fn order_shared(
        &self,
        shared: &Shared,
        new: NewWrite,
        consistency: &Consistency,
    ) -> Ordered {
        let deadline = tokio::time::Instant::now() + self.timeouts.read;
        let id = shared.member.next_id();
        let head = new.payload_head(self.pool.name(new.primary));
        let prefix = payload::body_prefix(&new.body);
        let stored = new.payload(&head, &prefix).concat();
        let (handed, handoff) = oneshot::channel();
        let early = Vec::new();
        shared
            .waiting()
            .insert(id.clone(), Waiter { new, handed, early });
        let started = std::time::Instant::now();
        let appended = shared.member.append(&id, stored);
        let appended = tokio::time::timeout(self.timeouts.connect, appended).await;
        self.metrics
            .cluster
            .append_seconds
            .observe(started.elapsed().as_secs_f64());
        if let Err(why) = appended
            .map_err(|_| "timed out".to_owned())
            .and_then(|a| a.map_err(|e| e.to_string()))
        {
            shared.waiting().remove(&id);
            if let Some(suppressed) = APPEND_ERRORS.admit() {
                log::error!(
                    "cluster: a write was refused with 503, etcd did not take it ({why}){}",
                    suppressed_note(suppressed)
                );
            }
            return Ordered::Unanswered(Unanswered::ClusterUnavailable);
        }
        let write = match tokio::time::timeout_at(deadline, handoff).await {
            Ok(Ok(write)) => write,
            _ => {
                shared.waiting().remove(&id);
                return Ordered::Unanswered(Unanswered::TimedOut);
            }
        };
        let ordered = self.answer(&write, deadline, consistency).await;
        shared.asked_here().remove(&id);
        ordered
    }

    /// Sends `origin`'s answer to `write` to the instance whose client
    /// waits for it, if another instance's.
    pub(super) fn forward(
        &self,
        write: &Write,
        origin: &Origin,
        applied: bool,
        raw: Option<Bytes>,
    ) {
        let (Some(shared), Some(asked)) = (&self.shared, &write.asked_at) else {
            return;
        };
        let answer = Forwarded {
            id: asked.id.clone(),
            origin: origin.name.clone(),
            applied,
            raw,
        };
        shared.member.forward(&asked.instance, answer);
    }

    /// May `origin` be sent writes from here now? Always, but in a cluster
    /// only while this instance's hold on it is valid.
    pub(super) fn may_send(&self, origin: &Origin) -> bool {
        (self.shared.as_ref()).is_none_or(|shared| shared.member.may_send(&origin.name))
    }

    /// In a cluster: this instance, whether it reaches etcd, which
    /// instance holds each origin, and the last position handed off.
    pub fn cluster_status(&self) -> Option<serde_json::Value> {
        let member = &self.shared.as_ref()?.member;
        Some(serde_json::json!({
            "instance": member.config().instance,
            "connected": member.is_reachable(),
            "holders": member.holders(),
            "held_here": member.held(),
            "last_position": self.sequencer.published(),
        }))
    }

    /// Can writes be taken? (In a cluster, only while etcd is reachable.)
    pub fn takes_writes(&self) -> bool {
        (self.shared.as_ref()).is_none_or(|shared| shared.member.is_reachable())
    }

    /// Is this instance one of a cluster's?
    pub fn is_clustered(&self) -> bool {
        self.shared.is_some()
    }

    /// How far behind `origin` is: its oldest undelivered write's age, or
    /// in a cluster, for an origin another instance delivers to, the age
    /// of the first write after its recorded progress.
    pub(super) fn lag_of(&self, origin: &Origin) -> std::time::Duration {
        match &self.shared {
            Some(shared) if !origin.backlog.is_open() => {
                shared.lag_after(origin.backlog.remote_progress())
            }
            _ => origin.backlog.oldest_age(),
        }
    }

    /// Does this instance deliver to `origin` (always, outside a cluster)?
    pub fn delivers_to(&self, origin: &Origin) -> bool {
        (self.shared.as_ref()).is_none_or(|shared| shared.member.holds(&origin.name))
    }

    /// Another origin's answer to `write`, as if a lane here had it.
    fn apply_forwarded(&self, write: &Write, answer: Forwarded) {
        let Some(origin) = self.pool.find(&answer.origin) else {
            return;
        };
        match answer.applied {
            true => {
                if write.primary != Some(origin.id) {
                    write.acknowledge();
                }
                write.fate.applied_by_one();
                if let Some(reply) = &write.reply {
                    reply.answered(origin.id, answer.raw);
                }
            }
            false => {
                if let Some(reply) = &write.reply {
                    reply.failed(origin.id, answer.raw);
                }
            }
        }
    }

    /// Another instance's write (or one of ours whose client stopped
    /// waiting), as the order gave it.
    fn foreign(&self, shared: &Shared, entry: Entry) -> Option<Write> {
        let record = EntryRecord {
            seq: entry.position,
            targets: Vec::new(),
            payload: entry.payload.into(),
        };
        let mut write = super::recover::decode(&record, &self.pool, &self.keying)?;
        let instance = Member::instance_of(&entry.id);
        if instance != shared.member.config().instance {
            write.asked_at = Some(Box::new(AskedAt {
                instance: instance.to_owned(),
                id: entry.id,
            }));
        }
        Some(write)
    }
}

impl Deliveries for Replicator {
    fn origins(&self) -> Vec<String> {
        self.pool.members().map(|o| o.name.clone()).collect()
    }

    fn start_after(&self, position: u64) {
        self.sequencer.start_after(position);
    }

    fn last_position(&self) -> u64 {
        self.sequencer.published()
    }

    fn ordered(&self, entry: Entry) {
        let Some(shared) = &self.shared else {
            return;
        };
        if entry.position <= self.sequencer.published() {
            return; // handed off already (a watch that started again)
        }
        shared.handed_off(entry.position);
        let mut waiting = shared.waiting();
        if let Some(waiter) = waiting.remove(&entry.id) {
            let Ok((write, _)) = self.sequence(&waiter.new, true, Some(entry.position)) else {
                return;
            };
            shared.asked_here().insert(entry.id, write.clone());
            drop(waiting);
            for answer in waiter.early {
                self.apply_forwarded(&write, answer);
            }
            let _ = waiter.handed.send(write);
            return;
        }
        drop(waiting);
        let position = entry.position;
        let write = self.foreign(shared, entry);
        let numbered = self.sequencer.next_at(position);
        if let Some(write) = write {
            self.clock.observe(write.version);
            numbered.hand_off(Arc::new(write), None, Targets::All);
        }
    }

    fn park(&self, origin: &str) -> u64 {
        let cut = self.sequencer.cut(self.config().max_pending);
        // A detached origin's backlog stays refused, whoever holds it.
        if let Some(origin) = self.pool.find(origin).filter(|o| o.is_current()) {
            origin.backlog.drop_all(Intake::Parked);
        }
        cut.last_numbered()
    }

    fn take_over(&self, origin: &str, progress: u64, through: u64, owed: u64) {
        if let Some(origin) = self.pool.find(origin).filter(|o| o.is_current()) {
            let owed = usize::try_from(owed).unwrap_or(usize::MAX);
            origin.backlog.take_over(progress, through, owed);
            self.metrics.publish_pool(&self.pool);
        }
    }

    fn let_go(&self, origin: &str) {
        if let Some(origin) = self.pool.find(origin).filter(|o| o.is_current()) {
            origin.backlog.drop_all(Intake::Elsewhere);
            self.metrics.publish_pool(&self.pool);
        }
    }

    fn applied(&self, origin: &str) -> u64 {
        self.pool
            .find(origin)
            .map_or(0, |o| o.backlog.applied_seq())
    }

    fn detached_elsewhere(&self, origin: &str) {
        self.detach_as_elsewhere(origin);
    }

    fn reattached(&self, origin: &str) -> bool {
        self.reattach(origin)
    }

    fn progress(&self, origin: &str, position: u64) {
        if let Some(origin) = self.pool.find(origin) {
            origin.backlog.set_remote_progress(position);
        }
    }

    fn is_idle(&self, origin: &str) -> bool {
        let in_flight = |o: &Arc<Origin>| {
            o.backlog
                .in_flight
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        self.pool.find(origin).is_none_or(|o| in_flight(o) == 0)
    }

    fn forwarded(&self, answer: Forwarded) {
        let Some(shared) = &self.shared else {
            return;
        };
        let mut waiting = shared.waiting();
        if let Some(waiter) = waiting.get_mut(&answer.id) {
            waiter.early.push(answer);
            return;
        }
        let write = shared.asked_here().get(&answer.id).cloned();
        drop(waiting);
        if let Some(write) = write {
            self.apply_forwarded(&write, answer);
        }
    }
}
