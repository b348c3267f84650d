//! The durable journal: numbered entries addressed to named targets, kept on
//! disk until every target has settled them, through crashes.
//!
//! The journal knows nothing of HTTP or of replication: an entry is its
//! sequence, its targets' names and opaque bytes (what replication stores of
//! a write, [`crate::replication`]). It is an append-only log of
//! checksummed records in numbered segment files ([`record`], `segments`,
//! `files`): entries are appended by their callers and made durable by one
//! syncer thread with group commit (`syncer`), which publishes how far it
//! got ([`Journal::durable_after`]). Each target's progress is a cursor its
//! owner moves ([`Journal::track`]) and the syncer logs as
//! acknowledgements; a segment is deleted once every entry in it is
//! settled, so disk use follows what is still pending. At start-up the log
//! is replayed and a torn tail is cut off and reported.
//!
//! Why not an embedded database: the journal is a FIFO with one cursor per
//! target. An append-only log stores a batch of entries with one `write` and one
//! `fdatasync`, deletes settled data by unlinking whole files, and can say
//! exactly what a torn tail lost. A B-tree store (redb) rewrites pages and
//! rolls back a torn commit silently; an LSM store (fjall) keeps its own log,
//! memtables and compactions for data that is deleted seconds later. The crash
//! tests in `tests/journal.rs` (SIGKILL under load, torn tails, graceful
//! restarts) and the cut-at-every-offset unit tests hold this format to it.

mod files;
mod members;
mod reader;
pub mod record;
mod segments;
mod syncer;

use crate::config::{FsyncPolicy, JournalConfig};
pub use reader::Reader;
pub use record::EntryRecord;
use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::fs::{self, File};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};
use syncer::{Shared, Synced};
use tokio::sync::watch;

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

/// What the journal held at start-up (its entries stay on disk: [`Reader`]).
#[derive(Debug, Default)]
pub struct Recovered {
    pub entries: usize,
    /// The highest sequence on disk (0 when none).
    pub last_seq: u64,
    /// Each target's settled-through sequence.
    pub cursors: BTreeMap<String, u64>,
    /// How long reading the journal took.
    pub elapsed: Duration,
}

/// The syncer thread starts after Pingora has daemonized (a fork keeps no
/// threads); appends before that simply wait for it.
enum SyncerThread {
    NotStarted,
    Running(JoinHandle<()>, Thread),
    Stopped,
}

pub struct Journal {
    shared: Arc<Shared>,
    total_bytes: Arc<AtomicU64>,
    /// `journal.max_bytes`, which a reload may change.
    max_bytes: AtomicU64,
    syncer: Mutex<SyncerThread>,
    /// The syncer, to wake it without taking the lock above on every append.
    syncer_thread: OnceLock<Thread>,
    /// The pool's targets and where each stands ([`members`]).
    members: members::Members,
    /// Held for the journal's lifetime: one process per directory.
    _lock: File,
}

/// Why an entry was not stored, or not made durable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("cannot append: {0}")]
    Append(Arc<str>),
    #[error("fdatasync failed: {0}")]
    Sync(Arc<str>),
    #[error("the journal is closed")]
    Closed,
}

/// Becomes ready once an appended entry is stored per the fsync policy.
pub struct Durability {
    seq: u64,
    wait: Option<watch::Receiver<Synced>>,
    error: Option<StoreError>,
}

impl Durability {
    /// The append itself failed: nothing was stored.
    pub fn failed(&self) -> Option<&StoreError> {
        self.error.as_ref()
    }

    /// Is it stored already as far as the fsync policy asks?
    pub fn is_ready(&self) -> bool {
        self.error.is_none() && self.wait.is_none()
    }

    pub async fn wait(self) -> Result<(), StoreError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let Some(mut synced) = self.wait else {
            return Ok(());
        };
        let seq = self.seq;
        let outcome = match synced.wait_for(|s| s.seq >= seq || s.error.is_some()).await {
            Ok(s) if s.seq >= seq => Ok(()),
            Ok(s) => Err(StoreError::Sync(
                s.error.clone().unwrap_or_else(|| Arc::from("unknown")),
            )),
            Err(_) => Err(StoreError::Closed),
        };
        outcome
    }
}

