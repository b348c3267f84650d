//! Where the order is kept: the narrow interface between the sequencer and
//! the log that stores the writes until every origin has them.
//!
//! A log stores numbered entries, each addressed to named targets (the
//! origins) and holding opaque bytes (what `super::payload` encodes of a
//! write); says when they are durable; and remembers how far each target
//! has settled the sequence, so that a restart delivers exactly what is
//! left. The local journal ([`crate::journal`]) is the first
//! implementation; a shared log for several instances is a second one
//! behind the same trait, not a second write path.

use crate::journal::{Durability, EntryRecord, Journal, StoreError};
use async_trait::async_trait;
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// How much room the log takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of what it holds (what `journal.max_bytes` limits).
    pub bytes: u64,
    /// Bytes it takes on disk.
    pub disk_bytes: u64,
}

/// An appended entry, on its way to being durable.
pub enum Stored {
    /// Stored as far as the log's policy asks.
    Ready,
    /// Durable once this completes.
    Pending(BoxFuture<'static, Result<(), StoreError>>),
    /// The append failed: nothing was stored.
    Failed(StoreError),
}

impl Stored {
    /// The append itself failed: nothing was stored.
    pub fn failed(&self) -> Option<&StoreError> {
        match self {
            Stored::Failed(error) => Some(error),
            _ => None,
        }
    }

    /// Waits until the entry is durable per the log's policy.
    pub async fn wait(self) -> Result<(), StoreError> {
        match self {
            Stored::Ready => Ok(()),
            Stored::Pending(wait) => wait.await,
            Stored::Failed(error) => Err(error),
        }
    }
}

impl From<Durability> for Stored {
    fn from(durability: Durability) -> Self {
        match durability.failed() {
            Some(error) => Stored::Failed(error.clone()),
            None if durability.is_ready() => Stored::Ready,
            None => Stored::Pending(Box::pin(durability.wait())),
        }
    }
}

/// Where a target stands, as the log remembers it (#24).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// It receives the sequence; with `Some(cut)`, a resync gave it every
    /// entry through `cut`, so that its cursor never starts below it.
    Current(Option<u64>),
    /// Cut loose: it gets nothing until a resync.
    Detached,
}

/// Applies `changes` (as [`Log::mark`] takes them) to `members`, for logs
/// that keep the marks in memory.
pub fn apply_marks(
    members: &mut Option<BTreeMap<String, Mark>>,
    changes: &[(String, Option<Mark>)],
) {
    let members = members.get_or_insert_default();
    for (name, mark) in changes {
        match mark {
            Some(mark) => members.insert(name.clone(), *mark),
            None => members.remove(name),
        };
    }
}

#[async_trait]
pub trait Log: Send + Sync {
    /// Stores the entry numbered `seq` (numbers only grow), addressed to
    /// `targets`, holding the concatenation of `payload`.
    fn append(&self, seq: u64, targets: &[&str], payload: &[&[u8]]) -> Stored;

    /// Waits until entries past `known` are durable; the highest durable
    /// sequence, or `None` once the log is gone.
    async fn durable_after(&self, known: u64) -> Option<u64>;

    /// The settled-through cursor of the target `name`, starting at least
    /// at `settled`; its owner raises it, the log keeps it.
    fn track(&self, name: &str, settled: u64) -> Arc<AtomicU64>;

    /// Room for more entries (under `journal.max_bytes`)?
    fn has_room(&self) -> bool;

    /// A reload's `journal.max_bytes`.
    fn set_max_bytes(&self, max_bytes: u64);

    /// Lets the log drop what every target has settled: everything below `below`.
    fn trim(&self, below: u64);

    /// Reads entries back from the sequence `from` on (a backlog that
    /// spilled, [`super::spill`]).
    fn reader(&self, from: u64) -> Box<dyn LogReader>;

    fn usage(&self) -> Usage;

    /// The pool's targets and where each stands, as the log remembers them
    /// across restarts; `None` if it never recorded any.
    fn members(&self) -> Option<BTreeMap<String, Mark>>;

    /// Records `changes` (`None`: the target left the pool); kept when this
    /// returns.
    fn mark(&self, changes: &[(String, Option<Mark>)]) -> std::io::Result<()>;

    /// Starts the log's own workers (after Pingora has daemonized).
    fn start(&self) -> std::io::Result<()>;

    /// Stores the last cursors and stops.
    fn close(&self);
}

/// Entries read back from a log, in sequence order, from where the last
/// read stopped.
pub trait LogReader: Send {
    /// The next sequence this reader returns (or skips to).
    fn next_seq(&self) -> u64;

    /// Up to `max` entries numbered through `up_to`; fewer when the log
    /// holds no more yet.
    fn read(&mut self, up_to: u64, max: usize) -> std::io::Result<Vec<EntryRecord>>;
}

impl LogReader for crate::journal::Reader {
    fn next_seq(&self) -> u64 {
        crate::journal::Reader::next_seq(self)
    }

    fn read(&mut self, up_to: u64, max: usize) -> std::io::Result<Vec<EntryRecord>> {
        crate::journal::Reader::read(self, up_to, max)
    }
}

