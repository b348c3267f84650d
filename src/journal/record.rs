//! The journal's records and their framing on disk.
//!
//! Every record is `[payload length: u32 LE][CRC-32 of payload: u32 LE][payload]`.
//! A record that is cut short or whose checksum does not match ends the
//! readable part of a segment: that is how a torn write is recognised.
//!
//! Payloads start with a kind byte:
//! - `E` an entry: its sequence, the names of the targets it must reach, and
//!   what the caller stored (opaque bytes: the journal never looks inside);
//! - `A` an acknowledgement: a target's name and the sequence it has settled through;
//! - `C` a checkpoint: every target's settled-through sequence, written first
//!   in each segment so that older segments can be deleted without losing acks;
//! - `W` (read only) an entry as builds before entries were opaque wrote it,
//!   with three of the stored fields before the targets and the rest after
//!   them: read as an `E` whose stored bytes are those fields in order, so
//!   that a journal written by an older build is delivered whole after an
//!   upgrade (`-u`) or a restart.

use crate::codec::{put_bytes, put_u32, put_u64, Reader};
use bytes::Bytes;

const ENTRY: u8 = b'E';
const ACK: u8 = b'A';
const CHECKPOINT: u8 = b'C';
const LEGACY_WRITE: u8 = b'W';
pub const FRAME_HEADER: usize = 8;

/// An entry as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRecord {
    pub seq: u64,
    /// Names of the targets this entry must reach.
    pub targets: Vec<String>,
    /// What the caller stored.
    pub payload: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Entry(EntryRecord),
    /// `target` has settled every entry addressed to it up to `seq`.
    Ack {
        target: String,
        seq: u64,
    },
    Checkpoint(Vec<(String, u64)>),
}

/// Why a frame could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The bytes end inside the frame.
    Truncated,
    /// The checksum does not match, or the payload does not decode.
    Corrupt,
}

/// Appends the framed entry `seq` for `targets`, whose stored bytes are the
/// concatenation of `payload` (pieces, so that a large body is copied once,
/// straight into the frame).
pub fn encode_entry(seq: u64, targets: &[&str], payload: &[&[u8]], out: &mut Vec<u8>) {
    frame(out, |out| {
        out.push(ENTRY);
        put_u64(out, seq);
        put_u32(out, targets.len() as u32);
        for target in targets {
            put_bytes(out, target.as_bytes());
        }
        let len: usize = payload.iter().map(|piece| piece.len()).sum();
        put_u32(out, u32::try_from(len).unwrap_or(u32::MAX));
        for piece in payload {
            out.extend_from_slice(piece);
        }
    });
}

/// Writes `payload` framed: length and CRC-32 first.
fn frame(out: &mut Vec<u8>, payload: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER]);
    payload(out);
    let payload_len = (out.len() - start - FRAME_HEADER) as u32;
    let crc = crc32fast::hash(&out[start + FRAME_HEADER..]);
    out[start..start + 4].copy_from_slice(&payload_len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

impl Record {
    /// Appends the framed record to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Record::Entry(e) => {
                let targets: Vec<&str> = e.targets.iter().map(String::as_str).collect();
                encode_entry(e.seq, &targets, &[&e.payload], out)
            }
            Record::Ack { target, seq } => frame(out, |out| {
                out.push(ACK);
                put_bytes(out, target.as_bytes());
                put_u64(out, *seq);
            }),
            Record::Checkpoint(cursors) => frame(out, |out| {
                out.push(CHECKPOINT);
                put_u32(out, cursors.len() as u32);
                for (target, seq) in cursors {
                    put_bytes(out, target.as_bytes());
                    put_u64(out, *seq);
                }
            }),
        }
    }

    /// Reads the frame at the start of `bytes`: the record and the frame's length.
    pub fn decode(bytes: &[u8]) -> Result<(Record, usize), FrameError> {
        if bytes.len() < FRAME_HEADER {
            return Err(FrameError::Truncated);
        }
        let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        let crc = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        let Some(payload) = bytes.get(FRAME_HEADER..FRAME_HEADER + len) else {
            return Err(FrameError::Truncated);
        };
        if crc32fast::hash(payload) != crc {
            return Err(FrameError::Corrupt);
        }
        let record = read(&mut Reader::new(payload)).ok_or(FrameError::Corrupt)?;
        Ok((record, FRAME_HEADER + len))
    }
}

