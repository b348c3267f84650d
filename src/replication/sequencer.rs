//! Where a write gets its place in the order.
//!
//! One lock numbers the writes; under it each write is appended to the log
//! and handed to its target origins' backlogs, so the log and every backlog
//! hold the writes in the same order. With write-ahead on (`order: total` or
//! `key`, with `fsync: always`), a write joins the backlogs only once the log
//! has made it durable: no origin ever applies a write that a crash could
//! still lose, so after a restart every origin receives the rest of the same
//! sequence. With `fsync: interval` or `off` the append is in the page cache
//! before the hand-off, which a process crash does not lose either.
//!
//! The sequencer is the narrow interface between the proxy and where the
//! order lives: number ([`Sequencer::next`]), store ([`Numbered::append`],
//! through the [`Log`] trait), hand off ([`Numbered::hand_off`]; with
//! write-ahead, [`Sequencer::release`] once the log says the write is
//! durable), and learn what each origin has settled
//! ([`Sequencer::settled`]). Origins join and leave the pool only at a
//! [`Cut`], between two writes.

use super::backlog::Backlog;
use super::entry::Entry;
use super::log::{Log, Stored};
use super::verify::VerifyRead;
use super::write::Write;
use crate::pool::{Origin, OriginId, Pool};
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
    AllBut(OriginId),
}

impl Targets {
    pub fn contains(self, origin: OriginId) -> bool {
        match self {
            Targets::All => true,
            Targets::AllBut(primary) => origin != primary,
        }
    }
}

pub struct Sequencer {
    /// The next sequence number; held while a write is numbered, stored and
    /// handed off, and while origins join or leave.
    next_seq: Mutex<u64>,
    log: Option<Arc<dyn Log>>,
    pool: Arc<Pool>,
    /// Written but not yet durable (write-ahead only).
    staged: Mutex<Staging>,
    /// The highest sequence handed to the backlogs: every write at or below
    /// it is in the backlogs it targets (or settled there).
    published: AtomicU64,
    /// Hand writes off only once the log has made them durable.
    write_ahead: bool,
}

#[derive(Default)]
struct Staging {
    /// Oldest first.
    writes: VecDeque<Staged>,
    /// The highest sequence the log has made durable.
    durable: u64,
}

struct Staged {
    write: Arc<Write>,
    read: Option<Arc<VerifyRead>>,
    targets: Targets,
}

/// A sequence number being used: the lock stays held until the write is
/// handed off (or the number dropped).
pub struct Numbered<'a> {
    sequencer: &'a Sequencer,
    _next_seq: MutexGuard<'a, u64>,
    pub seq: u64,
}

/// A moment between two writes at which origins join and leave the pool
/// ([`Pool::add`], [`Pool::retire`]): every write numbered before it is
/// addressed to the origins in the pool before it, every later one to those
/// after it.
pub struct Cut<'a> {
    sequencer: &'a Sequencer,
    _next_seq: MutexGuard<'a, u64>,
    /// Every write numbered so far (0 at start-up, when a joining origin
    /// still receives what the log holds for it).
    settled: u64,
    /// `replication.max_pending` for the joining backlogs.
    max_pending: usize,
}

impl Sequencer {
    /// `next_seq` follows the log's last write; `write_ahead` holds writes
    /// back from the backlogs until the log has made them durable.
    pub fn new(
        pool: Arc<Pool>,
        log: Option<Arc<dyn Log>>,
        next_seq: u64,
        write_ahead: bool,
    ) -> Self {
        Sequencer {
            next_seq: Mutex::new(next_seq),
            write_ahead: write_ahead && log.is_some(),
            log,
            pool,
            staged: Mutex::new(Staging::default()),
            published: AtomicU64::new(next_seq.saturating_sub(1)),
        }
    }

    pub fn log(&self) -> Option<&Arc<dyn Log>> {
        self.log.as_ref()
    }

    /// Does a write join the backlogs only once the log says it is durable?
    pub fn is_write_ahead(&self) -> bool {
        self.write_ahead
    }

