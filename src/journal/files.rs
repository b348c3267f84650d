//! The journal's files: the active segment being appended to, the closed
//! segments still holding unsettled entries, and each target's settled cursor.
//!
//! With `fsync: interval` or `off`, appends are written straight from the
//! caller (one `write` into the page cache, under this lock), so a process
//! crash loses nothing. With `fsync: always`, whose clients wait for the syncer
//! anyway, appends are buffered and the syncer writes each group with one
//! `write` before its `fdatasync`.
//!
//! Each segment is allocated at its full size when it is created, and the
//! syncer writes zeros a little ahead of the appends ([`Files::zero_ahead`]).
//! `fdatasync` then flushes only the data: a file that grew, or allocated
//! space written for the first time (an "unwritten" extent that must be
//! converted), would also need its inode written, a second I/O on every group
//! commit. Measured here, 5 kB appended and synced 2,000 times: 150 µs per
//! sync when the file grows, 144 µs into allocated space, 97 µs into zeros.
//! The unwritten rest reads as zeros, which replay takes as the end
//! (`segments`).

use super::record::Record;
use super::segments::{segment_path, SegmentInfo};
use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Segments roll over at this size (or a quarter of `max_bytes` if smaller),
/// so that settled ones can be deleted whole.
const SEGMENT_BYTES: u64 = 16 << 20;

/// The syncer keeps the segment zero-filled up to `ZERO_AHEAD` past the
/// appends, topping it up when less than `ZERO_CHUNK` is left: one larger
/// sync every few hundred writes instead of an inode write on every sync.
const ZERO_CHUNK: u64 = 128 << 10;
const ZERO_AHEAD: u64 = 4 * ZERO_CHUNK;

pub fn segment_limit(max_bytes: u64) -> u64 {
    SEGMENT_BYTES.min(max_bytes / 4).max(64 << 10)
}

pub struct Files {
    pub dir: PathBuf,
    pub active: Arc<File>,
    pub active_number: u64,
    pub active_bytes: u64,
    pub active_max_seq: u64,
    pub closed: VecDeque<SegmentInfo>,
    /// Each target's settled-through sequence, as logged.
    pub cursors: BTreeMap<String, u64>,
    /// The same by position in the journal's tracked targets, as last seen
    /// by [`Files::append_acks`]: lets it pass over a target that has not
    /// moved without a lookup by name.
    pub seen_acks: Vec<u64>,
    pub segment_limit: u64,
    /// Total bytes on disk, shared with the admission check.
    pub total_bytes: Arc<AtomicU64>,
    /// Highest sequence appended (in the files, or in `buffered` until the
    /// syncer writes it; not necessarily synced).
    pub written_seq: u64,
    /// The active segment is written (with data or zeros) up to here.
    pub zeroed_to: u64,
    /// Appended records not yet in the file (their bytes count in
    /// `active_bytes`); only when `buffer_appends`.
    pub buffered: Vec<u8>,
    pub buffer_appends: bool,
}

impl Files {
    /// Appends framed records holding entries up to `seq`.
    pub fn append(&mut self, bytes: &[u8], seq: u64) -> io::Result<()> {
        if self.buffer_appends {
            self.buffered.extend_from_slice(bytes);
        } else {
            self.active.write_all_at(bytes, self.active_bytes)?;
        }
        self.active_bytes += bytes.len() as u64;
        self.zeroed_to = self.zeroed_to.max(self.active_bytes);
        self.active_max_seq = self.active_max_seq.max(seq);
        self.written_seq = self.written_seq.max(seq);
        self.total_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.roll_if_full()
    }

    /// Logs the targets' acknowledgements that moved; true if any did.
    pub fn append_acks(&mut self, targets: &[(String, Arc<AtomicU64>)]) -> io::Result<bool> {
        let mut bytes = Vec::new();
        for (index, (target, ack)) in targets.iter().enumerate() {
            let seq = ack.load(Ordering::Acquire);
            // This runs every `fsync_interval` even when idle; with 1,000
            // origins a name lookup (a clone and a tree walk) per target
            // each time cost the journal's thread 1.6% of a core.
            if self.seen_acks.len() <= index {
                self.seen_acks.resize(index + 1, 0);
            }
            if seq <= self.seen_acks[index] {
                continue;
            }
            self.seen_acks[index] = seq;
            let cursor = self.cursors.entry(target.clone()).or_insert(0);
            if seq > *cursor {
                *cursor = seq;
                Record::Ack {
                    target: target.clone(),
                    seq,
                }
                .encode(&mut bytes);
            }
        }
        if bytes.is_empty() {
            return Ok(false);
        }
        self.append(&bytes, 0)?;
        Ok(true)
    }

