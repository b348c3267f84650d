//! Where a write gets its place in the order.
//!
//! One lock numbers the writes; under it each write is appended to the
//! journal and handed to its target origins' backlogs, so the journal and
//! every backlog hold the writes in the same order. With write-ahead on
//! (`order: total` or `key`, with `fsync: always`), a write joins the
//! backlogs only once the journal has made it durable: no origin ever applies
//! a write that a crash could still lose, so after a restart every origin
//! receives the rest of the same sequence. With `fsync: interval` or `off` the
//! append is in the page cache before the hand-off, which a process crash
//! does not lose either.
//!
//! This type is the narrow interface between the proxy and where the order
//! lives: number ([`Sequencer::next`]), store ([`Next::append`]), hand off
//! ([`Next::hand_off`]), and learn what each origin has settled
//! ([`Sequencer::settled`]). A shared log on an external store, sequencing
//! several hothot instances, would replace this type and the journal behind
//! it; the proxy phases only see the [`super::Replicator`].

use super::queue::PeerQueue;
use super::write::Write;
use crate::journal::record::WriteView;
use crate::journal::{Durability, Journal};
use prometheus::IntGauge;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Which origins a write goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Targets {
    /// Every origin, the primary included (`order: total` and `key`).
    All,
    /// Every origin but the primary, which already has it (`order: version`).
    AllBut(usize),
}

impl Targets {
    pub fn contains(self, index: usize) -> bool {
        match self {
            Targets::All => true,
            Targets::AllBut(primary) => index != primary,
        }
    }
}

pub struct Sequencer {
    /// The next sequence number; held while a write is numbered, stored and
    /// handed off.
    next_seq: Mutex<u64>,
    journal: Option<Journal>,
    handoff: Arc<Handoff>,
    /// Hand writes off only once the journal has made them durable.
    write_ahead: bool,
}

/// The backlogs, and the sequenced writes waiting to join them.
pub struct Handoff {
    /// Indexed like the pool's origins; a reload adds backlogs (and retires
    /// them) under the sequence lock, between two writes.
    pub queues: boxcar::Vec<PeerQueue>,
    /// Written but not yet durable (write-ahead only).
    staged: Mutex<Staging>,
    /// The highest sequence handed to the backlogs: every write at or below
    /// it is in the backlogs it targets (or settled there).
    published: AtomicU64,
    /// `hothot_replication_pending{peer}`, indexed like the queues.
    pending: boxcar::Vec<IntGauge>,
}

#[derive(Default)]
struct Staging {
    /// Oldest first.
    writes: VecDeque<Staged>,
    /// The highest sequence the journal has made durable.
    durable: u64,
}

struct Staged {
    write: Arc<Write>,
    read: Option<Arc<Write>>,
    targets: Targets,
}

/// A sequence number being used: the lock stays held until the write is
/// handed off (or the number dropped).
pub struct Next<'a> {
    sequencer: &'a Sequencer,
    next_seq: MutexGuard<'a, u64>,
    pub seq: u64,
}

impl Sequencer {
    /// `next_seq` follows the journal's last write; `write_ahead` holds
    /// writes back from the backlogs until the journal has made them durable.
    pub fn new(
        queues: boxcar::Vec<PeerQueue>,
        pending: boxcar::Vec<IntGauge>,
        journal: Option<Journal>,
        next_seq: u64,
        write_ahead: bool,
    ) -> Self {
        let handoff = Arc::new(Handoff {
            queues,
            staged: Mutex::new(Staging::default()),
            published: AtomicU64::new(next_seq.saturating_sub(1)),
            pending,
        });
        if let (Some(journal), true) = (&journal, write_ahead) {
            let handoff = handoff.clone();
            journal.on_durable(Box::new(move |seq| handoff.release(seq)));
        }
        Sequencer {
            next_seq: Mutex::new(next_seq),
            journal,
            handoff,
            write_ahead,
        }
    }

