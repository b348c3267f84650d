//! A sequenced write, as every origin will receive it.
//!
//! The request is encoded once, while the proxy still holds it: in the HTTP/1.1
//! form the origins receive (shared by every origin's copy) and in the form the
//! journal records. Nothing is re-encoded per origin or kept as parsed headers.

use super::reply::Reply;
use super::verify::Sample;
use crate::journal::record::{encode_request, WriteRecord, WriteView};
use bytes::{Bytes, BytesMut};
use pingora_http::RequestHeader;
use std::borrow::Cow;
use std::fmt::Write as _;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;

/// An entry of an origin's backlog: a write, or the read that verifies one.
pub struct Write {
    /// Position in the journal and in every backlog (a verify read shares
    /// the position of the write it follows).
    pub seq: u64,
    /// Stamped once per write; identical on every origin.
    pub version: u64,
    /// The origin whose answer the client gets, if it is (still) in the pool.
    pub primary: Option<usize>,
    /// Entries with the same key reach an origin in sequence order.
    pub key: u64,
    /// The request every origin receives, ready to send: request line,
    /// headers (hop-by-hop ones removed, version and idempotency key set),
    /// `X-Hothot-Replicated-From`, `content-length` and the body.
    wire: Bytes,
    /// Where the `X-Hothot-Replicated-From` line sits in `wire`: the primary's
    /// own copy goes without it.
    from_line: Range<usize>,
    /// When the write was sequenced: the start of every origin's delay window.
    pub accepted_at: Instant,
    /// One permit per acknowledgement by an origin other than the primary;
    /// sync clients wait on it.
    acks: Semaphore,
    /// The client waiting for this write's answer, if any.
    pub reply: Option<Arc<Reply>>,
    /// Set when this entry is the read that verifies the write.
    pub verify: Option<Arc<Sample>>,
}

/// A request captured for replication, encoded both ways.
#[derive(Debug, Default)]
pub struct CapturedRequest {
    /// Request line and headers in HTTP/1.1, without the framing headers
    /// (the copy's body is complete: it gets its own `content-length`).
    wire_head: Vec<u8>,
    /// Method, target URI and headers as the journal records them.
    journal: Vec<u8>,
}

impl CapturedRequest {
    /// Captures the request as it is sent to the primary.
    pub fn of(header: &RequestHeader) -> Self {
        let uri = &header.uri;
        let target = uri.path_and_query().map_or("/", |p| p.as_str());
        let full: Cow<'_, str> = match uri.authority() {
            None if uri.path_and_query().is_some() => Cow::Borrowed(target),
            _ => Cow::Owned(uri.to_string()),
        };
        let headers = || {
            header
                .headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_bytes()))
        };
        Self::new(
            header.method.as_str(),
            &full,
            target,
            header.headers.len(),
            headers,
        )
    }

    /// `headers` yields the `count` headers, each time it is called.
    fn new<'h, I: Iterator<Item = (&'h str, &'h [u8])>>(
        method: &str,
        uri: &str,
        target: &str,
        count: usize,
        headers: impl Fn() -> I,
    ) -> Self {
        let mut wire_head = Vec::with_capacity(512);
        wire_head.extend_from_slice(method.as_bytes());
        wire_head.push(b' ');
        wire_head.extend_from_slice(target.as_bytes());
        wire_head.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in headers() {
            if name.eq_ignore_ascii_case("content-length")
                || name.eq_ignore_ascii_case("transfer-encoding")
                || name.eq_ignore_ascii_case(super::REPLICATED_FROM)
            {
                continue; // framing is ours: the body is complete
            }
            wire_head.extend_from_slice(name.as_bytes());
            wire_head.extend_from_slice(b": ");
            wire_head.extend_from_slice(value);
            wire_head.extend_from_slice(b"\r\n");
        }
        let mut journal = Vec::with_capacity(wire_head.len() + 64);
        encode_request(method, uri, count, headers(), &mut journal);
        CapturedRequest { wire_head, journal }
    }
}

/// The parts of a write known before it has a sequence number.
pub struct NewWrite {
    pub version: u64,
    pub idempotency_key: String,
    pub primary: usize,
    /// See [`Write::key`].
    pub key: u64,
    pub request: CapturedRequest,
    pub body: Bytes,
}

