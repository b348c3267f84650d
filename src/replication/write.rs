//! A write accepted by its primary, as every peer will receive it.

use crate::journal::record::{WriteRecord, WriteView};
use crate::journal::{Durability, Journal};
use bytes::Bytes;
use pingora_http::RequestHeader;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;

pub struct Write {
    /// Position in the journal and in every peer's backlog.
    pub seq: u64,
    /// Stamped once per write; identical on the primary and every peer.
    pub version: u64,
    pub idempotency_key: String,
    /// Name of the origin that served it.
    pub primary: String,
    /// Method, path, query and headers as sent to the primary (hop-by-hop
    /// headers already removed, version and idempotency key already set).
    pub header: RequestHeader,
    pub body: Bytes,
    /// When the primary answered: the start of the peers' delay window.
    pub accepted_at: Instant,
    /// One permit per peer acknowledgement (2xx); sync clients wait on it.
    acks: Semaphore,
}

/// The parts of a write known before it has a sequence number.
pub struct NewWrite {
    pub version: u64,
    pub idempotency_key: String,
    pub primary: usize,
    pub header: RequestHeader,
    pub body: Bytes,
}

impl Write {
    pub fn new(seq: u64, new: NewWrite, primary: String) -> Self {
        Write {
            seq,
            version: new.version,
            idempotency_key: new.idempotency_key,
            primary,
            header: new.header,
            body: new.body,
            accepted_at: Instant::now(),
            acks: Semaphore::new(0),
        }
    }

    /// Appends this write, addressed to `targets`, to the journal.
    pub fn journal(&self, journal: &Journal, targets: &[&str]) -> Durability {
        let age = self.accepted_at.elapsed();
        let uri = self.header.uri.to_string();
        let headers: Vec<(&str, &[u8])> = self
            .header
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_bytes()))
            .collect();
        journal.append(&WriteView {
            seq: self.seq,
            version: self.version,
            accepted_unix_ms: unix_ms(SystemTime::now()).saturating_sub(age.as_millis() as u64),
            primary: &self.primary,
            targets,
            idempotency_key: &self.idempotency_key,
            method: self.header.method.as_str(),
            uri: &uri,
            headers: &headers,
            body: &self.body,
        })
    }

    /// A write read back from the journal. `None` if its request no longer parses.
    pub fn from_record(record: WriteRecord) -> Option<Self> {
        let mut header =
            RequestHeader::build(record.method.as_str(), record.uri.as_bytes(), None).ok()?;
        for (name, value) in record.headers {
            let value = http::HeaderValue::from_bytes(&value).ok()?;
            header.append_header(name, value).ok()?;
        }
        let age = unix_ms(SystemTime::now()).saturating_sub(record.accepted_unix_ms);
        let accepted_at = Instant::now()
            .checked_sub(Duration::from_millis(age))
            .unwrap_or_else(Instant::now);
        Some(Write {
            seq: record.seq,
            version: record.version,
            idempotency_key: record.idempotency_key,
            primary: record.primary,
            header,
            body: record.body,
            accepted_at,
            acks: Semaphore::new(0),
        })
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