    /// Every origin's backlog, by pool index (retired ones included).
    pub fn queues(&self) -> &boxcar::Vec<PeerQueue> {
        &self.handoff.queues
    }

    /// The backlogs of the origins in the pool, with their indexes.
    pub fn members(&self) -> impl Iterator<Item = (usize, &PeerQueue)> {
        self.handoff.queues.iter().filter(|(_, q)| !q.is_retired())
    }

    pub fn journal(&self) -> Option<&Journal> {
        self.journal.as_ref()
    }

    /// A reload's change of origins, between two writes (under the
    /// sequence lock, so that no write is numbered while some origins have
    /// left and the new ones not yet joined): the origins at `leaving` are
    /// retired, and `joining` (name, pending gauge) get the next indexes,
    /// each a backlog of at most `max_pending`. Returns how many writes each
    /// leaving origin drops.
    pub fn change(
        &self,
        leaving: &[usize],
        joining: &[(String, IntGauge)],
        max_pending: usize,
    ) -> Vec<usize> {
        let next_seq = self.next_seq.lock().unwrap_or_else(|e| e.into_inner());
        let settled = next_seq.saturating_sub(1);
        let dropped = leaving
            .iter()
            .map(|&index| self.retire(index, settled))
            .collect();
        for (name, pending) in joining {
            // It takes the writes numbered from now on: it is a new origin,
            // with nothing to catch up on.
            let index = self.handoff.queues.count();
            self.handoff.pending.push(pending.clone());
            self.handoff
                .queues
                .push(PeerQueue::new(index, max_pending, settled));
            if let Some(journal) = &self.journal {
                journal.add_peer(name, settled);
            }
        }
        dropped
    }

    /// Retires the backlog at `index` (the sequence lock is held): it is
    /// dropped, and the journal counts every write numbered so far
    /// (`settled`) as settled for it. Returns how many writes it dropped.
    fn retire(&self, index: usize, settled: u64) -> usize {
        let Some(queue) = self.handoff.queues.get(index) else {
            return 0;
        };
        // Sequenced writes still waiting for the journal to make them
        // durable (write-ahead) were meant for it too: they will not join
        // its retired backlog, so they are dropped with it. The staging lock
        // is held throughout, so that the journal's thread cannot be between
        // taking a write out of staging and handing it to this backlog.
        let staging = self.handoff.lock_staged();
        let staged = staging
            .writes
            .iter()
            .filter(|s| s.targets.contains(index) && queue.accepts(s.write.seq))
            .count();
        let dropped = queue.retire() + staged;
        drop(staging);
        // The journal before the gauge, as in `settled`.
        if let Some(journal) = &self.journal {
            journal.ack(index, settled);
        }
        if let Some(pending) = self.handoff.pending.get(index) {
            pending.set(0);
        }
        dropped
    }

