//! Delivery to one peer: its backlog, in order, until every copy is settled.
//!
//! Copies are pipelined on one keep-alive connection (up to `WINDOW` in
//! flight) and answers come back in request order, so the peer receives the
//! backlog in order. In async mode a few copies wait up to `linger` to leave
//! as one batch. 2xx: delivered. 4xx: refused for good (counted, logged,
//! dropped from the backlog). Anything else (refused connection, timeout, 5xx)
//! drops the connection and resends from that copy on, with exponential
//! backoff and jitter from `retry.initial` up to `retry.max`, for as long as
//! it takes; the window restarts at one copy and doubles with each success,
//! so a recovering peer is probed one write at a time.
//!
//! One caveat of pipelining: if a peer fails a copy while it accepts later
//! copies already in the same window, those later ones are sent again after
//! it. The peer sees them twice (same `Idempotency-Key`) and, for a key they
//! share, last-writer-wins by `X-Hothot-Version` keeps the newest.

use super::pipeline::{PeerConnection, PipelineError};
use super::queue::PeerQueue;
use super::write::Write;
use super::Replicator;
use crate::config::Timeouts;
use crate::metrics::PeerMetrics;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Most copies in flight on a peer's connection.
const WINDOW: usize = 64;

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

/// Why a copy must be sent again.
#[derive(Debug, thiserror::Error)]
enum Retry {
    #[error("{0}")]
    Connection(#[from] PipelineError),
    #[error("peer answered {0}")]
    Status(u16),
}

pub struct PeerWorker {
    pub replicator: Arc<Replicator>,
    /// The peer's index in the pool.
    pub index: usize,
    pub address: SocketAddr,
    pub timeouts: Timeouts,
    /// How long a short batch waits for more copies (zero in sync mode).
    pub linger: Duration,
    pub backoff: Backoff,
}

/// The worker's view of its connection.
struct Pipe {
    connection: PeerConnection,
    /// Copies sent and not yet answered, oldest first (always the backlog's head).
    in_flight: VecDeque<Arc<Write>>,
}

impl PeerWorker {
    fn metrics(&self) -> &PeerMetrics {
        &self.replicator.metrics.replication.peers[self.index]
    }

    fn queue(&self) -> &PeerQueue {
        &self.replicator.queues[self.index]
    }

    fn name(&self) -> &str {
        self.replicator.origin_name(self.index)
    }

    /// Delivers forever; returns only when the caller drops the future.
    pub async fn run(mut self) {
        let mut pipe: Option<Pipe> = None;
        let mut failed_attempts: u64 = 0;
        let mut window = 1;
        loop {
            if pipe.as_ref().is_none_or(|p| p.in_flight.is_empty()) {
                self.queue().head().await;
            }
            match self.step(&mut pipe, window).await {
                Ok(settled) => {
                    if failed_attempts > 0 {
                        log::info!(
                            "replication to {}: delivering again after {failed_attempts} failed attempts",
                            self.name()
                        );
                        failed_attempts = 0;
                        self.backoff.reset();
                    }
                    if settled {
                        window = (window * 2).min(WINDOW);
                    }
                }
                Err(retry) => {
                    self.metrics().retried.inc();
                    if failed_attempts == 0 {
                        log::warn!(
                            "replication to {}: {retry}; retrying with backoff",
                            self.name()
                        );
                    }
                    failed_attempts += 1;
                    pipe = None;
                    window = 1;
                    tokio::time::sleep(self.backoff.next_delay()).await;
                }
            }
        }
    }

    /// Tops the pipeline up, then settles its oldest copy. `Ok(true)` when a
    /// copy was settled, `Ok(false)` when the connection must be reopened.
    async fn step(&self, pipe: &mut Option<Pipe>, window: usize) -> Result<bool, Retry> {
        if pipe.is_none() {
            let connection = PeerConnection::connect(self.address, self.timeouts.connect).await?;
            *pipe = Some(Pipe {
                connection,
                in_flight: VecDeque::new(),
            });
        }
        let Some(p) = pipe.as_mut() else {
            return Ok(false);
        };
        // Batching: copies that leave together cost one send here, one read
        // and (with a peer that flushes pipelined answers together) one write
        // there. So a short batch first lingers for company, and while a batch
        // is out, newcomers wait for it unless a full window has piled up (a
        // backlog drains at full speed). Answers already here are settled
        // first, so what arrived meanwhile leaves in one send.
        let batching =
            !self.linger.is_zero() && self.queue().len().saturating_sub(p.in_flight.len()) < WINDOW;
        if batching && p.in_flight.is_empty() {
            tokio::time::sleep(self.linger).await;
        }
        let settle_first = !p.in_flight.is_empty() && (batching || p.connection.answer_arrived());
        let room = if settle_first {
            0
        } else {
            window.saturating_sub(p.in_flight.len())
        };
        let more = match room {
            0 => Vec::new(),
            room => self.queue().peek(p.in_flight.len(), room),
        };
        if !more.is_empty() {
            let mut bytes = Vec::with_capacity(more.iter().map(|w| w.wire.len()).sum());
            for write in &more {
                bytes.extend_from_slice(&write.wire);
            }
            p.connection.send(&bytes, self.timeouts.write).await?;
            p.in_flight.extend(more);
        }
        let Some(write) = p.in_flight.front().cloned() else {
            return Ok(false);
        };
        let answer = p.connection.read_answer(self.timeouts.read).await?;
        match answer.status {
            200..=299 => {
                self.metrics().delivered.inc();
                self.metrics()
                    .sync
                    .observe(write.accepted_at.elapsed().as_secs_f64());
                write.acknowledge();
            }
            400..=499 => {
                self.metrics().failed.inc();
                log::warn!(
                    "replication to {}: write version {} ({}) refused with {}; not retried",
                    self.name(),
                    write.version,
                    write.request_line(),
                    answer.status
                );
            }
            status => return Err(Retry::Status(status)),
        }
        p.in_flight.pop_front();
        self.replicator.settled(self.index, &write);
        if !answer.keep_alive {
            // Copies sent after this answer are lost with the connection: resend them.
            *pipe = None;
        }
        Ok(true)
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