impl Journal {
    /// Opens (creating if needed) the journal directory and replays it.
    pub fn open(config: &JournalConfig) -> Result<(Journal, Recovered), JournalError> {
        let started = Instant::now();
        let dir = config.dir.clone();
        let io_error = |source| JournalError::Directory {
            path: dir.clone(),
            source,
        };
        fs::create_dir_all(&dir).map_err(io_error)?;
        let lock = lock(&dir)?;
        let numbers = segments::list(&dir).map_err(io_error)?;
        let mut replay = segments::replay(&dir, &numbers).map_err(io_error)?;
        let members = members::Members::load(&dir).map_err(io_error)?;
        members.raise(&mut replay.cursors);
        for damage in &replay.damage {
            log::error!("journal: {damage}");
        }
        let number = numbers.last().map_or(1, |n| n + 1);
        let segment_limit = files::segment_limit(config.max_bytes);
        let (active, active_bytes) =
            files::create_segment(&dir, number, &replay.cursors, segment_limit)
                .map_err(io_error)?;
        let total: u64 = replay.segments.iter().map(|s| s.bytes).sum::<u64>() + active_bytes;
        let total_bytes = Arc::new(AtomicU64::new(total));
        let written_seq = replay.last_seq;
        let log = files::Files {
            dir: dir.clone(),
            active: Arc::new(active),
            active_number: number,
            active_bytes,
            active_max_seq: 0,
            closed: VecDeque::from(replay.segments),
            cursors: replay.cursors.clone(),
            seen_acks: Vec::new(),
            segment_limit,
            total_bytes: total_bytes.clone(),
            written_seq,
            zeroed_to: active_bytes,
            buffered: Vec::new(),
            buffer_appends: config.fsync == FsyncPolicy::Always,
        };
        let shared = Arc::new(Shared {
            log: Mutex::new(log),
            policy: config.fsync,
            interval: config.fsync_interval,
            commit_delay: config.commit_delay,
            targets: Mutex::new(Vec::new()),
            synced: watch::Sender::new(Synced {
                seq: written_seq,
                error: None,
            }),
            closing: AtomicBool::new(false),
            idle: AtomicBool::new(false),
        });
        let recovered = Recovered {
            entries: replay.entries,
            last_seq: replay.last_seq,
            cursors: replay.cursors,
            elapsed: started.elapsed(),
        };
        let journal = Journal {
            shared,
            total_bytes,
            max_bytes: AtomicU64::new(config.max_bytes),
            syncer: Mutex::new(SyncerThread::NotStarted),
            syncer_thread: OnceLock::new(),
            members,
            _lock: lock,
        };
        Ok((journal, recovered))
    }

    /// Bytes the journal holds on disk.
    pub fn bytes(&self) -> u64 {
        self.total_bytes.load(Ordering::Relaxed)
    }

    /// Bytes the segment files take on disk (allocated blocks): more than
    /// [`Journal::bytes`], since a segment is allocated whole when created.
    pub fn disk_bytes(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        // Paths are read under the lock; the files are looked at outside it.
        let (active, closed) = {
            let log = self.shared.log();
            let closed: Vec<PathBuf> = log.closed.iter().map(|s| s.path.clone()).collect();
            (log.active.clone(), closed)
        };
        let allocated = |m: fs::Metadata| m.blocks() * 512;
        let closed: u64 = closed
            .iter()
            .filter_map(|path| fs::metadata(path).ok())
            .map(allocated)
            .sum();
        closed + active.metadata().map_or(0, allocated)
    }

    /// A reload's `journal.max_bytes` (segments already made keep their size).
    pub fn set_max_bytes(&self, max_bytes: u64) {
        self.max_bytes.store(max_bytes, Ordering::Relaxed);
    }

    /// Room for more entries? When full, the caller refuses new ones until
    /// targets catch up.
    pub fn has_room(&self) -> bool {
        self.bytes() < self.max_bytes.load(Ordering::Relaxed)
    }

