//! Reading entries back from the segments, in sequence order, from a given
//! sequence on: what an origin's backlog is refilled from once it holds
//! more than memory should (#24: a dead origin costs disk, not RAM).
//!
//! A [`Reader`] remembers where it stopped (segment and offset), so that a
//! backlog drained from disk reads each segment once, front to back, in
//! large reads. It reads what is in the files: entries the journal has
//! buffered but not written yet (`fsync: always`, between group commits) are
//! not there yet, and the caller asks only for entries it knows are
//! durable (`up_to`). A segment is deleted only once every target settled
//! all of it, so the segments holding a target's unsettled entries stay
//! while its reader needs them.

use super::record::{EntryRecord, FrameError, Record};
use super::syncer::Shared;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Bytes read from a segment at once (more when one record is larger).
const CHUNK: usize = 1 << 20;

/// A position in the journal and the next sequence wanted.
pub struct Reader {
    shared: Arc<Shared>,
    /// The next entry wanted: those numbered below it are skipped.
    next_seq: u64,
    /// Where the last read stopped: a segment's number and the offset of
    /// the first record not read yet. `None`: from the oldest segment.
    position: Option<(u64, u64)>,
}

/// A segment as the reader sees it at one read.
struct Segment {
    number: u64,
    file: Arc<File>,
    /// Bytes of whole records in it.
    len: u64,
    /// The active segment (more may be appended to it later).
    active: bool,
}

impl Reader {
    pub(super) fn new(shared: Arc<Shared>, from: u64) -> Self {
        Reader {
            shared,
            next_seq: from,
            position: None,
        }
    }

    /// The next sequence this reader will return (or skip to).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Up to `max` entries numbered from [`Reader::next_seq`] through
    /// `up_to`, in sequence order; fewer (maybe none) when the files hold
    /// no more yet. The next read continues after the last one returned.
    pub fn read(&mut self, up_to: u64, max: usize) -> io::Result<Vec<EntryRecord>> {
        let mut entries = Vec::new();
        for segment in self.segments()? {
            let start = match self.position {
                Some((number, offset)) if number == segment.number => offset,
                _ => 0,
            };
            let end = self.read_segment(&segment, start, up_to, max, &mut entries)?;
            self.position = Some((segment.number, end));
            if entries.len() >= max || end < segment.len || segment.active {
                break;
            }
        }
        if let Some(last) = entries.last() {
            self.next_seq = last.seq + 1;
        }
        Ok(entries)
    }

    /// The segments from the reader's position on, oldest first: the closed
    /// ones opened, the active one shared (and only its written part).
    fn segments(&self) -> io::Result<Vec<Segment>> {
        let files = self.shared.log();
        let from = self.position.map_or(0, |(number, _)| number);
        let mut segments = Vec::new();
        for closed in files.closed.iter().filter(|s| s.number >= from) {
            if closed.max_seq < self.next_seq && self.position.is_none() {
                continue;
            }
            segments.push(Segment {
                number: closed.number,
                file: Arc::new(File::open(&closed.path)?),
                len: closed.bytes,
                active: false,
            });
        }
        segments.push(Segment {
            number: files.active_number,
            file: files.active.clone(),
            len: files.active_bytes - files.buffered.len() as u64,
            active: true,
        });
        Ok(segments)
    }

