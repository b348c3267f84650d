//! A write accepted by its primary, as every peer will receive it.

use bytes::Bytes;
use pingora_http::RequestHeader;
use std::time::Instant;
use tokio::sync::Semaphore;

pub struct Write {
    /// Stamped once per write; identical on the primary and every peer.
    pub version: u64,
    pub idempotency_key: String,
    /// Index of the origin that served it.
    pub primary: usize,
    /// Method, path, query and headers as sent to the primary (hop-by-hop
    /// headers already removed, version and idempotency key already set).
    pub header: RequestHeader,
    pub body: Bytes,
    /// When the primary answered: the start of the peers' delay window.
    pub accepted_at: Instant,
    /// One permit per peer acknowledgement (2xx); sync clients wait on it.
    acks: Semaphore,
}

impl Write {
    pub fn new(
        version: u64,
        idempotency_key: String,
        primary: usize,
        header: RequestHeader,
        body: Bytes,
    ) -> Self {
        Write {
            version,
            idempotency_key,
            primary,
            header,
            body,
            accepted_at: Instant::now(),
            acks: Semaphore::new(0),
        }
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