    /// Appends the entry `seq` for `targets`, storing the concatenation of
    /// `payload` (with `fsync: interval` or `off`, one `write` into the
    /// page cache, so a process crash loses nothing from here on; with
    /// `always`, into the group the syncer writes); wait on the answer for
    /// the fsync policy.
    pub fn append(&self, seq: u64, targets: &[&str], payload: &[&[u8]]) -> Durability {
        let size: usize = payload.iter().map(|piece| piece.len()).sum();
        let mut bytes = Vec::with_capacity(64 + 16 * targets.len() + size);
        record::encode_entry(seq, targets, payload, &mut bytes);
        let appended = self.shared.log().append(&bytes, seq);
        if let Err(e) = appended {
            log::error!("journal: cannot append entry #{seq}: {e}");
            return Durability {
                seq,
                wait: None,
                error: Some(StoreError::Append(Arc::from(e.to_string()))),
            };
        }
        let wait = if self.shared.policy == FsyncPolicy::Always {
            self.syncer_thread.get().inspect(|thread| thread.unpark());
            Some(self.shared.synced.subscribe())
        } else {
            self.shared.wake_if_idle(self.syncer_thread.get());
            None
        };
        Durability {
            seq,
            wait,
            error: None,
        }
    }

    /// The cursor of the target `name`: its owner raises it (`fetch_max`)
    /// to the sequence through which the target has settled every entry
    /// addressed to it, and the syncer logs it within `fsync_interval`
    /// (losing the last few in a crash only means those entries are
    /// delivered again). It starts at what the journal remembers for the
    /// name, or at `settled` if that is later: a target that joins now has
    /// everything so far behind it.
    pub fn track(&self, name: &str, settled: u64) -> Arc<AtomicU64> {
        // Not under the targets' lock: the syncer takes the log's first.
        let remembered = self.shared.log().cursors.get(name).copied();
        let cursor = Arc::new(AtomicU64::new(remembered.unwrap_or(0).max(settled)));
        self.shared
            .targets()
            .push((name.to_owned(), cursor.clone()));
        cursor
    }

    /// Waits until the syncer has made entries past `known` durable (with
    /// `fsync: always`, after each `fdatasync`); returns the highest durable
    /// sequence, or `None` once the journal is gone.
    pub async fn durable_after(&self, known: u64) -> Option<u64> {
        let mut synced = self.shared.synced.subscribe();
        let synced = synced.wait_for(|s| s.seq > known).await.ok()?;
        Some(synced.seq)
    }

    /// Reads entries back from the segments from the sequence `from` on
    /// (see [`Reader`]).
    pub fn reader(&self, from: u64) -> Reader {
        Reader::new(self.shared.clone(), from)
    }

    /// Deletes segments whose entries are all below `below`.
    pub fn trim(&self, below: u64) {
        self.shared.log().trim(below);
    }

    /// Starts the syncer thread (once; later calls do nothing).
    pub fn start(&self) -> std::io::Result<()> {
        let mut state = self.syncer.lock().unwrap_or_else(|e| e.into_inner());
        if let SyncerThread::NotStarted = &*state {
            let shared = self.shared.clone();
            let handle = std::thread::Builder::new()
                .name("hothot-journal".to_owned())
                .spawn(move || syncer::run(shared))?;
            let thread = handle.thread().clone();
            thread.unpark(); // appends made before the start are waiting
            let _ = self.syncer_thread.set(thread.clone());
            *state = SyncerThread::Running(handle, thread);
        }
        Ok(())
    }

    /// Logs the last acknowledgements, syncs, and stops the syncer.
    pub fn close(&self) {
        self.shared.closing.store(true, Ordering::Release);
        let state = std::mem::replace(
            &mut *self.syncer.lock().unwrap_or_else(|e| e.into_inner()),
            SyncerThread::Stopped,
        );
        match state {
            SyncerThread::Running(handle, thread) => {
                thread.unpark();
                let _ = handle.join();
            }
            // No syncer ever ran: what was appended is written here.
            SyncerThread::NotStarted => {
                let mut log = self.shared.log();
                if let Err(e) = log.write_buffered().and_then(|()| log.active.sync_data()) {
                    log::error!("journal: cannot write {}: {e}", log.dir.display());
                }
            }
            SyncerThread::Stopped => {}
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
