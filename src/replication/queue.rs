//! One peer's backlog: the writes it has not acknowledged yet, in the order
//! their primaries acknowledged them.
//!
//! The worker delivering to the peer reads the head, and removes it only once
//! it is delivered (or permanently refused): a peer that is down keeps its
//! backlog, in order, for as long as it takes.

use super::write::Write;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;

pub struct PeerQueue {
    entries: Mutex<Entries>,
    wake: Notify,
    max_pending: usize,
}

#[derive(Default)]
struct Entries {
    writes: VecDeque<Arc<Write>>,
    /// Pending versions (with counts): versions are stamped before the
    /// primary answers, so the backlog is not sorted by them.
    versions: BTreeMap<u64, u32>,
}

impl PeerQueue {
    pub fn new(max_pending: usize) -> Self {
        PeerQueue {
            entries: Mutex::new(Entries::default()),
            wake: Notify::new(),
            max_pending,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Is there room for one more write? Checked when a write arrives, before
    /// it reaches any origin. Writes already accepted by a primary are always
    /// queued, so the backlog may exceed `max_pending` by the writes in flight.
    pub fn has_room(&self) -> bool {
        self.lock().writes.len() < self.max_pending
    }

    pub fn len(&self) -> usize {
        self.lock().writes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().writes.is_empty()
    }

    /// Has every write at or below `version` been settled here?
    pub fn is_past(&self, version: u64) -> bool {
        self.lock()
            .versions
            .keys()
            .next()
            .is_none_or(|oldest| *oldest > version)
    }

    pub fn push(&self, write: Arc<Write>) {
        let mut entries = self.lock();
        *entries.versions.entry(write.version).or_default() += 1;
        entries.writes.push_back(write);
        drop(entries);
        self.wake.notify_one();
    }

    /// The oldest undelivered write, waiting for one if the backlog is empty.
    pub async fn head(&self) -> Arc<Write> {
        loop {
            let notified = self.wake.notified();
            if let Some(write) = self.lock().writes.front().cloned() {
                return write;
            }
            notified.await;
        }
    }

    /// Up to `max` writes after the first `skip` ones, for pipelining.
    pub fn peek(&self, skip: usize, max: usize) -> Vec<Arc<Write>> {
        self.lock()
            .writes
            .iter()
            .skip(skip)
            .take(max)
            .cloned()
            .collect()
    }

    /// Removes the head once it is settled.
    pub fn pop(&self) {
        let mut entries = self.lock();
        if let Some(write) = entries.writes.pop_front() {
            if let std::collections::btree_map::Entry::Occupied(mut count) =
                entries.versions.entry(write.version)
            {
                *count.get_mut() -= 1;
                if *count.get() == 0 {
                    count.remove();
                }
            }
        }
    }

    /// Sequence number of the oldest undelivered write.
    pub fn head_seq(&self) -> Option<u64> {
        self.lock().writes.front().map(|w| w.seq)
    }

    /// How long the oldest undelivered write has waited (the peer's lag).
    pub fn oldest_age(&self) -> Duration {
        self.lock()
            .writes
            .front()
            .map_or(Duration::ZERO, |w| w.accepted_at.elapsed())
    }
}