    /// Reads `segment` from `offset`, adding the wanted entries to
    /// `entries` until it holds `max` or an entry past `up_to` comes;
    /// returns the offset of the first record not consumed.
    fn read_segment(
        &self,
        segment: &Segment,
        mut offset: u64,
        up_to: u64,
        max: usize,
        entries: &mut Vec<EntryRecord>,
    ) -> io::Result<u64> {
        let mut chunk = CHUNK;
        while offset < segment.len && entries.len() < max {
            let remaining = (segment.len - offset) as usize;
            let mut bytes = vec![0u8; chunk.min(remaining)];
            segment.file.read_exact_at(&mut bytes, offset)?;
            let mut used = 0;
            while used < bytes.len() && entries.len() < max {
                match Record::decode(&bytes[used..]) {
                    Ok((Record::Entry(entry), _)) if entry.seq > up_to => return Ok(offset),
                    Ok((record, len)) => {
                        used += len;
                        offset += len as u64;
                        match record {
                            Record::Entry(entry) if entry.seq >= self.next_seq => {
                                entries.push(entry)
                            }
                            _ => {}
                        }
                    }
                    // The read ended inside this record: the next read starts with it.
                    Err(FrameError::Truncated) => break,
                    Err(FrameError::Corrupt) => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "journal segment {} is corrupt at offset {offset}",
                                segment.number
                            ),
                        ))
                    }
                }
            }
            if used == 0 {
                if bytes.len() == remaining {
                    // Records are appended whole: only a torn file ends so.
                    break;
                }
                // One record larger than a read: read it whole next time.
                chunk *= 2;
            }
        }
        Ok(offset)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{FsyncPolicy, JournalConfig};
    use crate::journal::Journal;
    use std::time::Duration;

    fn journal(label: &str, fsync: FsyncPolicy) -> Journal {
        let dir =
            std::env::temp_dir().join(format!("hothot-reader-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = JournalConfig {
            dir,
            fsync,
            fsync_interval: Duration::from_millis(10),
            commit_delay: Duration::ZERO,
            // Segments of 256 KiB: the entries below span several.
            max_bytes: 1 << 20,
        };
        Journal::open(&config).unwrap().0
    }

    fn payload(seq: u64) -> Vec<u8> {
        vec![(seq % 251) as u8; 1000 + (seq as usize % 7) * 100]
    }

    #[test]
    fn entries_come_back_in_order_across_segments_from_any_sequence() {
        let journal = journal("order", FsyncPolicy::Off);
        for seq in 1..=1000 {
            let _ = journal.append(seq, &["a"], &[&payload(seq)]);
        }
        assert!(journal.shared.log().closed.len() >= 3, "several segments");
        let mut reader = journal.reader(1);
        let mut seen = Vec::new();
        loop {
            let batch = reader.read(1000, 64).unwrap();
            if batch.is_empty() {
                break;
            }
            assert!(batch.len() <= 64);
            for entry in batch {
                assert_eq!(&entry.payload[..], &payload(entry.seq)[..]);
                seen.push(entry.seq);
            }
        }
        assert_eq!(seen, (1..=1000).collect::<Vec<u64>>());
        // From the middle, bounded by up_to, then on as more arrives.
        let mut reader = journal.reader(500);
        let first: Vec<u64> = reader
            .read(510, 1000)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(first, (500..=510).collect::<Vec<u64>>());
        assert_eq!(reader.read(1000, 1).unwrap()[0].seq, 511);
        for seq in 1001..=1010 {
            let _ = journal.append(seq, &["a"], &[&payload(seq)]);
        }
        let rest = reader.read(2000, 10_000).unwrap();
        assert_eq!(rest.first().map(|e| e.seq), Some(512));
        assert_eq!(rest.last().map(|e| e.seq), Some(1010));
        assert!(reader.read(2000, 10).unwrap().is_empty());
        assert_eq!(reader.next_seq(), 1011);
    }

    #[test]
    fn a_record_larger_than_a_read_comes_back_whole() {
        let journal = journal("large", FsyncPolicy::Off);
        let big = vec![7u8; super::CHUNK * 3 / 2];
        let _ = journal.append(1, &["a"], &[&big]);
        let _ = journal.append(2, &["a"], &[b"small"]);
        let entries = journal.reader(1).read(2, 10).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].payload.len(), big.len());
        assert_eq!(&entries[1].payload[..], b"small");
    }

    #[tokio::test]
    async fn entries_buffered_for_the_next_group_commit_come_once_written() {
        let journal = journal("buffered", FsyncPolicy::Always);
        let mut reader = journal.reader(1);
        // Appended, not written yet: the syncer has not started.
        let durability = journal.append(1, &["a"], &[b"one"]);
        assert!(reader.read(1, 10).unwrap().is_empty());
        journal.start().unwrap();
        durability.wait().await.unwrap();
        let entries = reader.read(1, 10).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(&entries[0].payload[..], b"one");
        journal.close();
    }

    /// `cargo test --release --lib journal::reader -- --ignored --nocapture`:
    /// how fast a backlog comes back from disk (the page cache, here).
    #[test]
    #[ignore]
    fn read_rate() {
        let journal = journal("rate", FsyncPolicy::Off);
        let body = vec![b'x'; 300];
        for seq in 1..=200_000 {
            let _ = journal.append(seq, &["a", "b", "c"], &[&body]);
        }
        let started = std::time::Instant::now();
        let mut reader = journal.reader(1);
        let mut count = 0;
        loop {
            let batch = reader.read(u64::MAX, 1024).unwrap();
            if batch.is_empty() {
                break;
            }
            count += batch.len();
        }
        let elapsed = started.elapsed();
        println!(
            "read {count} entries in {elapsed:?}: {:.0} entries/s",
            count as f64 / elapsed.as_secs_f64()
        );
    }
}