    /// Writes the buffered appends to the active segment, where they belong.
    /// On failure they stay buffered, to be tried again.
    pub fn write_buffered(&mut self) -> io::Result<()> {
        if self.buffered.is_empty() {
            return Ok(());
        }
        let start = self.active_bytes - self.buffered.len() as u64;
        self.active.write_all_at(&self.buffered, start)?;
        self.buffered.clear();
        Ok(())
    }

    fn roll_if_full(&mut self) -> io::Result<()> {
        if self.active_bytes < self.segment_limit {
            return Ok(());
        }
        // Everything in the old segment is durable before writes move on.
        self.write_buffered()?;
        self.active.sync_data()?;
        let number = self.active_number + 1;
        let (file, bytes) = create_segment(&self.dir, number, &self.cursors, self.segment_limit)?;
        self.closed.push_back(SegmentInfo {
            number: self.active_number,
            path: segment_path(&self.dir, self.active_number),
            bytes: self.active_bytes,
            max_seq: self.active_max_seq,
        });
        self.total_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.active = Arc::new(file);
        self.active_number = number;
        self.active_bytes = bytes;
        self.active_max_seq = 0;
        self.zeroed_to = bytes;
        Ok(())
    }

    /// Writes zeros into the next stretch of the active segment when the
    /// appends come within [`ZERO_AHEAD`] of the end of what is written, so
    /// that they land in written space. Only past `active_bytes`, under the
    /// lock, so it never touches data; a failure only costs speed.
    pub fn zero_ahead(&mut self) {
        if self.zeroed_to >= self.segment_limit.min(self.active_bytes + ZERO_CHUNK) {
            return;
        }
        let end = self.segment_limit.min(self.active_bytes + ZERO_AHEAD);
        let zeros = vec![0u8; (end - self.zeroed_to) as usize];
        match self.active.write_all_at(&zeros, self.zeroed_to) {
            Ok(()) => self.zeroed_to = end,
            Err(e) => {
                log::debug!("journal: cannot zero-fill ahead ({e}); appends will be slower");
                self.zeroed_to = self.segment_limit;
            }
        }
    }

