//! The durable replication journal: every write whose replication is pending
//! is on disk before its client is answered, and survives crashes until every
//! peer has it.
//!
//! An append-only log of checksummed records in numbered segment files
//! ([`record`], [`segments`]), written by one thread with group commit
//! ([`writer`]). Peers' progress is logged as acknowledgements; a segment is
//! deleted once every write in it is settled, so disk use follows what is
//! still pending. At start-up the log is replayed and a torn tail is cut off
//! and reported.
//!
//! Why not an embedded database: the journal is a FIFO with one cursor per
//! peer. An append-only log stores a batch of writes with one `write` and one
//! `fdatasync`, deletes settled data by unlinking whole files, and can say
//! exactly what a torn tail lost. A B-tree store (redb) rewrites pages and
//! rolls back a torn commit silently; an LSM store (fjall) keeps its own log,
//! memtables and compactions for data that is deleted seconds later. The crash
//! tests in `tests/journal.rs` (SIGKILL under load, torn tails, graceful
//! restarts) and the cut-at-every-offset unit tests hold this format to it.

pub mod record;
mod segments;
mod writer;

use crate::config::JournalConfig;
use record::{WriteRecord, WriteView};
use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use writer::{Command, Writer};

/// How long start-up waits for another process to release the journal (an
/// older hothot finishing its graceful shutdown during an upgrade).
const LOCK_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal directory {path}: {source}")]
    Directory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("journal directory {0} is in use by another hothot (waited {LOCK_WAIT:?})")]
    Locked(PathBuf),
}

/// What the journal held at start-up.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Every write still on disk, in sequence order.
    pub writes: Vec<WriteRecord>,
    /// Each peer's settled-through sequence.
    pub cursors: BTreeMap<String, u64>,
    /// How long reading the journal took.
    pub elapsed: Duration,
}

/// The writer thread starts after Pingora has daemonized (a fork keeps no
/// threads); until then, commands wait in the channel.
enum WriterThread {
    NotStarted(Box<Writer>, Receiver<Command>),
    Running(JoinHandle<()>),
    Stopped,
}

pub struct Journal {
    commands: Mutex<Sender<Command>>,
    /// Newest settled sequence per peer, indexed like the `peers` given to `open`.
    acks: Arc<Vec<AtomicU64>>,
    total_bytes: Arc<AtomicU64>,
    max_bytes: u64,
    writer: Mutex<WriterThread>,
    /// Held for the journal's lifetime: one process per directory.
    _lock: File,
}

impl Journal {
    /// Opens (creating if needed) the journal directory and replays it.
    /// `peers` are the names acknowledgements will refer to by index.
    pub fn open(
        config: &JournalConfig,
        peers: &[String],
    ) -> Result<(Journal, Recovered), JournalError> {
        let started = Instant::now();
        let dir = config.dir.clone();
        let io_error = |source| JournalError::Directory {
            path: dir.clone(),
            source,
        };
        fs::create_dir_all(&dir).map_err(io_error)?;
        let lock = lock(&dir)?;
        let numbers = segments::list(&dir).map_err(io_error)?;
        let replay = segments::replay(&dir, &numbers).map_err(io_error)?;
        for damage in &replay.damage {
            log::error!("journal: {damage}");
        }
        let number = numbers.last().map_or(1, |n| n + 1);
        let (active, active_bytes) =
            writer::create_segment(&dir, number, &replay.cursors).map_err(io_error)?;
        let total: u64 = replay.segments.iter().map(|s| s.bytes).sum::<u64>() + active_bytes;
        let total_bytes = Arc::new(AtomicU64::new(total));
        let (commands, receiver) = mpsc::channel();
        let acks: Arc<Vec<AtomicU64>> = Arc::new(
            peers
                .iter()
                .map(|p| AtomicU64::new(replay.cursors.get(p).copied().unwrap_or(0)))
                .collect(),
        );
        let writer = Writer {
            peers: peers.to_vec(),
            acks: acks.clone(),
            dir: dir.clone(),
            policy: config.fsync,
            interval: config.fsync_interval,
            active,
            active_number: number,
            active_bytes,
            active_max_seq: 0,
            closed: VecDeque::from(replay.segments),
            segment_limit: writer::segment_limit(config.max_bytes),
            cursors: replay.cursors.clone(),
            total_bytes: total_bytes.clone(),
        };
        let recovered = Recovered {
            writes: replay.writes.into_values().collect(),
            cursors: replay.cursors,
            elapsed: started.elapsed(),
        };
        let journal = Journal {
            commands: Mutex::new(commands),
            acks,
            total_bytes,
            max_bytes: config.max_bytes,
            writer: Mutex::new(WriterThread::NotStarted(Box::new(writer), receiver)),
            _lock: lock,
        };
        Ok((journal, recovered))
    }

