//! A sequenced write, as every origin will receive it.
//!
//! The request is encoded once, while the proxy still holds it: in the HTTP/1.1
//! form the origins receive (shared by every origin's copy) and in the form the
//! log stores ([`super::payload`]). Nothing is re-encoded per origin or kept
//! as parsed headers.

use super::payload::{self, encode_request, StoredWrite};
use super::reply::Reply;
use crate::pool::OriginId;
use bytes::{Bytes, BytesMut};
use pingora_http::RequestHeader;
use std::borrow::Cow;
use std::fmt::Write as _;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;

/// A write with its place in the sequence.
pub struct Write {
    /// Position in the log and in every backlog.
    pub seq: u64,
    /// Stamped once per write; identical on every origin.
    pub version: u64,
    /// The origin whose answer the client gets, if it is (still) in the pool.
    pub primary: Option<OriginId>,
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
    /// Which origins applied it or gave it up.
    pub fate: super::fate::Fate,
    /// In a cluster, a write another instance's client waits for: each
    /// origin's answer is sent there (#25).
    pub asked_at: Option<Box<AskedAt>>,
}

/// The instance whose client waits for a write, and the write's id in the
/// shared order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AskedAt {
    pub instance: String,
    pub id: String,
}

/// A request captured for replication, encoded both ways.
#[derive(Debug, Default)]
pub struct CapturedRequest {
    /// Request line and headers in HTTP/1.1, without the framing headers
    /// (the copy's body is complete: it gets its own `content-length`).
    wire_head: Vec<u8>,
    /// Method, target URI and headers as the log stores them.
    stored: Vec<u8>,
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
        let mut stored = Vec::with_capacity(wire_head.len() + 64);
        encode_request(method, uri, count, headers(), &mut stored);
        CapturedRequest { wire_head, stored }
    }
}

/// The parts of a write known before it has a sequence number.
pub struct NewWrite {
    pub version: u64,
    pub idempotency_key: String,
    pub primary: OriginId,
    /// See [`Write::key`].
    pub key: u64,
    pub request: CapturedRequest,
    pub body: Bytes,
}

impl NewWrite {
    /// What the log stores of this write, served by `primary` (its name),
    /// in pieces: `head` is `payload::encode_head`'s, `prefix` the body's
    /// length prefix.
    pub fn payload<'a>(&'a self, head: &'a [u8], prefix: &'a [u8; 4]) -> [&'a [u8]; 4] {
        [head, &self.request.stored, prefix, &self.body]
    }

    /// The fields the stored payload starts with, as of now.
    pub fn payload_head(&self, primary: &str) -> Vec<u8> {
        payload::encode_head(
            self.version,
            unix_ms(SystemTime::now()),
            primary,
            &self.idempotency_key,
        )
    }
}

/// Who a write is from: the primary's name (for `X-Hothot-Replicated-From`)
/// and id, if it is in the pool.
type Primary<'a> = (&'a str, Option<OriginId>);

impl Write {
    pub fn new(seq: u64, new: &NewWrite, primary: &str, reply: Option<Arc<Reply>>) -> Self {
        let mut write = Self::build(
            seq,
            new.version,
            &new.request,
            (primary, Some(new.primary)),
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
        (name, primary): Primary<'_>,
        body: &[u8],
        accepted_at: Instant,
    ) -> Self {
        let head = &request.wire_head;
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
            primary,
            key: 0,
            wire: wire.freeze(),
            from_line,
            accepted_at,
            acks: Semaphore::new(0),
            reply: None,
            fate: Default::default(),
            asked_at: None,
        }
    }

    /// The request as `origin` receives it, in two pieces: the primary's own
    /// copy has no `X-Hothot-Replicated-From`.
    pub fn wire_for(&self, origin: OriginId) -> (&[u8], &[u8]) {
        if self.primary == Some(origin) {
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

    /// The write numbered `seq` as the log gave it back, served by
    /// `primary`, ordered by `key`. `None` if its request no longer parses.
    pub fn from_stored(
        seq: u64,
        stored: &StoredWrite,
        primary: Option<OriginId>,
        key: u64,
    ) -> Option<Self> {
        http::Method::from_bytes(stored.method.as_bytes()).ok()?;
        let uri: http::Uri = stored.uri.parse().ok()?;
        let target = uri.path_and_query().map_or("/", |p| p.as_str());
        for (name, value) in &stored.headers {
            http::HeaderName::from_bytes(name.as_bytes()).ok()?;
            http::HeaderValue::from_bytes(value).ok()?;
        }
        let headers = || {
            stored
                .headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_slice()))
        };
        let count = stored.headers.len();
        let request = CapturedRequest::new(&stored.method, &stored.uri, target, count, headers);
        let age = unix_ms(SystemTime::now()).saturating_sub(stored.accepted_unix_ms);
        let accepted_at = Instant::now()
            .checked_sub(Duration::from_millis(age))
            .unwrap_or_else(Instant::now);
        let mut write = Self::build(
            seq,
            stored.version,
            &request,
            (&stored.primary, primary),
            &stored.body,
            accepted_at,
        );
        write.key = key;
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

    #[test]
    fn a_copy_read_back_from_the_log_is_byte_identical() {
        let mut header = RequestHeader::build("PUT", b"/kv/a?x=1", None).unwrap();
        header.insert_header("content-type", "text/plain").unwrap();
        header.insert_header("content-length", "5").unwrap();
        header.append_header("x-multi", "1").unwrap();
        header.append_header("x-multi", "2").unwrap();
        let a = OriginId::from_slot(0);
        let new = NewWrite {
            version: 42,
            idempotency_key: "k".into(),
            primary: a,
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
        let (head, rest) = write.wire_for(a);
        assert_eq!(
            [head, rest].concat(),
            b"PUT /kv/a?x=1 HTTP/1.1\r\ncontent-type: text/plain\r\nx-multi: 1\r\nx-multi: 2\r\n\
content-length: 5\r\n\r\nhello",
            "the primary's own copy names no primary"
        );
        let b = OriginId::from_slot(1);
        assert_eq!(write.wire_for(b), (&write.wire[..], &b""[..]));
        assert_eq!(write.request_line(), "PUT /kv/a?x=1 HTTP/1.1");

        let head = new.payload_head("a");
        let prefix = payload::body_prefix(&new.body);
        let stored = Bytes::from(new.payload(&head, &prefix).concat());
        let stored = StoredWrite::decode(&stored).unwrap();
        assert_eq!(stored.uri, "/kv/a?x=1");
        assert_eq!(stored.headers.len(), 4);
        let recovered = Write::from_stored(7, &stored, Some(a), 9).unwrap();
        assert_eq!(recovered.wire, write.wire);
        assert_eq!(recovered.from_line, write.from_line);
        assert_eq!(
            (recovered.seq, recovered.version, recovered.key),
            (7, 42, 9)
        );
    }
}
