//! One peer's backlog: the writes it has not acknowledged yet, in the order
//! their primaries acknowledged them.
//!
//! The worker delivering to the peer reads the head, and removes it only once
//! it is delivered (or permanently refused): a peer that is down keeps its
//! backlog, in order, for as long as it takes.

use super::write::Write;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;

pub struct PeerQueue {
    entries: Mutex<VecDeque<Arc<Write>>>,
    wake: Notify,
    max_pending: usize,
}

impl PeerQueue {
    pub fn new(max_pending: usize) -> Self {
        PeerQueue {
            entries: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            max_pending,
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Arc<Write>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Is there room for one more write? Checked when a write arrives, before
    /// it reaches any origin. Writes already accepted by a primary are always
    /// queued, so the backlog may exceed `max_pending` by the writes in flight.
    pub fn has_room(&self) -> bool {
        self.lock().len() < self.max_pending
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn push(&self, write: Arc<Write>) {
        self.lock().push_back(write);
        self.wake.notify_one();
    }

    /// The oldest undelivered write, waiting for one if the backlog is empty.
    pub async fn head(&self) -> Arc<Write> {
        loop {
            let notified = self.wake.notified();
            if let Some(write) = self.lock().front().cloned() {
                return write;
            }
            notified.await;
        }
    }

    /// Up to `max` writes after the first `skip` ones, for pipelining.
    pub fn peek(&self, skip: usize, max: usize) -> Vec<Arc<Write>> {
        self.lock().iter().skip(skip).take(max).cloned().collect()
    }

    /// Removes the head once it is settled.
    pub fn pop(&self) {
        self.lock().pop_front();
    }

    /// Sequence number of the oldest undelivered write.
    pub fn head_seq(&self) -> Option<u64> {
        self.lock().front().map(|w| w.seq)
    }

    /// How long the oldest undelivered write has waited (the peer's lag).
    pub fn oldest_age(&self) -> Duration {
        self.lock()
            .front()
            .map_or(Duration::ZERO, |w| w.accepted_at.elapsed())
    }
}
