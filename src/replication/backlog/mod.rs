//! One origin's backlog: the entries it has not settled yet, in sequence
//! order, which of them may be sent now, and how far the origin has settled
//! the sequence (the cursor the log keeps for it).
//!
//! An entry leaves the backlog only once the origin has settled it (answered
//! it, or failed it `retry.max_attempts` times): an origin that is down keeps
//! its backlog, in order, for as long as it takes. Queued with the same key
//! go out in sequence order, on one lane (connection) at a time and pipelined
//! there: an entry is sent only when every earlier entry with its key is
//! settled or in flight on the same lane. A key whose entry failed with a 5xx
//! waits out a backoff while the other keys go on. Under `order: total` every
//! entry has the same key, so the whole backlog is one ordered pipeline.
//!
//! Memory holds at most `replication.max_pending` writes; an origin further
//! behind has the rest in the log, read back as it drains ([`spill`]).
//! Which entries a lane may send next is [`schedule`]'s question.

mod intake;
mod schedule;
mod spill;

use crate::pool::OriginId;
use crate::replication::entry::Entry;
pub use crate::replication::streak::FailureStreak;
pub use intake::Intake;
use prometheus::IntGauge;
use spill::{Refill, Spill};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
// Tokio's clock, so that backoffs and lingering follow a paused clock in tests.
use tokio::sync::Notify;
use tokio::time::Instant;

/// How many unsent entries one look for work examines at most: a key with
/// more entries than this ahead of the others holds them up until it moves.
const SCAN_LIMIT: usize = 4096;

/// One origin's part (see [`crate::pool::Origin`]) in replication.
pub struct Backlog {
    /// The origin this backlog belongs to.
    origin: OriginId,
    /// Every write numbered at or below this is settled here; the log keeps
    /// it ([`super::log::Log::track`]) so that a restart resumes after it.
    settled: Arc<AtomicU64>,
    state: Mutex<Queued>,
    wake: Notify,
    /// `replication.max_pending`, which a reload may change: the writes
    /// held in memory; more wait in the log ([`super::spill`]).
    max_pending: AtomicUsize,
    /// Where spilled writes are read back from.
    refill: Mutex<Option<Refill>>,
    /// Whether writes are spilled, readable without the lock (a write's
    /// primary is chosen among origins that are not).
    spilled: AtomicBool,
    /// Writes numbered at or below this are not for this origin: it joined
    /// the pool (a reload added it) after they were sequenced.
    joined_after: u64,
    /// Whether its deliveries are failing.
    pub streak: FailureStreak,
    /// The origin left the pool (a reload removed it): the backlog was
    /// dropped and nothing joins it any more. Set under the state's lock,
    /// so that a push holding the lock sees it.
    retired: AtomicBool,
    /// Entries sent and not answered yet, as the lanes last said.
    pub in_flight: AtomicUsize,
    /// In a cluster (#25, see `intake`): positions, not versions, say what
    /// the origin has; this is its progress as another instance recorded it.
    remote_progress: AtomicU64,
    clustered: AtomicBool,
    /// `hothot_replication_pending`: its unsettled writes, set under the
    /// lock whenever they change. Counted beside the backlog instead, a
    /// write queued while a resync or a detach emptied it was counted in,
    /// then zeroed with the rest, then counted out when it settled: the
    /// gauge stayed at -1.
    pending: IntGauge,
}

#[derive(Default)]
/// What the backlog holds, under its lock.
struct Queued {
    /// Unsettled entries by arrival number, which is sequence order.
    entries: BTreeMap<u64, Slot>,
    next_id: u64,
    /// Unsettled writes (verify reads are not counted).
    writes: usize,
    /// Their bytes as sent (`Entry::wire_len`).
    bytes: u64,
    /// Versions of the unsettled writes, with counts: versions are stamped
    /// before writes are sequenced, so the backlog is not sorted by them.
    versions: BTreeMap<u64, u32>,
    /// Keys with entries in flight: the lane they are on, and how many.
    in_flight: HashMap<u64, (usize, u32)>,
    /// Keys waiting out a backoff after a 5xx, and until when.
    blocked: HashMap<u64, Instant>,
    /// The writes past the window, left in the log ([`super::spill`]).
    spill: Option<Spill>,
    /// What it does with new writes ([`intake`]).
    intake: Intake,
    /// Nothing numbered after this is handed out (a resync's donor).
    hold_after: Option<u64>,
}

