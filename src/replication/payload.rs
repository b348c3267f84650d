//! What the log keeps of a write: everything its copies are rebuilt from
//! after a restart, encoded here (the log stores it as opaque bytes).
//!
//! In order: version, acceptance time (Unix ms), the primary's name, the
//! idempotency key, then the request: method, target URI, headers, body
//! ([`crate::codec`]'s fields). The request's part (method, target and
//! headers) is encoded once, while the proxy still holds the request
//! ([`encode_request`]); the body is stored as it came.

use crate::codec::{put_bytes, put_u32, put_u64, Reader};
use bytes::Bytes;

/// Encodes a request's method, target URI and `count` headers: the part of
/// a payload the proxy encodes while it still holds the request.
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

/// The fields before the request: version, acceptance time, primary and
/// idempotency key.
pub fn encode_head(
    version: u64,
    accepted_unix_ms: u64,
    primary: &str,
    idempotency_key: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + primary.len() + idempotency_key.len());
    put_u64(&mut out, version);
    put_u64(&mut out, accepted_unix_ms);
    put_bytes(&mut out, primary.as_bytes());
    put_bytes(&mut out, idempotency_key.as_bytes());
    out
}

/// The length prefix of a body stored right after it.
pub fn body_prefix(body: &[u8]) -> [u8; 4] {
    u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes()
}

/// A write as the log gave it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredWrite {
    pub version: u64,
    /// Milliseconds since the Unix epoch when it was sequenced.
    pub accepted_unix_ms: u64,
    pub primary: String,
    pub idempotency_key: String,
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Bytes,
}

impl StoredWrite {
    /// Takes a payload apart; `None` if it is not one this module wrote.
    pub fn decode(payload: &Bytes) -> Option<Self> {
        let mut reader = Reader::new(payload);
        let version = reader.u64()?;
        let accepted_unix_ms = reader.u64()?;
        let primary = reader.string()?;
        let idempotency_key = reader.string()?;
        let method = reader.string()?;
        let uri = reader.string()?;
        let headers = (0..reader.u32()?)
            .map(|_| Some((reader.string()?, reader.bytes()?.to_vec())))
            .collect::<Option<Vec<_>>>()?;
        let body = reader.bytes()?;
        if !reader.is_empty() {
            return None;
        }
        // The body is a slice of the payload, not a copy of it.
        let start = body.as_ptr() as usize - payload.as_ptr() as usize;
        Some(StoredWrite {
            version,
            accepted_unix_ms,
            primary,
            idempotency_key,
            method,
            uri,
            headers,
            body: payload.slice(start..start + body.len()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_round_trips_from_its_pieces() {
        let headers = [
            ("content-type", &b"text/plain"[..]),
            ("x-bin", &[0xff, 1][..]),
        ];
        let mut request = Vec::new();
        encode_request("PUT", "/kv/a?x=1", 2, headers.into_iter(), &mut request);
        let head = encode_head(42, 1_700_000_000_000, "a", "key-1");
        let body = b"hello";
        let payload = Bytes::from([&head[..], &request, &body_prefix(body), body].concat());
        let stored = StoredWrite::decode(&payload).unwrap();
        assert_eq!(
            stored,
            StoredWrite {
                version: 42,
                accepted_unix_ms: 1_700_000_000_000,
                primary: "a".into(),
                idempotency_key: "key-1".into(),
                method: "PUT".into(),
                uri: "/kv/a?x=1".into(),
                headers: vec![
                    ("content-type".into(), b"text/plain".to_vec()),
                    ("x-bin".into(), vec![0xff, 1]),
                ],
                body: Bytes::from_static(b"hello"),
            }
        );
        assert_eq!(
            StoredWrite::decode(&payload.slice(..payload.len() - 1)),
            None
        );
    }
}
