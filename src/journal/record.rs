//! The journal's records and their framing on disk.
//!
//! Every record is `[payload length: u32 LE][CRC-32 of payload: u32 LE][payload]`.
//! A record that is cut short or whose checksum does not match ends the
//! readable part of a segment: that is how a torn write is recognised.
//!
//! Payloads start with a kind byte:
//! - `W` a write: sequence, version, acceptance time, primary, target peers,
//!   idempotency key, method, target URI, headers, body;
//! - `A` an acknowledgement: peer name and the sequence it has settled through;
//! - `C` a checkpoint: every peer's settled-through sequence, written first in
//!   each segment so that older segments can be deleted without losing acks.

use bytes::Bytes;

const WRITE: u8 = b'W';
const ACK: u8 = b'A';
const CHECKPOINT: u8 = b'C';
pub const FRAME_HEADER: usize = 8;

/// A write as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteRecord {
    pub seq: u64,
    pub version: u64,
    /// Milliseconds since the Unix epoch when the primary answered.
    pub accepted_unix_ms: u64,
    pub primary: String,
    /// Names of the peers this write must reach.
    pub targets: Vec<String>,
    pub idempotency_key: String,
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Bytes,
}

/// A write borrowed from wherever it lives, so that the write path encodes it
/// without first copying it into a [`WriteRecord`].
pub struct WriteView<'a> {
    pub seq: u64,
    pub version: u64,
    pub accepted_unix_ms: u64,
    pub primary: &'a str,
    pub targets: &'a [&'a str],
    pub idempotency_key: &'a str,
    /// Method, target URI and headers, as [`encode_request`] wrote them
    /// (the proxy encodes them once, while it still holds the request).
    pub request: &'a [u8],
    pub body: &'a [u8],
}

/// Encodes a write's method, target URI and headers, the part of a write
/// record that [`WriteView::request`] holds.
/// `headers` yields `count` name-value pairs.
pub fn encode_request<'h>(
    method: &str,
    uri: &str,
    count: usize,
    headers: impl Iterator<Item = (&'h str, &'h [u8])>,
    out: &mut Vec<u8>,
) {
    put_bytes(out, method.as_bytes());
    put_bytes(out, uri.as_bytes());
    put_u32(out, count as u32);
    for (name, value) in headers.take(count) {
        put_bytes(out, name.as_bytes());
        put_bytes(out, value);
    }
}

impl WriteView<'_> {
    /// Appends the framed write record to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        frame(out, |out| {
            out.push(WRITE);
            put_u64(out, self.seq);
            put_u64(out, self.version);
            put_u64(out, self.accepted_unix_ms);
            put_bytes(out, self.primary.as_bytes());
            put_u32(out, self.targets.len() as u32);
            for target in self.targets {
                put_bytes(out, target.as_bytes());
            }
            put_bytes(out, self.idempotency_key.as_bytes());
            out.extend_from_slice(self.request);
            put_bytes(out, self.body);
        });
    }
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Write(WriteRecord),
    /// `peer` has settled every write addressed to it up to `seq`.
    Ack {
        peer: String,
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

impl Record {
    /// Appends the framed record to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Record::Write(w) => {
                let mut request = Vec::new();
                let headers = w.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice()));
                encode_request(&w.method, &w.uri, w.headers.len(), headers, &mut request);
                WriteView {
                    seq: w.seq,
                    version: w.version,
                    accepted_unix_ms: w.accepted_unix_ms,
                    primary: &w.primary,
                    targets: &w.targets.iter().map(String::as_str).collect::<Vec<_>>(),
                    idempotency_key: &w.idempotency_key,
                    request: &request,
                    body: &w.body,
                }
                .encode(out)
            }
            Record::Ack { peer, seq } => frame(out, |out| {
                out.push(ACK);
                put_bytes(out, peer.as_bytes());
                put_u64(out, *seq);
            }),
            Record::Checkpoint(cursors) => frame(out, |out| {
                out.push(CHECKPOINT);
                put_u32(out, cursors.len() as u32);
                for (peer, seq) in cursors {
                    put_bytes(out, peer.as_bytes());
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
        let record = Reader { bytes: payload }
            .record()
            .ok_or(FrameError::Corrupt)?;
        Ok((record, FRAME_HEADER + len))
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, v: &[u8]) {
    put_u32(out, v.len() as u32);
    out.extend_from_slice(v);
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Option<u64> {
        let b = self.take(8)?;
        Some(u64::from_le_bytes([
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
        ]))
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }

    fn record(&mut self) -> Option<Record> {
        let record = match self.u8()? {
            WRITE => {
                let seq = self.u64()?;
                let version = self.u64()?;
                let accepted_unix_ms = self.u64()?;
                let primary = self.string()?;
                let targets = (0..self.u32()?)
                    .map(|_| self.string())
                    .collect::<Option<Vec<_>>>()?;
                let idempotency_key = self.string()?;
                let method = self.string()?;
                let uri = self.string()?;
                let headers = (0..self.u32()?)
                    .map(|_| Some((self.string()?, self.bytes()?.to_vec())))
                    .collect::<Option<Vec<_>>>()?;
                let body = Bytes::copy_from_slice(self.bytes()?);
                Record::Write(WriteRecord {
                    seq,
                    version,
                    accepted_unix_ms,
                    primary,
                    targets,
                    idempotency_key,
                    method,
                    uri,
                    headers,
                    body,
                })
            }
            ACK => Record::Ack {
                peer: self.string()?,
                seq: self.u64()?,
            },
            CHECKPOINT => Record::Checkpoint(
                (0..self.u32()?)
                    .map(|_| Some((self.string()?, self.u64()?)))
                    .collect::<Option<Vec<_>>>()?,
            ),
            _ => return None,
        };
        self.bytes.is_empty().then_some(record)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn sample(seq: u64) -> WriteRecord {
        WriteRecord {
            seq,
            version: 1000 + seq,
            accepted_unix_ms: 1_700_000_000_000,
            primary: "a".into(),
            targets: vec!["b".into(), "c".into()],
            idempotency_key: format!("key-{seq}"),
            method: "PUT".into(),
            uri: format!("/kv/{seq}?x=1"),
            headers: vec![
                ("content-type".into(), b"text/plain".to_vec()),
                ("x-bin".into(), vec![0xff, 0x01]),
            ],
            body: Bytes::from(vec![seq as u8; 100]),
        }
    }

    #[test]
    fn records_round_trip() {
        let records = [
            Record::Write(sample(7)),
            Record::Ack {
                peer: "b".into(),
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
    fn every_cut_is_truncated_and_every_flip_is_caught() {
        let mut bytes = Vec::new();
        Record::Write(sample(1)).encode(&mut bytes);
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