    fn lock_next(&self) -> MutexGuard<'_, u64> {
        self.next_seq.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_staged(&self) -> MutexGuard<'_, Staging> {
        self.staged.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cut for a reload's changes: between the last write numbered and
    /// the next.
    pub fn cut(&self, max_pending: usize) -> Cut<'_> {
        let next_seq = self.lock_next();
        Cut {
            settled: next_seq.saturating_sub(1),
            sequencer: self,
            _next_seq: next_seq,
            max_pending,
        }
    }

    /// The cut at start-up, before the log's pending writes are queued
    /// again: the origins receive what the log holds for them.
    pub fn start_cut(&self, max_pending: usize) -> Cut<'_> {
        Cut {
            settled: 0,
            sequencer: self,
            _next_seq: self.lock_next(),
            max_pending,
        }
    }

    /// Takes the next sequence number.
    pub fn next(&self) -> Numbered<'_> {
        let mut next_seq = self.lock_next();
        let seq = *next_seq;
        *next_seq += 1;
        Numbered {
            sequencer: self,
            _next_seq: next_seq,
            seq,
        }
    }

    /// Takes `seq` as the next sequence number: a cluster's position, given
    /// by the shared order (#25), above every number taken before.
    pub fn next_at(&self, seq: u64) -> Numbered<'_> {
        let mut next_seq = self.lock_next();
        *next_seq = seq + 1;
        Numbered {
            sequencer: self,
            _next_seq: next_seq,
            seq,
        }
    }

    /// A cluster's order starts after `position`: nothing at or below it
    /// is handed off here.
    pub fn start_after(&self, position: u64) {
        let mut next_seq = self.lock_next();
        *next_seq = (*next_seq).max(position + 1);
        self.published.fetch_max(position, Ordering::AcqRel);
    }

    /// `origin` settled its backlog entry `id`; the log learns how far that
    /// origin has settled the sequence.
    pub fn settled(&self, origin: &Origin, id: u64, entry: &Entry) {
        // Read before the backlog: every write up to it is in the backlog
        // already, so an empty backlog means all of them are settled.
        let published = self.published.load(Ordering::Acquire);
        let backlog = &origin.backlog;
        if backlog.is_retired() {
            return; // its pending count was reset when it was retired
        }
        // Detached or parked: its pending count was reset, and its cursor
        // must stay where its data is.
        let Ok(oldest) = backlog.settle(id) else {
            return;
        };
        // With the backlog empty, everything up to `published` is settled,
        // and so is everything up to this entry: writes join a backlog in
        // sequence order, so all earlier ones were in it. `published` alone
        // could lag behind a write that was queued, sent and settled before
        // the hand-off recorded it; its origin was then owed it again after
        // a restart.
        let settled_up_to = oldest.map_or(published.max(entry.seq()), |seq| seq - 1);
        // The log before the pending gauge: once the gauge shows the write
        // settled, a graceful stop logs its acknowledgement.
        backlog.settle_through(settled_up_to);
    }

    /// The sequence below which every write is settled by every origin.
    pub fn oldest_pending(&self) -> u64 {
        // Held so that no write is between taking its number and joining the backlogs.
        let next_seq = self.lock_next();
        let staged = self.lock_staged().writes.front().map(|s| s.write.seq);
        let heads = self.pool.all().filter_map(|o| o.backlog.head_seq());
        heads.chain(staged).min().unwrap_or(*next_seq)
    }

    /// Every write at or below this is in the backlogs it targets.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Acquire)
    }

    /// After start-up requeueing: writes up to `seq` are in the backlogs.
    pub fn recovered_through(&self, seq: u64) {
        self.published.fetch_max(seq, Ordering::AcqRel);
    }

    /// The log made writes up to `seq` durable: they join the backlogs.
    pub fn release(&self, seq: u64) {
        let mut staging = self.lock_staged();
        staging.durable = staging.durable.max(seq);
        self.release_staged(&mut staging);
    }

    fn release_staged(&self, staging: &mut Staging) {
        while staging
            .writes
            .front()
            .is_some_and(|s| s.write.seq <= staging.durable)
        {
            if let Some(next) = staging.writes.pop_front() {
                self.deliver(next);
            }
        }
    }

    /// Hands a write (and its verify read) to every backlog it targets; the
    /// read goes to every origin.
    fn deliver(&self, staged: Staged) {
        let seq = staged.write.seq;
        for origin in self.pool.members() {
            if !origin.backlog.accepts(seq) {
                continue;
            }
            if staged.targets.contains(origin.id) {
                push(origin, Entry::Write(staged.write.clone()));
            }
            if let Some(read) = &staged.read {
                push(origin, Entry::VerifyRead(read.clone()));
            }
        }
        self.published.fetch_max(seq, Ordering::AcqRel);
    }
}

