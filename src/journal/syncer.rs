//! The syncer thread: makes appended entries durable and logs acknowledgements.
//!
//! With `fsync: always` it runs `fdatasync` whenever entries are waiting, and
//! every entry appended while one `fdatasync` runs shares the next one (group
//! commit). While it is busy (groups of `BUSY_GROUP` or more), it starts an
//! `fdatasync` at most every `commit_delay`, so more entries share each one.
//! It publishes the synced sequence, which appenders wait on. With
//! `interval` it syncs every `fsync_interval`; with `off` only when closing.
//! In every mode it logs the targets' acknowledgements, at most every
//! `fsync_interval`.

use super::files::Files;
use crate::config::FsyncPolicy;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What the syncer has made durable.
#[derive(Debug, Clone, Default)]
pub struct Synced {
    pub seq: u64,
    /// Set when `fdatasync` failed: waiting clients are told, not left hanging.
    pub error: Option<Arc<str>>,
}

/// A group commit of at least this many entries means the journal is busy,
/// and the next one waits `commit_delay` to gather more.
const BUSY_GROUP: u64 = 4;

pub struct Shared {
    pub log: Mutex<Files>,
    pub policy: FsyncPolicy,
    pub interval: Duration,
    pub commit_delay: Duration,
    /// Targets' names and their newest settled sequences, in the order
    /// they were tracked (retired ones stay, settled for good).
    pub targets: Mutex<Vec<(String, Arc<AtomicU64>)>>,
    /// Highest sequence known durable; appenders with `fsync: always` wait on it.
    pub synced: watch::Sender<Synced>,
    pub closing: AtomicBool,
    /// Set by the syncer when it found nothing to do and sleeps
    /// [`IDLE_PARK`]; an append that finds it set wakes the syncer.
    pub idle: AtomicBool,
}

/// How long an idle syncer sleeps between looks (instead of
/// `fsync_interval`). Appends wake it at once; targets' progress made
/// while it sleeps (a slow origin's last answers) is logged up to this
/// late, which after a crash only means those entries are delivered again.
/// Why: an idle journal woke 100 times a second, 3 ms of CPU per second.
pub const IDLE_PARK: Duration = Duration::from_millis(250);

impl Shared {
    pub fn log(&self) -> MutexGuard<'_, Files> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn targets(&self) -> MutexGuard<'_, Vec<(String, Arc<AtomicU64>)>> {
        self.targets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Called by appends that do not wake the syncer (`interval`, `off`):
    /// the first after a quiet spell does, so that its entry is written
    /// and synced within `fsync_interval` as usual.
    pub fn wake_if_idle(&self, syncer: Option<&std::thread::Thread>) {
        if self.idle.load(Ordering::Relaxed) && self.idle.swap(false, Ordering::SeqCst) {
            syncer.inspect(|thread| thread.unpark());
        }
    }
}

pub fn run(shared: Arc<Shared>) {
    // When the last fdatasync started: `interval` syncs every
    // `fsync_interval` from there, and a busy `always` journal's next one
    // starts no sooner than `commit_delay` after it.
    let mut last_sync = Instant::now();
    let mut last_acks = Instant::now();
    // Writes the last group commit made durable.
    let mut last_group = 0;
    loop {
        // A busy journal lets entries gather until `commit_delay` after its
        // last sync started: fewer, larger fdatasyncs cost less CPU per entry
        // (each one is a few device commands, and on a VM a few exits). A
        // sync slower than that waits no more, and a quiet journal syncs at
        // once, so light load pays nothing.
        if shared.policy == FsyncPolicy::Always && last_group >= BUSY_GROUP {
            let waited = last_sync.elapsed();
            if waited < shared.commit_delay {
                std::thread::sleep(shared.commit_delay - waited);
            }
        }
        let closing = shared.closing.load(Ordering::Acquire);
        // Acks are logged at most every `fsync_interval`, not on every group
        // commit: a crash then re-sends at most that much, which targets deduplicate.
        let log_acks = closing || last_acks.elapsed() >= shared.interval;
        if log_acks {
            last_acks = Instant::now();
        }
        let (file, target, acks_logged, unwritten) = {
            let mut log = shared.log();
            let acks_logged = log_acks
                && log.append_acks(&shared.targets()).unwrap_or_else(|e| {
                    log::error!(
                        "journal: cannot log acknowledgements in {}: {e}",
                        log.dir.display()
                    );
                    false
                });
            // The group's appends go in with one write (`fsync: always`).
            let unwritten = log.write_buffered().err().map(|e| {
                log::error!("journal: cannot write to {}: {e}", log.dir.display());
                Arc::<str>::from(e.to_string())
            });
            log.zero_ahead();
            (log.active.clone(), log.written_seq, acks_logged, unwritten)
        };
        let behind = target > shared.synced.borrow().seq;
        let due = match shared.policy {
            FsyncPolicy::Always => behind,
            FsyncPolicy::Interval => {
                (behind || acks_logged) && last_sync.elapsed() >= shared.interval
            }
            FsyncPolicy::Off => false,
        };
        if due || closing {
            // Entries up to `target` are in this segment or in closed ones,
            // which were synced when they rolled over.
            last_sync = Instant::now();
            let synced = file.sync_data().err().map(|e| {
                log::error!("journal: fdatasync failed: {e}");
                Arc::from(e.to_string())
            });
            let error = unwritten.or(synced);
            last_group = target.saturating_sub(shared.synced.borrow().seq);
            shared.synced.send_replace(Synced { seq: target, error });
        } else {
            last_group = 0;
        }
        if closing {
            return;
        }
        // Nothing was logged or synced, and nothing waits for a sync
        // (`off` never syncs).
        let quiet = !acks_logged && !due && (!behind || shared.policy == FsyncPolicy::Off);
        if quiet {
            shared.idle.store(true, Ordering::SeqCst);
            // An append between the look above and the flag would not
            // have woken us (`always` appends wake us regardless): look
            // once more now that the flag is up.
            let unsynced = shared.policy == FsyncPolicy::Interval
                && shared.log().written_seq > shared.synced.borrow().seq;
            if !unsynced {
                std::thread::park_timeout(IDLE_PARK);
            }
            shared.idle.store(false, Ordering::SeqCst);
        } else if shared.policy != FsyncPolicy::Always || target == shared.synced.borrow().seq {
            std::thread::park_timeout(shared.interval);
        }
    }
}