    /// Takes the next sequence number.
    pub fn next(&self) -> Next<'_> {
        let mut next_seq = self.next_seq.lock().unwrap_or_else(|e| e.into_inner());
        let seq = *next_seq;
        *next_seq += 1;
        Next {
            sequencer: self,
            next_seq,
            seq,
        }
    }

    /// The origin at `index` settled its entry `id`; the journal learns how
    /// far that origin has settled the sequence.
    pub fn settled(&self, index: usize, id: u64, write: &Write) {
        // Read before the backlog: every write up to it is in the backlog
        // already, so an empty backlog means all of them are settled.
        let published = self.handoff.published.load(Ordering::Acquire);
        let Some(queue) = self.handoff.queues.get(index) else {
            return;
        };
        if queue.is_retired() {
            return; // its pending count was reset when it was retired
        }
        let oldest = queue.settle(id);
        // With the backlog empty, everything up to `published` is settled,
        // and so is everything up to this write: writes join a backlog in
        // sequence order, so all earlier ones were in it. `published` alone
        // could lag behind a write that was queued, sent and settled before
        // the hand-off recorded it; its origin was then owed it again after
        // a restart.
        let settled_up_to = oldest.map_or(published.max(write.seq), |seq| seq - 1);
        // The journal before the pending gauge: once the gauge shows the
        // write settled, a graceful stop logs its acknowledgement.
        if let Some(journal) = &self.journal {
            journal.ack(index, settled_up_to);
        }
        if let Some(pending) = self
            .handoff
            .pending
            .get(index)
            .filter(|_| !write.is_verify_read())
        {
            pending.dec();
        }
    }

    /// The sequence below which every write is settled by every origin.
    pub fn oldest_pending(&self) -> u64 {
        // Held so that no write is between taking its number and joining the backlogs.
        let next_seq = self.next_seq.lock().unwrap_or_else(|e| e.into_inner());
        let staged = self
            .handoff
            .lock_staged()
            .writes
            .front()
            .map(|s| s.write.seq);
        let heads = self.handoff.queues.iter().filter_map(|(_, q)| q.head_seq());
        heads.chain(staged).min().unwrap_or(*next_seq)
    }

    /// Queues a write found in the journal at start-up (already durable).
    pub fn requeue(&self, index: usize, write: Arc<Write>) {
        self.handoff.push(index, write);
    }

    /// After start-up requeueing: writes up to `seq` are in the backlogs.
    pub fn recovered_through(&self, seq: u64) {
        self.handoff.published.fetch_max(seq, Ordering::AcqRel);
    }
}

impl Next<'_> {
    /// Appends the write to the journal; wait on the answer for the fsync policy.
    pub fn append(&self, view: &WriteView<'_>) -> Option<Durability> {
        self.sequencer.journal.as_ref().map(|j| j.append(view))
    }

    /// Hands the write (and the read that verifies it, if sampled) to the
    /// backlogs of `targets`; the read goes to every origin. Releases the
    /// sequence number's lock.
    pub fn hand_off(self, write: Arc<Write>, read: Option<Arc<Write>>, targets: Targets) {
        let staged = Staged {
            write,
            read,
            targets,
        };
        let handoff = &self.sequencer.handoff;
        if self.sequencer.write_ahead {
            let mut staging = handoff.lock_staged();
            staging.writes.push_back(staged);
            // The syncer may have made it durable already, before it was staged.
            let durable = staging.durable;
            handoff.release_staged(&mut staging, durable);
        } else {
            handoff.deliver(staged);
        }
        drop(self.next_seq);
    }
}

impl Handoff {
    fn lock_staged(&self) -> MutexGuard<'_, Staging> {
        self.staged.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, index: usize, write: Arc<Write>) {
        let (Some(queue), Some(pending)) = (self.queues.get(index), self.pending.get(index)) else {
            return;
        };
        // Counted first: the origin may settle it as soon as it is queued.
        let counted = !write.is_verify_read();
        if counted {
            pending.inc();
        }
        if !queue.push(write) && counted {
            pending.dec(); // retired meanwhile
        }
    }

    fn deliver(&self, staged: Staged) {
        let seq = staged.write.seq;
        for (index, queue) in self.queues.iter() {
            if !queue.accepts(seq) {
                continue;
            }
            if staged.targets.contains(index) {
                self.push(index, staged.write.clone());
            }
            if let Some(read) = &staged.read {
                self.push(index, read.clone());
            }
        }
        self.published.fetch_max(seq, Ordering::AcqRel);
    }

    /// The journal made writes up to `seq` durable: they join the backlogs.
    /// Runs on the journal's syncer thread.
    fn release(&self, seq: u64) {
        let mut staging = self.lock_staged();
        staging.durable = staging.durable.max(seq);
        self.release_staged(&mut staging, seq);
    }

    fn release_staged(&self, staging: &mut Staging, durable: u64) {
        while staging
            .writes
            .front()
            .is_some_and(|s| s.write.seq <= durable)
        {
            if let Some(next) = staging.writes.pop_front() {
                self.deliver(next);
            }
        }
    }
}