struct Slot {
    entry: Entry,
    sent: bool,
    /// Failed attempts that count towards `retry.max_attempts`.
    failures: u32,
    /// When the first of them failed (towards `detach_after`).
    failing_since: Option<Instant>,
}

/// A backlog that no longer delivers (see [`Backlog::settle`]).
#[derive(Debug, PartialEq, Eq)]
pub struct Closed;

/// An entry handed to a lane; `id` names it when it is settled or released.
pub struct Taken {
    pub id: u64,
    pub entry: Entry,
}

/// What a lane may do next.
pub enum Work {
    /// Send these entries now, in this order.
    Send(Vec<Taken>),
    /// There are entries, but none a client waits for here: they may wait
    /// for company (only when the lane asked to be patient).
    Hold,
    /// Nothing may be sent before this instant (a key's backoff ends).
    Until(Instant),
    /// Nothing to send until woken.
    Wait,
}

impl Backlog {
    /// The backlog of `origin`, for writes numbered after `joined_after`;
    /// `settled` is its cursor in the log.
    pub fn new(
        origin: OriginId,
        max_pending: usize,
        joined_after: u64,
        settled: Arc<AtomicU64>,
        pending: IntGauge,
    ) -> Self {
        Backlog {
            origin,
            settled,
            state: Mutex::new(Queued::default()),
            wake: Notify::new(),
            max_pending: AtomicUsize::new(max_pending),
            refill: Mutex::new(None),
            spilled: AtomicBool::new(false),
            joined_after,
            streak: FailureStreak::default(),
            retired: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            remote_progress: AtomicU64::new(0),
            clustered: AtomicBool::new(false),
            pending,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queued> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the pending gauge from `state`, under its lock (so that two
    /// changes are published in the order they were made).
    fn publish(&self, state: &Queued) {
        self.pending
            .set(i64::try_from(state.unsettled()).unwrap_or(i64::MAX));
    }

    /// A reload's `replication.max_pending`.
    pub fn set_max_pending(&self, max_pending: usize) {
        self.max_pending.store(max_pending, Ordering::Relaxed);
    }

    /// Everything numbered through `seq` is settled here: the log keeps it.
    pub fn settle_through(&self, seq: u64) {
        // Release: whoever sees what follows (the pending gauge, then a
        // stop) sees this in the log's last acknowledgements.
        self.settled.fetch_max(seq, Ordering::Release);
    }

    /// Unsettled writes, in memory and spilled.
    pub fn len(&self) -> usize {
        self.lock().unsettled()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the unsettled writes, as sent.
    pub fn bytes(&self) -> u64 {
        let state = self.lock();
        state.bytes + state.spill.as_ref().map_or(0, |s| s.bytes)
    }

    /// Every write numbered at or below this is settled here.
    pub fn applied_seq(&self) -> u64 {
        self.settled.load(Ordering::Acquire)
    }

    /// Has every write at or below `version` been settled here?
    pub fn is_past(&self, version: u64) -> bool {
        if self.clustered.load(Ordering::Relaxed) {
            return self.has_position(version);
        }
        let state = self.lock();
        // Spilled writes' versions are on disk: none is known to be past.
        state.spill.is_none()
            && state
                .versions
                .keys()
                .next()
                .is_none_or(|oldest| *oldest > version)
    }

    /// Appends an entry; false (and nothing queued) once the origin is
    /// retired, or for a verify read while writes are spilled. A write past
    /// the window is left in the log ([`super::spill`]).
    pub fn push(&self, entry: Entry) -> bool {
        let mut state = self.lock();
        if self.is_retired() {
            return false;
        }
        let window = self.max_pending.load(Ordering::Relaxed).max(1);
        let (seq, bytes) = (entry.seq(), entry.wire_len() as u64);
        match (state.intake, entry.write().is_some()) {
            (Intake::Open, _) => {}
            (Intake::Parked, true) => {
                Self::record(&mut state.spill, seq, bytes);
                self.publish(&state);
                return true;
            }
            (Intake::Refused | Intake::Elsewhere, _) | (Intake::Parked, false) => return false,
        }
        let full = state.writes >= window;
        // A spilled write is read back from the log once the window has
        // room: nothing to wake a lane for.
        let spilled = match (&mut state.spill, entry.write().is_some()) {
            (Some(_), false) => return false,
            (Some(spill), true) => {
                spill.add(seq, bytes);
                true
            }
            (None, true) if full => {
                state.spill = Some(Spill::new(seq, bytes));
                self.spilled.store(true, Ordering::Relaxed);
                true
            }
            (None, _) => {
                state.insert(entry);
                false
            }
        };
        self.publish(&state);
        drop(state);
        if !spilled {
            self.wake.notify_one();
        }
        true
    }

    /// The origin settled the entry `id`; returns the sequence of the
    /// oldest entry still unsettled, or [`Closed`] when the backlog no
    /// longer delivers (detached or parked: its cursor must stay where the
    /// origin's data is) or no longer holds `id` (dropped since it was
    /// sent, by a detach or a resync, and counted out then: counting it
    /// again would leave the pending gauge below zero for good).
    pub fn settle(&self, id: u64) -> Result<Option<u64>, Closed> {
        let mut state = self.lock();
        if state.intake != Intake::Open {
            return Err(Closed);
        }
        let Some(slot) = state.entries.remove(&id) else {
            return Err(Closed);
        };
        if slot.sent {
            state.land(slot.entry.key());
        }
        if let Some(write) = slot.entry.write() {
            state.writes -= 1;
            state.bytes -= slot.entry.wire_len() as u64;
            if let std::collections::btree_map::Entry::Occupied(mut count) =
                state.versions.entry(write.version)
            {
                *count.get_mut() -= 1;
                if *count.get() == 0 {
                    count.remove();
                }
            }
            self.publish(&state);
        }
        Ok(state.oldest_seq())
    }

    /// The entry `id` goes back to waiting, in its place; after a 5xx its key
    /// waits `backoff` before anything with it is sent again.
    pub fn release(&self, id: u64, backoff: Option<Duration>) {
        let mut state = self.lock();
        let Some(slot) = state.entries.get_mut(&id) else {
            return;
        };
        let (key, was_sent) = (slot.entry.key(), std::mem::replace(&mut slot.sent, false));
        if was_sent {
            state.land(key);
        }
        if let Some(backoff) = backoff {
            let until = Instant::now() + backoff;
            let end = state.blocked.entry(key).or_insert(until);
            *end = (*end).max(until);
        }
        drop(state);
        self.wake.notify_waiters();
    }

    /// Counts a failed attempt at the entry `id` (when `counts`); returns
    /// how many it has had, and for how long it has been failing.
    pub fn record_failure(&self, id: u64, counts: bool) -> (u32, Duration) {
        let mut state = self.lock();
        state
            .entries
            .get_mut(&id)
            .map_or((0, Duration::ZERO), |slot| {
                slot.failures += u32::from(counts);
                let since = *slot.failing_since.get_or_insert_with(Instant::now);
                (slot.failures, since.elapsed())
            })
    }

    /// Sequence number of the oldest unsettled entry (in memory or spilled).
    pub fn head_seq(&self) -> Option<u64> {
        self.lock().oldest_seq()
    }

    /// How long the oldest unsettled entry has waited (the origin's lag).
    pub fn oldest_age(&self) -> Duration {
        let state = self.lock();
        match state.entries.first_key_value() {
            Some((_, slot)) => slot.entry.accepted_at().elapsed(),
            None => state
                .spill
                .as_ref()
                .map_or(Duration::ZERO, |s| s.since.elapsed()),
        }
    }
}

impl Queued {
    /// Unsettled writes, in memory and spilled.
    fn unsettled(&self) -> usize {
        self.writes + self.spill.as_ref().map_or(0, |s| s.count)
    }

    /// Queues `entry` in memory, after every entry there.
    fn insert(&mut self, entry: Entry) {
        if let Some(write) = entry.write() {
            self.writes += 1;
            self.bytes += entry.wire_len() as u64;
            *self.versions.entry(write.version).or_default() += 1;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.entries.insert(
            id,
            Slot {
                entry,
                sent: false,
                failures: 0,
                failing_since: None,
            },
        );
    }

    /// The sequence of the oldest unsettled entry: in memory, or the first
    /// spilled one (memory holds only entries older than those).
    fn oldest_seq(&self) -> Option<u64> {
        let in_memory = self.entries.first_key_value().map(|(_, s)| s.entry.seq());
        in_memory.or(self.spill.as_ref().map(|s| s.from))
    }

    /// One in-flight entry with `key` came back.
    fn land(&mut self, key: u64) {
        if let std::collections::hash_map::Entry::Occupied(mut lane) = self.in_flight.entry(key) {
            lane.get_mut().1 -= 1;
            if lane.get().1 == 0 {
                lane.remove();
            }
        }
    }
}

#[cfg(test)]
mod tests;
