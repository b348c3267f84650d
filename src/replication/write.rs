//! A write accepted by its primary, as every peer will receive it.
//!
//! The request is encoded once, while the proxy still holds it: in the HTTP/1.1
//! form the peers receive (shared by every peer's copy) and in the form the
//! journal records. Nothing is re-encoded per peer or kept as parsed headers.

use crate::journal::record::{encode_request, WriteRecord, WriteView};
use crate::journal::{Durability, Journal};
use bytes::{Bytes, BytesMut};
use pingora_http::RequestHeader;
use std::borrow::Cow;
use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;

pub struct Write {
    /// Position in the journal and in every peer's backlog.
    pub seq: u64,
    /// Stamped once per write; identical on the primary and every peer.
    pub version: u64,
    /// The copy every peer receives, ready to send: request line, headers as
    /// sent to the primary (hop-by-hop ones removed, version and idempotency
    /// key set), `X-Hothot-Replicated-From`, `content-length` and the body.
    pub wire: Bytes,
    /// When the primary answered: the start of the peers' delay window.
    pub accepted_at: Instant,
    /// One permit per peer acknowledgement (2xx); sync clients wait on it.
    acks: Semaphore,
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
    pub request: CapturedRequest,
    pub body: Bytes,
}

impl NewWrite {
    /// Appends this write, numbered `seq`, served by `primary` and addressed
    /// to `targets`, to the journal.
    pub fn journal(
        &self,
        journal: &Journal,
        seq: u64,
        primary: &str,
        targets: &[&str],
    ) -> Durability {
        journal.append(&WriteView {
            seq,
            version: self.version,
            accepted_unix_ms: unix_ms(SystemTime::now()),
            primary,
            targets,
            idempotency_key: &self.idempotency_key,
            request: &self.request.journal,
            body: &self.body,
        })
    }
}

impl Write {
    pub fn new(seq: u64, new: &NewWrite, primary: &str) -> Self {
        Self::build(
            seq,
            new.version,
            &new.request,
            primary,
            &new.body,
            Instant::now(),
        )
    }

    fn build(
        seq: u64,
        version: u64,
        request: &CapturedRequest,
        primary: &str,
        body: &[u8],
        accepted_at: Instant,
    ) -> Self {
        let head = &request.wire_head;
        let mut wire = BytesMut::with_capacity(head.len() + primary.len() + body.len() + 64);
        wire.extend_from_slice(head);
        wire.extend_from_slice(super::REPLICATED_FROM.as_bytes());
        wire.extend_from_slice(b": ");
        wire.extend_from_slice(primary.as_bytes());
        wire.extend_from_slice(b"\r\ncontent-length: ");
        let _ = write!(wire, "{}\r\n\r\n", body.len()); // BytesMut grows: it cannot fail
        wire.extend_from_slice(body);
        Write {
            seq,
            version,
            wire: wire.freeze(),
            accepted_at,
            acks: Semaphore::new(0),
        }
    }

    /// A write read back from the journal. `None` if its request no longer parses.
    pub fn from_record(record: WriteRecord) -> Option<Self> {
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
        Some(Self::build(
            record.seq,
            record.version,
            &request,
            &record.primary,
            &record.body,
            accepted_at,
        ))
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
            request: CapturedRequest::of(&header),
            body: Bytes::from_static(b"hello"),
        };
        let write = Write::new(7, &new, "a");
        assert_eq!(
            std::str::from_utf8(&write.wire).unwrap(),
            "PUT /kv/a?x=1 HTTP/1.1\r\ncontent-type: text/plain\r\nx-multi: 1\r\nx-multi: 2\r\n\
             x-hothot-replicated-from: a\r\ncontent-length: 5\r\n\r\nhello"
        );
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
        let recovered = Write::from_record(record).unwrap();
        assert_eq!(recovered.wire, write.wire);
        assert_eq!((recovered.seq, recovered.version), (7, 42));
    }
}
