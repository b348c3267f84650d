//! Delivery to one peer: send the head of its backlog until the peer
//! acknowledges it, then the next. One write in flight per peer keeps the
//! peer's order equal to the primaries' acknowledgement order.
//!
//! 2xx: delivered. 4xx: the peer refuses this copy for good (counted, logged,
//! dropped from the backlog). Anything else (refused connection, timeout, 5xx)
//! is retried with exponential backoff and jitter, from `retry.initial` up to
//! `retry.max`, for as long as it takes.

use super::queue::PeerQueue;
use super::write::Write;
use crate::config::Timeouts;
use crate::metrics::PeerMetrics;
use bytes::Bytes;
use pingora_core::connectors::http::Connector;
use pingora_core::upstreams::peer::HttpPeer;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How the delivery of one copy ended.
enum Attempt {
    Delivered,
    Refused(u16),
    Failed(String),
}

/// Exponential backoff with jitter: each delay is drawn from [d/2, d], d doubling up to `max`.
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
    seed: u64,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration, seed: u64) -> Self {
        Backoff {
            initial,
            max,
            current: initial,
            seed: seed | 1,
        }
    }

    pub fn reset(&mut self) {
        self.current = self.initial;
    }

    pub fn next_delay(&mut self) -> Duration {
        // xorshift64: jitter only needs to spread peers' retries apart.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let full = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = full / 2;
        half + Duration::from_nanos(self.seed % (half.as_nanos() as u64).max(1))
    }
}

pub struct PeerWorker {
    pub name: String,
    pub address: SocketAddr,
    /// Names of all origins, to say which primary a copy comes from.
    pub origin_names: Arc<Vec<String>>,
    pub queue: Arc<PeerQueue>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub index: usize,
    pub timeouts: Timeouts,
    pub backoff: Backoff,
}

impl PeerWorker {
    fn metrics(&self) -> &PeerMetrics {
        &self.metrics.replication.peers[self.index]
    }

    /// Delivers forever; returns only when the caller drops the future.
    pub async fn run(mut self) {
        let connector = Connector::new(None);
        let mut failing_since: Option<u64> = None;
        loop {
            let write = self.queue.head().await;
            loop {
                match self.send(&connector, &write).await {
                    Attempt::Delivered => {
                        self.metrics().delivered.inc();
                        self.metrics()
                            .sync
                            .observe(write.accepted_at.elapsed().as_secs_f64());
                        write.acknowledge();
                        break;
                    }
                    Attempt::Refused(status) => {
                        self.metrics().failed.inc();
                        log::warn!(
                            "replication to {}: write version {} ({} {}) refused with {status}; not retried",
                            self.name,
                            write.version,
                            write.header.method,
                            write.header.uri
                        );
                        break;
                    }
                    Attempt::Failed(reason) => {
                        self.metrics().retried.inc();
                        let retries = failing_since.get_or_insert(0);
                        if *retries == 0 {
                            log::warn!(
                                "replication to {}: {reason}; retrying with backoff",
                                self.name
                            );
                        }
                        *retries += 1;
                        tokio::time::sleep(self.backoff.next_delay()).await;
                    }
                }
            }
            self.queue.pop();
            self.metrics().pending.dec();
            if let Some(retries) = failing_since.take() {
                log::info!(
                    "replication to {}: delivering again after {retries} failed attempts",
                    self.name
                );
            }
            self.backoff.reset();
        }
    }

    async fn send(&self, connector: &Connector, write: &Write) -> Attempt {
        match self.try_send(connector, write).await {
            Ok(status) if (200..300).contains(&status) => Attempt::Delivered,
            Ok(status) if (400..500).contains(&status) => Attempt::Refused(status),
            Ok(status) => Attempt::Failed(format!("peer answered {status}")),
            Err(e) => Attempt::Failed(e.to_string()),
        }
    }

    async fn try_send(&self, connector: &Connector, write: &Write) -> pingora_error::Result<u16> {
        let mut peer = HttpPeer::new(self.address, false, String::new());
        peer.options.connection_timeout = Some(self.timeouts.connect);
        peer.options.read_timeout = Some(self.timeouts.read);
        peer.options.write_timeout = Some(self.timeouts.write);
        peer.options.idle_timeout = Some(self.timeouts.idle);
        let (mut session, _reused) = connector.get_http_session(&peer).await?;
        session.set_read_timeout(Some(self.timeouts.read));
        session.set_write_timeout(Some(self.timeouts.write));
        let mut header = write.header.clone();
        let primary = self
            .origin_names
            .get(write.primary)
            .map_or("", String::as_str);
        header.insert_header(super::REPLICATED_FROM, primary)?;
        header.remove_header(&http::header::TRANSFER_ENCODING);
        header.insert_header(http::header::CONTENT_LENGTH, write.body.len())?;
        session.write_request_header(Box::new(header)).await?;
        if !write.body.is_empty() {
            session.write_request_body(write.body.clone(), true).await?;
        }
        session.finish_request_body().await?;
        session.read_response_header().await?;
        let status = session.response_header().map_or(0, |h| h.status.as_u16());
        // Read the answer to its end so that the connection can be reused.
        while let Some(_chunk) = session.read_response_body().await? {
            let _: Bytes = _chunk;
        }
        connector
            .release_http_session(session, &peer, Some(self.timeouts.idle))
            .await;
        Ok(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_stops_at_max() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1), 7);
        let delays: Vec<Duration> = (0..8).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
        assert!(delays[1] >= Duration::from_millis(100) && delays[1] <= Duration::from_millis(200));
        assert!(delays[7] >= Duration::from_millis(500) && delays[7] <= Duration::from_secs(1));
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }
}