#[async_trait]
impl Log for Journal {
    fn append(&self, seq: u64, targets: &[&str], payload: &[&[u8]]) -> Stored {
        Journal::append(self, seq, targets, payload).into()
    }

    async fn durable_after(&self, known: u64) -> Option<u64> {
        Journal::durable_after(self, known).await
    }

    fn track(&self, name: &str, settled: u64) -> Arc<AtomicU64> {
        Journal::track(self, name, settled)
    }

    fn has_room(&self) -> bool {
        Journal::has_room(self)
    }

    fn set_max_bytes(&self, max_bytes: u64) {
        Journal::set_max_bytes(self, max_bytes)
    }

    fn trim(&self, below: u64) {
        Journal::trim(self, below)
    }

    fn reader(&self, from: u64) -> Box<dyn LogReader> {
        Box::new(Journal::reader(self, from))
    }

    fn usage(&self) -> Usage {
        Usage {
            bytes: self.bytes(),
            disk_bytes: self.disk_bytes(),
        }
    }

    fn members(&self) -> Option<BTreeMap<String, Mark>> {
        Journal::members(self)
    }

    fn mark(&self, changes: &[(String, Option<Mark>)]) -> std::io::Result<()> {
        Journal::mark(self, changes)
    }

    fn start(&self) -> std::io::Result<()> {
        Journal::start(self)
    }

    fn close(&self) {
        Journal::close(self)
    }
}

#[cfg(test)]
pub mod memory {
    //! A log in memory for the sequencer's unit tests: it keeps what was
    //! appended, and entries become durable only when the test says so.

    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use tokio::sync::watch;

    /// An appended entry: its sequence, targets and payload.
    pub type Appended = (u64, Vec<String>, Vec<u8>);

    #[derive(Default)]
    pub struct MemoryLog {
        pub entries: Mutex<Vec<Appended>>,
        pub cursors: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
        pub members: Mutex<Option<BTreeMap<String, Mark>>>,
        durable: watch::Sender<u64>,
    }

    impl MemoryLog {
        /// Entries up to `seq` are durable now.
        pub fn make_durable(&self, seq: u64) {
            self.durable.send_replace(seq);
        }

        /// Where the target `name`'s cursor is.
        pub fn cursor(&self, name: &str) -> Option<u64> {
            let cursors = self.cursors.lock().unwrap();
            cursors
                .get(name)
                .map(|c| c.load(std::sync::atomic::Ordering::Acquire))
        }
    }

    /// What was appended when it was made, read back.
    struct MemoryReader {
        entries: Vec<Appended>,
        next_seq: u64,
    }

    impl LogReader for MemoryReader {
        fn next_seq(&self) -> u64 {
            self.next_seq
        }

        fn read(&mut self, up_to: u64, max: usize) -> std::io::Result<Vec<EntryRecord>> {
            let read: Vec<EntryRecord> = (self.entries.iter())
                .filter(|(seq, _, _)| (self.next_seq..=up_to).contains(seq))
                .take(max)
                .map(|(seq, targets, payload)| EntryRecord {
                    seq: *seq,
                    targets: targets.clone(),
                    payload: payload.clone().into(),
                })
                .collect();
            if let Some(last) = read.last() {
                self.next_seq = last.seq + 1;
            }
            Ok(read)
        }
    }

    #[async_trait]
    impl Log for MemoryLog {
        fn append(&self, seq: u64, targets: &[&str], payload: &[&[u8]]) -> Stored {
            let targets = targets.iter().map(|t| t.to_string()).collect();
            let entries = &mut self.entries.lock().unwrap();
            entries.push((seq, targets, payload.concat()));
            Stored::Ready
        }

        async fn durable_after(&self, known: u64) -> Option<u64> {
            let mut durable = self.durable.subscribe();
            durable.wait_for(|seq| *seq > known).await.ok().map(|s| *s)
        }

        fn track(&self, name: &str, settled: u64) -> Arc<AtomicU64> {
            let cursor = Arc::new(AtomicU64::new(settled));
            let cursors = &mut self.cursors.lock().unwrap();
            cursors.insert(name.to_owned(), cursor.clone());
            cursor
        }

        fn has_room(&self) -> bool {
            true
        }

        fn set_max_bytes(&self, _max_bytes: u64) {}

        fn trim(&self, _below: u64) {}

        fn reader(&self, from: u64) -> Box<dyn LogReader> {
            let entries = self.entries.lock().unwrap().clone();
            Box::new(MemoryReader {
                entries,
                next_seq: from,
            })
        }

        fn usage(&self) -> Usage {
            Usage::default()
        }

        fn members(&self) -> Option<BTreeMap<String, Mark>> {
            self.members.lock().unwrap().clone()
        }

        fn mark(&self, changes: &[(String, Option<Mark>)]) -> std::io::Result<()> {
            apply_marks(&mut self.members.lock().unwrap(), changes);
            Ok(())
        }

        fn start(&self) -> std::io::Result<()> {
            Ok(())
        }

        fn close(&self) {}
    }
}