impl NewWrite {
    /// The journal record of this write, numbered `seq`, served by `primary`
    /// and addressed to `targets`.
    pub fn record<'a>(
        &'a self,
        seq: u64,
        primary: &'a str,
        targets: &'a [&'a str],
    ) -> WriteView<'a> {
        WriteView {
            seq,
            version: self.version,
            accepted_unix_ms: unix_ms(SystemTime::now()),
            primary,
            targets,
            idempotency_key: &self.idempotency_key,
            request: &self.request.journal,
            body: &self.body,
        }
    }
}

/// Who a write is from, and what it is ordered by.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The primary's name, for `X-Hothot-Replicated-From`.
    pub name: &'a str,
    /// The primary's index in the pool, if it is in the pool.
    pub index: Option<usize>,
}

impl Write {
    pub fn new(seq: u64, new: &NewWrite, primary: &str, reply: Option<Arc<Reply>>) -> Self {
        let from = Origin {
            name: primary,
            index: Some(new.primary),
        };
        let mut write = Self::build(
            seq,
            new.version,
            &new.request,
            from,
            &new.body,
            Instant::now(),
        );
        write.key = new.key;
        write.reply = reply;
        write
    }

    fn build(
        seq: u64,
        version: u64,
        request: &CapturedRequest,
        primary: Origin<'_>,
        body: &[u8],
        accepted_at: Instant,
    ) -> Self {
        let head = &request.wire_head;
        let name = primary.name;
        let mut wire = BytesMut::with_capacity(head.len() + name.len() + body.len() + 64);
        wire.extend_from_slice(head);
        let start = wire.len();
        wire.extend_from_slice(super::REPLICATED_FROM.as_bytes());
        wire.extend_from_slice(b": ");
        wire.extend_from_slice(name.as_bytes());
        wire.extend_from_slice(b"\r\n");
        let from_line = start..wire.len();
        let _ = write!(wire, "content-length: {}\r\n\r\n", body.len()); // BytesMut grows: it cannot fail
        wire.extend_from_slice(body);
        Write {
            seq,
            version,
            primary: primary.index,
            key: 0,
            wire: wire.freeze(),
            from_line,
            accepted_at,
            acks: Semaphore::new(0),
            reply: None,
            verify: None,
        }
    }

    /// The read that verifies this write: `GET` of its path (`request`, a
    /// whole request without a body), in the write's place in the order.
    pub fn verify_read(&self, request: Bytes, sample: Arc<Sample>) -> Self {
        Write {
            seq: self.seq,
            version: self.version,
            primary: self.primary,
            key: self.key,
            from_line: request.len()..request.len(),
            wire: request,
            accepted_at: self.accepted_at,
            acks: Semaphore::new(0),
            reply: None,
            verify: Some(sample),
        }
    }

    /// The request as the origin at `index` receives it, in two pieces: the
    /// primary's own copy has no `X-Hothot-Replicated-From`.
    pub fn wire_for(&self, index: usize) -> (&[u8], &[u8]) {
        if self.primary == Some(index) {
            (
                &self.wire[..self.from_line.start],
                &self.wire[self.from_line.end..],
            )
        } else {
            (&self.wire, &[])
        }
    }

    /// Bytes of the request as the peers receive it.
    pub fn wire_len(&self) -> usize {
        self.wire.len()
    }

    /// The request's head (request line and headers), for the verify read.
    pub fn head(&self) -> &[u8] {
        &self.wire[..self.from_line.start]
    }