fn read(reader: &mut Reader<'_>) -> Option<Record> {
    let record = match reader.u8()? {
        ENTRY => {
            let seq = reader.u64()?;
            let targets = targets(reader)?;
            let payload = Bytes::copy_from_slice(reader.bytes()?);
            Record::Entry(EntryRecord {
                seq,
                targets,
                payload,
            })
        }
        LEGACY_WRITE => {
            let seq = reader.u64()?;
            // Two u64 fields and a string, then the targets, then the rest.
            let before = reader.rest();
            reader.take(16)?;
            reader.bytes()?;
            let head = &before[..before.len() - reader.rest().len()];
            let targets = targets(reader)?;
            let mut payload = Vec::with_capacity(head.len() + reader.rest().len());
            payload.extend_from_slice(head);
            payload.extend_from_slice(reader.take(reader.rest().len())?);
            Record::Entry(EntryRecord {
                seq,
                targets,
                payload: Bytes::from(payload),
            })
        }
        ACK => Record::Ack {
            target: reader.string()?,
            seq: reader.u64()?,
        },
        CHECKPOINT => Record::Checkpoint(
            (0..reader.u32()?)
                .map(|_| Some((reader.string()?, reader.u64()?)))
                .collect::<Option<Vec<_>>>()?,
        ),
        _ => return None,
    };
    reader.is_empty().then_some(record)
}

fn targets(reader: &mut Reader<'_>) -> Option<Vec<String>> {
    (0..reader.u32()?)
        .map(|_| reader.string())
        .collect::<Option<Vec<_>>>()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn sample(seq: u64) -> EntryRecord {
        EntryRecord {
            seq,
            targets: vec!["b".into(), "c".into()],
            payload: Bytes::from(vec![seq as u8; 100]),
        }
    }

    #[test]
    fn records_round_trip() {
        let records = [
            Record::Entry(sample(7)),
            Record::Ack {
                target: "b".into(),
                seq: 7,
            },
            Record::Checkpoint(vec![("b".into(), 7), ("c".into(), 3)]),
        ];
        let mut bytes = Vec::new();
        for r in &records {
            r.encode(&mut bytes);
        }
        let mut offset = 0;
        for r in &records {
            let (decoded, len) = Record::decode(&bytes[offset..]).unwrap();
            assert_eq!(&decoded, r);
            offset += len;
        }
        assert_eq!(offset, bytes.len());
    }

    #[test]
    fn an_entry_is_stored_from_pieces_as_one_payload() {
        let mut bytes = Vec::new();
        encode_entry(3, &["a"], &[b"head", b"", b"body"], &mut bytes);
        let (record, _) = Record::decode(&bytes).unwrap();
        assert_eq!(
            record,
            Record::Entry(EntryRecord {
                seq: 3,
                targets: vec!["a".into()],
                payload: Bytes::from_static(b"headbody"),
            })
        );
    }

    #[test]
    fn an_entry_written_by_an_older_build_reads_as_its_fields_in_order() {
        // The older builds' write record: seq, version, acceptance time, primary,
        // targets, then idempotency key, method, target URI, headers, body.
        let mut fields_before = Vec::new();
        put_u64(&mut fields_before, 42);
        put_u64(&mut fields_before, 1_700_000_000_000);
        put_bytes(&mut fields_before, b"a");
        let mut fields_after = Vec::new();
        put_bytes(&mut fields_after, b"key-1");
        put_bytes(&mut fields_after, b"PUT");
        put_bytes(&mut fields_after, b"/kv/x");
        put_u32(&mut fields_after, 0);
        put_bytes(&mut fields_after, b"hello");
        let mut bytes = Vec::new();
        frame(&mut bytes, |out| {
            out.push(LEGACY_WRITE);
            put_u64(out, 9);
            out.extend_from_slice(&fields_before);
            put_u32(out, 2);
            put_bytes(out, b"b");
            put_bytes(out, b"c");
            out.extend_from_slice(&fields_after);
        });
        let (Record::Entry(entry), _) = Record::decode(&bytes).unwrap() else {
            panic!("not an entry");
        };
        assert_eq!(entry.seq, 9);
        assert_eq!(entry.targets, ["b", "c"]);
        assert_eq!(entry.payload, [fields_before, fields_after].concat());
    }

    #[test]
    fn every_cut_is_truncated_and_every_flip_is_caught() {
        let mut bytes = Vec::new();
        Record::Entry(sample(1)).encode(&mut bytes);
        for cut in 0..bytes.len() {
            assert_eq!(
                Record::decode(&bytes[..cut]),
                Err(FrameError::Truncated),
                "cut at {cut}"
            );
        }
        for i in FRAME_HEADER..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x40;
            assert_eq!(
                Record::decode(&flipped),
                Err(FrameError::Corrupt),
                "flip at {i}"
            );
        }
    }
}
