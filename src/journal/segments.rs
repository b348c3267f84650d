//! The journal directory: numbered segment files, read back at start-up.
//!
//! A segment's data ends where its allocated, never written space begins:
//! zeros to the end of the file. Reading also stops at the first frame that
//! is cut short or fails its checksum, or at bytes after that zeroed space.
//! In the newest segment that is a torn tail (a write interrupted by a crash
//! or power loss): the file is truncated there and the loss is reported. In an
//! older segment it is corruption: the rest of that segment is skipped and
//! reported, and reading goes on with the next one.

use super::record::{FrameError, Record, FRAME_HEADER};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

const PREFIX: &str = "segment-";
const SUFFIX: &str = ".journal";

pub fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{PREFIX}{number:010}{SUFFIX}"))
}

/// Segment numbers present in `dir`, in order.
pub fn list(dir: &Path) -> io::Result<Vec<u64>> {
    let mut numbers = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(number) = name
            .strip_prefix(PREFIX)
            .and_then(|n| n.strip_suffix(SUFFIX))
        {
            if let Ok(number) = number.parse() {
                numbers.push(number);
            }
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// A closed segment the journal still holds.
#[derive(Debug, Clone)]
pub struct SegmentInfo {
    pub number: u64,
    pub path: PathBuf,
    pub bytes: u64,
    /// Highest write sequence in the segment (0 when it holds none).
    pub max_seq: u64,
}

/// What reading the directory found.
#[derive(Debug, Default)]
pub struct Replay {
    /// How many entries were found (they stay on disk: a backlog reads
    /// them back with a [`super::Reader`]).
    pub entries: usize,
    /// The highest sequence found (0 when none).
    pub last_seq: u64,
    /// Each target's settled-through sequence.
    pub cursors: BTreeMap<String, u64>,
    pub segments: Vec<SegmentInfo>,
    /// What could not be read, one line each, for the log.
    pub damage: Vec<String>,
}

pub fn replay(dir: &Path, numbers: &[u64]) -> io::Result<Replay> {
    let mut replay = Replay::default();
    for (i, number) in numbers.iter().enumerate() {
        let path = segment_path(dir, *number);
        let bytes = fs::read(&path)?;
        let newest = i + 1 == numbers.len();
        let mut offset = 0;
        let mut max_seq = 0;
        while offset < bytes.len() {
            let rest = &bytes[offset..];
            let decoded = match unwritten(rest) {
                Some(true) => break,
                // Zeros where a record should start, but data after them.
                Some(false) => Err(FrameError::Corrupt),
                None => Record::decode(rest),
            };
            match decoded {
                Ok((record, len)) => {
                    offset += len;
                    match record {
                        Record::Entry(e) => {
                            max_seq = max_seq.max(e.seq);
                            replay.entries += 1;
                            replay.last_seq = replay.last_seq.max(e.seq);
                        }
                        Record::Ack { target, seq } => settle(&mut replay.cursors, target, seq),
                        Record::Checkpoint(cursors) => {
                            for (target, seq) in cursors {
                                settle(&mut replay.cursors, target, seq);
                            }
                        }
                    }
                }
                Err(error) => {
                    // Allocated space that was never written is not a loss.
                    let written = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
                    let lost = written.saturating_sub(offset);
                    let kind = match error {
                        FrameError::Truncated => "an incomplete record",
                        FrameError::Corrupt => "a record failing its checksum",
                    };
                    let last = replay.last_seq;
                    if newest {
                        replay.damage.push(format!(
                            "torn tail in {}: {lost} bytes from offset {offset} discarded ({kind}); \
                             the last intact write is #{last}; what followed it is lost (with fsync: \
                             always, no client was told it succeeded)",
                            path.display()
                        ));
                        fs::OpenOptions::new()
                            .write(true)
                            .open(&path)?
                            .set_len(offset as u64)?;
                    } else {
                        replay.damage.push(format!(
                            "corrupt segment {}: {lost} bytes from offset {offset} unreadable ({kind}); \
                             writes stored there after #{last} are lost",
                            path.display()
                        ));
                    }
                    break;
                }
            }
        }
        replay.segments.push(SegmentInfo {
            number: *number,
            path,
            bytes: offset as u64,
            max_seq,
        });
    }
    Ok(replay)
}

/// `Some(true)` when `rest` is all zeros (space never written), `Some(false)`
/// when it starts with a zeroed frame header but holds data further on,
/// `None` when it starts with a frame (no frame has a zero length).
fn unwritten(rest: &[u8]) -> Option<bool> {
    if rest.iter().take(FRAME_HEADER).any(|b| *b != 0) {
        return None;
    }
    Some(rest.iter().all(|b| *b == 0))
}

fn settle(cursors: &mut BTreeMap<String, u64>, target: String, seq: u64) {
    let cursor = cursors.entry(target).or_insert(0);
    *cursor = (*cursor).max(seq);
}

#[cfg(test)]
mod tests {
    use super::super::record::tests::sample;
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("hothot-segments-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write_segment(dir: &Path, number: u64, records: &[Record]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for r in records {
            r.encode(&mut bytes);
        }
        fs::write(segment_path(dir, number), &bytes).unwrap();
        bytes
    }

    #[test]
    fn a_torn_tail_is_cut_off_at_every_possible_offset_and_reported() {
        let dir = temp_dir("torn");
        let full = write_segment(
            &dir,
            1,
            &[Record::Entry(sample(1)), Record::Entry(sample(2))],
        );
        let mut first = Vec::new();
        Record::Entry(sample(1)).encode(&mut first);
        for cut in first.len()..full.len() {
            fs::write(segment_path(&dir, 1), &full[..cut]).unwrap();
            let replay = replay(&dir, &[1]).unwrap();
            assert_eq!((replay.entries, replay.last_seq), (1, 1), "cut at {cut}");
            let torn = cut > first.len();
            assert_eq!(
                replay.damage.len(),
                usize::from(torn),
                "cut at {cut}: {:?}",
                replay.damage
            );
            assert_eq!(
                fs::metadata(segment_path(&dir, 1)).unwrap().len(),
                first.len() as u64
            );
        }
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn allocated_space_ends_a_segment_unless_data_follows_it() {
        let dir = temp_dir("allocated");
        let mut bytes = write_segment(&dir, 1, &[Record::Entry(sample(1))]);
        let end = bytes.len();
        bytes.resize(end + 4096, 0);
        fs::write(segment_path(&dir, 1), &bytes).unwrap();
        let clean = replay(&dir, &[1]).unwrap();
        assert_eq!(clean.entries, 1);
        assert!(clean.damage.is_empty(), "{:?}", clean.damage);
        assert_eq!(clean.segments[0].bytes, end as u64);

        // A power loss left the head of the next record unwritten but part of its body on disk.
        bytes[end + 100] = 7;
        fs::write(segment_path(&dir, 1), &bytes).unwrap();
        let torn = replay(&dir, &[1]).unwrap();
        assert_eq!(torn.entries, 1);
        assert_eq!(torn.damage.len(), 1);
        assert!(torn.damage[0].contains("torn tail"), "{:?}", torn.damage);
        assert!(
            torn.damage[0].contains(&format!("101 bytes from offset {end}")),
            "{:?}",
            torn.damage
        );
        assert_eq!(
            fs::metadata(segment_path(&dir, 1)).unwrap().len(),
            end as u64
        );
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn acks_and_checkpoints_settle_targets_and_old_corruption_skips_one_segment() {
        let dir = temp_dir("acks");
        let mut damaged = write_segment(
            &dir,
            1,
            &[Record::Entry(sample(1)), Record::Entry(sample(2))],
        );
        let last = damaged.len() - 3;
        damaged[last] ^= 0xff;
        fs::write(segment_path(&dir, 1), &damaged).unwrap();
        write_segment(
            &dir,
            2,
            &[
                Record::Checkpoint(vec![("b".into(), 1)]),
                Record::Entry(sample(3)),
                Record::Ack {
                    target: "c".into(),
                    seq: 3,
                },
            ],
        );
        let replay = replay(&dir, &list(&dir).unwrap()).unwrap();
        assert_eq!((replay.entries, replay.last_seq), (2, 3));
        assert_eq!(replay.cursors["b"], 1);
        assert_eq!(replay.cursors["c"], 3);
        assert_eq!(replay.damage.len(), 1);
        assert!(replay.damage[0].contains("corrupt segment"));
        fs::remove_dir_all(&dir).ok();
    }
}