    /// A write read back from the journal, served by `primary`, ordered by
    /// `key`. `None` if its request no longer parses.
    pub fn from_record(
        record: WriteRecord,
        primary: Option<usize>,
        key: impl FnOnce(&WriteRecord) -> u64,
    ) -> Option<Self> {
        http::Method::from_bytes(record.method.as_bytes()).ok()?;
        let uri: http::Uri = record.uri.parse().ok()?;
        let target = uri.path_and_query().map_or("/", |p| p.as_str());
        for (name, value) in &record.headers {
            http::HeaderName::from_bytes(name.as_bytes()).ok()?;
            http::HeaderValue::from_bytes(value).ok()?;
        }
        let headers = || {
            record
                .headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_slice()))
        };
        let count = record.headers.len();
        let request = CapturedRequest::new(&record.method, &record.uri, target, count, headers);
        let age = unix_ms(SystemTime::now()).saturating_sub(record.accepted_unix_ms);
        let accepted_at = Instant::now()
            .checked_sub(Duration::from_millis(age))
            .unwrap_or_else(Instant::now);
        let from = Origin {
            name: &record.primary,
            index: primary,
        };
        let mut write = Self::build(
            record.seq,
            record.version,
            &request,
            from,
            &record.body,
            accepted_at,
        );
        write.key = key(&record);
        Some(write)
    }

    /// The copy's request line (`PUT /kv/a HTTP/1.1`), for logs.
    pub fn request_line(&self) -> Cow<'_, str> {
        let end = self
            .wire
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or(self.wire.len());
        String::from_utf8_lossy(&self.wire[..end])
    }

    /// An origin other than the primary has it.
    pub fn acknowledge(&self) {
        self.acks.add_permits(1);
    }

    /// Is this the read that verifies a write (rather than a write)?
    pub fn is_verify_read(&self) -> bool {
        self.verify.is_some()
    }

    /// Waits until `quorum` peers acknowledged.
    pub async fn acknowledged_by(&self, quorum: u32) {
        // The semaphore is never closed, so acquiring only fails on a closed semaphore.
        if let Ok(permits) = self.acks.acquire_many(quorum).await {
            permits.forget();
            self.acks.add_permits(quorum as usize);
        }
    }
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::record::Record;

    #[test]
    fn a_copy_read_back_from_the_journal_is_byte_identical() {
        let mut header = RequestHeader::build("PUT", b"/kv/a?x=1", None).unwrap();
        header.insert_header("content-type", "text/plain").unwrap();
        header.insert_header("content-length", "5").unwrap();
        header.append_header("x-multi", "1").unwrap();
        header.append_header("x-multi", "2").unwrap();
        let new = NewWrite {
            version: 42,
            idempotency_key: "k".into(),
            primary: 0,
            key: 9,
            request: CapturedRequest::of(&header),
            body: Bytes::from_static(b"hello"),
        };
        let write = Write::new(7, &new, "a", None);
        assert_eq!(
            std::str::from_utf8(&write.wire).unwrap(),
            "PUT /kv/a?x=1 HTTP/1.1\r\ncontent-type: text/plain\r\nx-multi: 1\r\nx-multi: 2\r\n\
             x-hothot-replicated-from: a\r\ncontent-length: 5\r\n\r\nhello"
        );
        let (head, rest) = write.wire_for(0);
        assert_eq!(
            [head, rest].concat(),
            b"PUT /kv/a?x=1 HTTP/1.1\r\ncontent-type: text/plain\r\nx-multi: 1\r\nx-multi: 2\r\n\
content-length: 5\r\n\r\nhello",
            "the primary's own copy names no primary"
        );
        assert_eq!(write.wire_for(1), (&write.wire[..], &b""[..]));
        assert_eq!(write.request_line(), "PUT /kv/a?x=1 HTTP/1.1");

        let mut bytes = Vec::new();
        WriteView {
            seq: 7,
            version: 42,
            accepted_unix_ms: unix_ms(SystemTime::now()),
            primary: "a",
            targets: &["b"],
            idempotency_key: "k",
            request: &new.request.journal,
            body: &new.body,
        }
        .encode(&mut bytes);
        let Ok((Record::Write(record), _)) = Record::decode(&bytes) else {
            panic!("the record does not decode");
        };
        assert_eq!(record.uri, "/kv/a?x=1");
        assert_eq!(record.headers.len(), 4);
        let recovered = Write::from_record(record, Some(0), |_| 9).unwrap();
        assert_eq!(recovered.wire, write.wire);
        assert_eq!(recovered.from_line, write.from_line);
        assert_eq!(
            (recovered.seq, recovered.version, recovered.key),
            (7, 42, 9)
        );
    }
}