/// Queues `entry` for `origin`; an origin retired meanwhile takes nothing
/// (a read is withdrawn from its sample).
fn push(origin: &Origin, entry: Entry) {
    if !origin.backlog.push(entry.clone()) {
        entry.withdrawn(origin.id);
    }
}

impl Numbered<'_> {
    /// Appends the write to the log, addressed to `targets` (names), its
    /// stored bytes in `payload`'s pieces; wait on the answer for the
    /// log's durability. `None` without a log.
    pub fn append(&self, targets: &[&str], payload: &[&[u8]]) -> Option<Stored> {
        let log = self.sequencer.log.as_ref()?;
        Some(log.append(self.seq, targets, payload))
    }

    /// Hands the write (and the read that verifies it, if sampled) to the
    /// backlogs of `targets`; the read goes to every origin. Releases the
    /// sequence number's lock.
    pub fn hand_off(self, write: Arc<Write>, read: Option<Arc<VerifyRead>>, targets: Targets) {
        let sequencer = self.sequencer;
        let staged = Staged {
            write,
            read,
            targets,
        };
        if sequencer.is_write_ahead() {
            let mut staging = sequencer.lock_staged();
            staging.writes.push_back(staged);
            // The log may have made it durable already, before it was staged.
            sequencer.release_staged(&mut staging);
        } else {
            sequencer.deliver(staged);
        }
    }
}

impl Cut<'_> {
    /// The last write numbered before the cut (0 at start-up).
    pub fn last_numbered(&self) -> u64 {
        self.settled
    }

    /// The backlog of `origin`, named `name`, joining now: it takes every
    /// write numbered after the cut, and the log tracks how far it settles;
    /// it keeps `pending` (the origin's gauge) at its count of writes.
    pub fn backlog(&self, origin: OriginId, name: &str, pending: IntGauge) -> Backlog {
        let settled = self.settled;
        let cursor = match &self.sequencer.log {
            Some(log) => log.track(name, settled),
            None => Arc::new(AtomicU64::new(settled)),
        };
        Backlog::new(origin, self.max_pending, settled, cursor, pending)
    }

    /// Drops `origin`'s backlog as it leaves: the log counts every write
    /// numbered so far as settled for it. Returns how many writes it drops,
    /// those still waiting to be durable included.
    pub fn retire(&self, origin: &Origin) -> usize {
        let sequencer = self.sequencer;
        // Staged writes were meant for it too: they will not join its
        // retired backlog, so they are dropped with it (and a staged read
        // is withdrawn from its sample). The staging lock is held
        // throughout, so that no release is between taking a write out of
        // staging and handing it to this backlog.
        let staging = sequencer.lock_staged();
        let backlog = &origin.backlog;
        let mut staged = 0;
        for waiting in staging.writes.iter() {
            if !backlog.accepts(waiting.write.seq) {
                continue;
            }
            staged += usize::from(waiting.targets.contains(origin.id));
            if let Some(read) = &waiting.read {
                read.sample.withdraw(origin.id);
            }
        }
        let dropped = backlog.retire(self.settled) + staged;
        drop(staging);
        dropped
    }
}

#[cfg(test)]
#[path = "sequencer_tests.rs"]
mod tests;
