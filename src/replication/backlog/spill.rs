//! A backlog larger than memory: once an origin has `replication.max_pending`
//! writes in memory, its next writes stay only where they already are, in
//! the log, and are read back from it as the origin drains (#24: a dead
//! origin costs disk, not RAM, and is no reason to refuse writes).
//!
//! The backlog keeps what it left on disk as one run of sequence numbers
//! ([`Spill`]): every write for the origin numbered `from` through
//! `through` that is not in memory. A lane tops the memory up from the log
//! ([`Replicator::refill`]) when it holds less than half the window; once
//! the run is read back the backlog takes new writes in memory again. A
//! write read back carries no waiting client (a backlog that long is behind
//! any client's deadline) and no verify read.

use super::{Backlog, MutexGuard};
use crate::log_throttle::{suppressed_note, Throttle};
use crate::pool::Origin;
use crate::replication::entry::Entry;
use crate::replication::log::LogReader;
use crate::replication::Replicator;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::time::Instant;

/// The writes an origin has only on disk.
#[derive(Debug, Clone)]
pub struct Spill {
    /// The first of them.
    pub from: u64,
    /// The last of them (the newest write queued for the origin).
    pub through: u64,
    pub count: usize,
    /// Their bytes as sent.
    pub bytes: u64,
    /// When the first of them was queued (the lag, once memory is empty).
    pub since: Instant,
}

impl Spill {
    pub fn new(seq: u64, bytes: u64) -> Self {
        Spill {
            from: seq,
            through: seq,
            count: 1,
            bytes,
            since: Instant::now(),
        }
    }

    pub fn add(&mut self, seq: u64, bytes: u64) {
        self.through = self.through.max(seq);
        self.count += 1;
        self.bytes += bytes;
    }
}

/// Failed reads of spilled writes, logged (see [`crate::log_throttle`]).
static READ_ERRORS: Throttle = Throttle::new();

/// Where an origin's backlog reads its spilled writes back from.
pub struct Refill {
    reader: Box<dyn LogReader>,
}

impl Backlog {
    /// At start-up: `count` writes (`bytes` as stored) numbered `from`
    /// through `through` wait in the log for this origin; they are read
    /// back as it drains.
    pub fn owe(&self, from: u64, through: u64, count: usize, bytes: u64) {
        let mut state = self.lock();
        state.spill = Some(Spill {
            from,
            through,
            count,
            bytes,
            since: Instant::now(),
        });
        self.spilled.store(true, Ordering::Relaxed);
        self.publish(&state);
        drop(state);
        self.wake.notify_waiters();
    }

    /// Have writes been left in the log for want of room in memory?
    pub fn is_spilled(&self) -> bool {
        self.spilled.load(Ordering::Relaxed)
    }

    /// The spilled run and the room in memory for it, when memory holds
    /// less than half the window.
    pub fn refill_wanted(&self) -> Option<(Spill, usize)> {
        let state = self.lock();
        let window = self.max_pending.load(Ordering::Relaxed).max(1);
        let spill = state.spill.as_ref()?;
        (state.writes <= window / 2 && state.intake == super::Intake::Open)
            .then(|| (spill.clone(), window - state.writes))
    }

    /// The reader of the spilled writes (one refill at a time).
    pub fn refill_source(&self) -> MutexGuard<'_, Option<Refill>> {
        self.refill.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes read back from the log, every entry through `read_through`
    /// examined: those of the spilled run join the memory, in order.
    pub fn refill(&self, writes: Vec<Entry>, read_through: u64) {
        let mut state = self.lock();
        let Some(mut spill) = state.spill.take() else {
            return;
        };
        for entry in writes {
            let (seq, bytes) = (entry.seq(), entry.wire_len() as u64);
            if seq < spill.from || seq > spill.through {
                continue;
            }
            spill.count = spill.count.saturating_sub(1);
            spill.bytes = spill.bytes.saturating_sub(bytes);
            state.insert(entry);
        }
        spill.from = spill.from.max(read_through + 1);
        if spill.from <= spill.through {
            state.spill = Some(spill);
        } else {
            self.spilled.store(false, Ordering::Relaxed);
        }
        self.publish(&state);
        drop(state);
        self.wake.notify_waiters();
    }
}

impl Replicator {
    /// A write the log stored, to deliver again.
    fn decode(
        &self,
        entry: &crate::journal::EntryRecord,
    ) -> Option<crate::replication::write::Write> {
        crate::replication::recover::decode(entry, &self.pool, &self.keying)
    }

    /// Reads `origin`'s spilled writes back into its memory, up to its
    /// window; nothing when it has not spilled or its memory is half full.
    pub(in crate::replication) fn refill(&self, origin: &Origin) {
        let backlog = &origin.backlog;
        if !backlog.is_spilled() {
            return;
        }
        // One refill at a time; what it wants is read once it has the turn.
        let mut refill = backlog.refill_source();
        let Some((spill, room)) = backlog.refill_wanted() else {
            return;
        };
        let Some(log) = self.sequencer.log() else {
            return;
        };
        let reader = match refill.as_mut() {
            Some(source) if source.reader.next_seq() == spill.from => &mut source.reader,
            _ => {
                &mut refill
                    .insert(Refill {
                        reader: log.reader(spill.from),
                    })
                    .reader
            }
        };
        let records = match reader.read(spill.through, room) {
            Ok(records) => records,
            Err(e) => {
                // Tried again at each turn of the lane: logged a few times.
                if let Some(suppressed) = READ_ERRORS.admit() {
                    log::error!(
                        "replication to {}: cannot read writes #{} to #{} back from the journal: {e}{}",
                        origin.name,
                        spill.from,
                        spill.through,
                        suppressed_note(suppressed)
                    );
                }
                return;
            }
        };
        let Some(read_through) = records.last().map(|r| r.seq) else {
            return;
        };
        let writes: Vec<Entry> = records
            .iter()
            .filter(|r| r.targets.contains(&origin.name))
            .filter_map(|r| self.decode(r))
            .map(|write| Entry::Write(Arc::new(write)))
            .collect();
        backlog.refill(writes, read_through);
    }
}