    /// Deletes closed segments whose entries are all below `below`.
    pub fn trim(&mut self, below: u64) {
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

/// Creates segment `number`, `size` bytes allocated, starting with a
/// checkpoint of `cursors`, durably.
pub fn create_segment(
    dir: &Path,
    number: u64,
    cursors: &BTreeMap<String, u64>,
    size: u64,
) -> io::Result<(File, u64)> {
    let path = segment_path(dir, number);
    let file = OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(&path)?;
    let mut bytes = Vec::new();
    Record::Checkpoint(cursors.iter().map(|(p, s)| (p.clone(), *s)).collect()).encode(&mut bytes);
    file.write_all_at(&bytes, 0)?;
    allocate(&file, size);
    file.sync_all()?;
    // The new name must survive a crash too.
    File::open(dir)?.sync_all()?;
    Ok((file, bytes.len() as u64))
}

/// Allocates `size` bytes to the file (its length becomes `size`; the space
/// reads as zeros). Only an optimisation: where the filesystem cannot, the
/// file simply grows as it is written.
fn allocate(file: &File, size: u64) {
    let Ok(length) = libc::off_t::try_from(size) else {
        return;
    };
    // SAFETY: fallocate only reads its integer arguments; the descriptor is
    // open for writing and outlives the call.
    let result = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, length) };
    if result != 0 {
        log::debug!(
            "journal: cannot allocate segment space ({}); appends will grow the file",
            io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::segments::replay;

    fn ack(target: &str, seq: u64) -> Vec<u8> {
        let mut bytes = Vec::new();
        Record::Ack {
            target: target.into(),
            seq,
        }
        .encode(&mut bytes);
        bytes
    }

    fn new_log(name: &str, limit: u64, buffer_appends: bool) -> Files {
        let dir = std::env::temp_dir().join(format!("hothot-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (file, bytes) = create_segment(&dir, 1, &BTreeMap::new(), limit).unwrap();
        Files {
            dir: dir.clone(),
            active: Arc::new(file),
            active_number: 1,
            active_bytes: bytes,
            active_max_seq: 0,
            closed: VecDeque::new(),
            cursors: BTreeMap::new(),
            seen_acks: Vec::new(),
            segment_limit: limit,
            total_bytes: Arc::new(AtomicU64::new(bytes)),
            written_seq: 0,
            zeroed_to: bytes,
            buffered: Vec::new(),
            buffer_appends,
        }
    }

    #[test]
    fn acks_are_logged_when_they_move_and_replay() {
        let mut log = new_log("acks", 1 << 20, false);
        let dir = log.dir.clone();
        let cursor = |name: &str, seq| (name.to_owned(), Arc::new(AtomicU64::new(seq)));
        let mut targets = vec![cursor("a", 3), cursor("b", 0)];
        assert!(log.append_acks(&targets).unwrap());
        let bytes = log.active_bytes;
        assert!(!log.append_acks(&targets).unwrap(), "nothing moved");
        assert_eq!(log.active_bytes, bytes);
        targets[1].1.store(5, Ordering::Release);
        assert!(log.append_acks(&targets).unwrap());
        // A target a reload added is logged from its first acknowledgement.
        targets.push(cursor("c", 7));
        assert!(log.append_acks(&targets).unwrap());
        let replayed = replay(&dir, &[1]).unwrap();
        assert_eq!(replayed.cursors["a"], 3);
        assert_eq!(replayed.cursors["b"], 5);
        assert_eq!(replayed.cursors["c"], 7);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn zero_filling_ahead_keeps_every_record_and_replays_cleanly() {
        let limit = 1 << 20;
        let mut log = new_log("zero", limit, false);
        let dir = log.dir.clone();
        log.append(&ack("b", 1), 0).unwrap();
        log.zero_ahead();
        assert_eq!(log.zeroed_to, log.active_bytes + ZERO_AHEAD);
        let zeroed = log.zeroed_to;
        log.zero_ahead(); // far enough ahead: nothing to do
        assert_eq!(log.zeroed_to, zeroed);
        // Appends up to within a chunk of the zeroed end, then a top-up.
        while log.active_bytes + ZERO_CHUNK < zeroed {
            log.append(&ack("b", 2), 0).unwrap();
        }
        log.append(&ack("c", 3), 0).unwrap();
        log.zero_ahead();
        assert_eq!(log.zeroed_to, limit.min(log.active_bytes + ZERO_AHEAD));
        let written = log.active_bytes;
        let content = std::fs::read(segment_path(&dir, 1)).unwrap();
        assert!(content[written as usize..].iter().all(|b| *b == 0));
        let replayed = replay(&dir, &[1]).unwrap();
        assert!(replayed.damage.is_empty(), "{:?}", replayed.damage);
        assert_eq!(replayed.cursors["b"], 2);
        assert_eq!(replayed.cursors["c"], 3);
        assert_eq!(replayed.segments[0].bytes, written);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn buffered_appends_reach_the_file_in_order_and_before_a_rollover() {
        let mut log = new_log("buffered", 4096, true);
        let dir = log.dir.clone();
        log.append(&ack("b", 1), 0).unwrap();
        log.append(&ack("c", 1), 0).unwrap();
        let on_disk = |number| replay(&dir, &[number]).unwrap().cursors;
        assert!(
            on_disk(1).is_empty(),
            "buffered appends are not written yet"
        );
        log.write_buffered().unwrap();
        assert_eq!(
            on_disk(1),
            BTreeMap::from([("b".into(), 1), ("c".into(), 1)])
        );
        // Past the segment's limit: the buffered rest is written to segment 1
        // before the next one starts.
        let mut seq = 1;
        while log.active_number == 1 {
            seq += 1;
            log.append(&ack("b", seq), 0).unwrap();
        }
        assert_eq!(on_disk(1)["b"], seq);
        assert!(log.buffered.is_empty());
        std::fs::remove_dir_all(&dir).ok();
    }
}