    fn send(&self, command: Command) -> bool {
        let commands = self.commands.lock().unwrap_or_else(|e| e.into_inner());
        commands.send(command).is_ok()
    }

    /// Bytes the journal holds on disk.
    pub fn bytes(&self) -> u64 {
        self.total_bytes.load(Ordering::Relaxed)
    }

    /// Room for more writes? When full, new writes are refused until peers catch up.
    pub fn has_room(&self) -> bool {
        self.bytes() < self.max_bytes
    }

    /// Appends a write; the answer comes once it is stored per the fsync policy.
    pub fn append(&self, write: &WriteView<'_>) -> oneshot::Receiver<Result<(), String>> {
        let mut bytes = Vec::with_capacity(256 + write.body.len());
        write.encode(&mut bytes);
        let (done, answer) = oneshot::channel();
        let command = Command::Append {
            bytes,
            seq: write.seq,
            done,
        };
        if !self.send(command) {
            log::error!(
                "journal: the writer has stopped; write #{} is not journaled",
                write.seq
            );
        }
        answer
    }

    /// The peer `peers[index]` (as given to [`Journal::open`]) has settled
    /// every write addressed to it up to `seq`. Acks are picked up by the
    /// writer with its next batch or tick; losing the last few in a crash only
    /// means those copies are sent again, and deduplicated by the peer.
    pub fn ack(&self, index: usize, seq: u64) {
        if let Some(cursor) = self.acks.get(index) {
            cursor.fetch_max(seq, Ordering::Relaxed);
        }
    }

    /// Lets the journal delete segments whose writes are all below `below`.
    pub fn trim(&self, below: u64) {
        self.send(Command::Trim { below });
    }

    /// Starts the writer thread (once; later calls do nothing).
    pub fn start(&self) -> std::io::Result<()> {
        let mut state = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if let WriterThread::NotStarted(..) = &*state {
            let WriterThread::NotStarted(writer, receiver) =
                std::mem::replace(&mut *state, WriterThread::Stopped)
            else {
                return Ok(());
            };
            let thread = std::thread::Builder::new()
                .name("hothot-journal".to_owned())
                .spawn(move || writer.run(receiver))?;
            *state = WriterThread::Running(thread);
        }
        Ok(())
    }

    /// Flushes and syncs what is buffered, and stops the writer.
    pub fn close(&self) {
        self.send(Command::Close);
        let state = std::mem::replace(
            &mut *self.writer.lock().unwrap_or_else(|e| e.into_inner()),
            WriterThread::Stopped,
        );
        if let WriterThread::Running(thread) = state {
            let _ = thread.join();
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.close();
    }
}

fn lock(dir: &std::path::Path) -> Result<File, JournalError> {
    let path = dir.join("LOCK");
    let file = File::create(&path).map_err(|source| JournalError::Directory {
        path: dir.to_owned(),
        source,
    })?;
    let deadline = Instant::now() + LOCK_WAIT;
    let mut warned = false;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                if !warned {
                    log::warn!(
                        "journal: {} is locked by another hothot; waiting",
                        dir.display()
                    );
                    warned = true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(fs::TryLockError::WouldBlock) => return Err(JournalError::Locked(dir.to_owned())),
            Err(fs::TryLockError::Error(source)) => {
                return Err(JournalError::Directory {
                    path: dir.to_owned(),
                    source,
                })
            }
        }
    }
}
