//! The journal's writer thread: the only code that touches the active segment.
//!
//! Requests queue on a channel; the thread takes everything queued at once,
//! writes it with one `write`, and (with `fsync: always`) one `fdatasync`
//! before answering every waiting client of that batch: group commit.

use super::record::Record;
use super::segments::{segment_path, SegmentInfo};
use crate::config::FsyncPolicy;
use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Segments roll over at this size (or a quarter of `max_bytes` if smaller),
/// so that settled ones can be deleted whole.
const SEGMENT_BYTES: u64 = 16 << 20;

pub fn segment_limit(max_bytes: u64) -> u64 {
    SEGMENT_BYTES.min(max_bytes / 4).max(64 << 10)
}

pub enum Command {
    /// A framed write record; answered once it is stored per the fsync policy.
    Append {
        bytes: Vec<u8>,
        seq: u64,
        done: oneshot::Sender<Result<(), String>>,
    },
    /// Delete closed segments holding only writes below this sequence.
    Trim { below: u64 },
    /// Sync, then stop.
    Close,
}

pub struct Writer {
    /// Peer names, indexed like `acks`.
    pub peers: Vec<String>,
    /// Newest settled sequence per peer, set by the delivery workers.
    pub acks: Arc<Vec<AtomicU64>>,
    pub dir: PathBuf,
    pub policy: FsyncPolicy,
    pub interval: Duration,
    pub active: File,
    pub active_number: u64,
    pub active_bytes: u64,
    pub active_max_seq: u64,
    pub closed: VecDeque<SegmentInfo>,
    /// Size at which the active segment rolls over.
    pub segment_limit: u64,
    pub cursors: BTreeMap<String, u64>,
    /// Total bytes on disk, shared with the admission check.
    pub total_bytes: Arc<AtomicU64>,
}

impl Writer {
    pub fn run(mut self, commands: Receiver<Command>) {
        let mut last_sync = Instant::now();
        let mut unsynced = false;
        let mut open = true;
        while open {
            let first = match commands.recv_timeout(self.interval) {
                Ok(command) => Some(command),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut buffer = Vec::new();
            let mut waiters = Vec::new();
            let mut trim_below = None;
            for command in first.into_iter().chain(commands.try_iter()) {
                match command {
                    Command::Append { bytes, seq, done } => {
                        buffer.extend_from_slice(&bytes);
                        self.active_max_seq = self.active_max_seq.max(seq);
                        waiters.push(done);
                    }
                    Command::Trim { below } => trim_below = Some(below),
                    Command::Close => open = false,
                }
            }
            self.take_acks(&mut buffer);
            let mut result = self.write(&buffer);
            unsynced |= !buffer.is_empty();
            let sync_now = match self.policy {
                FsyncPolicy::Always => !waiters.is_empty(),
                FsyncPolicy::Interval => last_sync.elapsed() >= self.interval,
                FsyncPolicy::Off => !open,
            } || !open;
            if unsynced && sync_now && result.is_ok() {
                result = self.active.sync_data();
                last_sync = Instant::now();
                unsynced = false;
            }
            let answer = result.as_ref().map(|_| ()).map_err(|e| e.to_string());
            if let Err(e) = &result {
                log::error!("journal: cannot write {}: {e}", self.dir.display());
            }
            for waiter in waiters {
                let _ = waiter.send(answer.clone());
            }
            if let Err(e) = self.roll_if_full() {
                log::error!(
                    "journal: cannot start a new segment in {}: {e}",
                    self.dir.display()
                );
            }
            if let Some(below) = trim_below {
                self.trim(below);
            }
        }
    }

    /// Logs the acknowledgements that moved since the last batch.
    fn take_acks(&mut self, buffer: &mut Vec<u8>) {
        for (peer, ack) in self.peers.iter().zip(self.acks.iter()) {
            let seq = ack.load(Ordering::Relaxed);
            let cursor = self.cursors.entry(peer.clone()).or_insert(0);
            if seq > *cursor {
                *cursor = seq;
                Record::Ack {
                    peer: peer.clone(),
                    seq,
                }
                .encode(buffer);
            }
        }
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.active.write_all(bytes)?;
        self.active_bytes += bytes.len() as u64;
        self.total_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn roll_if_full(&mut self) -> io::Result<()> {
        if self.active_bytes < self.segment_limit {
            return Ok(());
        }
        self.active.sync_data()?;
        let number = self.active_number + 1;
        let (file, bytes) = create_segment(&self.dir, number, &self.cursors)?;
        self.closed.push_back(SegmentInfo {
            path: segment_path(&self.dir, self.active_number),
            bytes: self.active_bytes,
            max_seq: self.active_max_seq,
        });
        self.total_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.active = file;
        self.active_number = number;
        self.active_bytes = bytes;
        self.active_max_seq = 0;
        Ok(())
    }

    fn trim(&mut self, below: u64) {
        while let Some(oldest) = self.closed.front() {
            if oldest.max_seq >= below {
                break;
            }
            if let Err(e) = std::fs::remove_file(&oldest.path) {
                log::error!("journal: cannot delete {}: {e}", oldest.path.display());
                break;
            }
            self.total_bytes.fetch_sub(oldest.bytes, Ordering::Relaxed);
            self.closed.pop_front();
        }
    }
}

/// Creates segment `number`, starting with a checkpoint of `cursors`, durably.
pub fn create_segment(
    dir: &std::path::Path,
    number: u64,
    cursors: &BTreeMap<String, u64>,
) -> io::Result<(File, u64)> {
    let path = segment_path(dir, number);
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)?;
    let mut bytes = Vec::new();
    Record::Checkpoint(cursors.iter().map(|(p, s)| (p.clone(), *s)).collect()).encode(&mut bytes);
    file.write_all(&bytes)?;
    file.sync_data()?;
    // The new name must survive a crash too.
    File::open(dir)?.sync_all()?;
    Ok((file, bytes.len() as u64))
}
