// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//! A per-thread pool of idle upstream connections, for current-thread
//! runtimes (`work_stealing: false`).
//!
//! The shared pool ([`pingora_pool::ConnectionPool`]) serves any runtime, at
//! a price paid on every proxied request: releasing a connection allocates
//! its slot, a oneshot and a notifier, takes a sharded lock, and spawns an
//! idle-watch task; reusing it wakes that task and waits for it to let go
//! of the connection. On a current-thread runtime every task of the
//! runtime runs on one thread, so that thread's idle connections can live
//! in a thread-local map with no lock, no task and no allocation per
//! request: release pushes, reuse pops (the most recently used first).
//!
//! Nothing watches an idle connection while it sits there. The reuse path
//! already tests a connection before handing it out (a non-blocking read
//! that sees a close or unexpected data without a system call, from the
//! readiness the reactor recorded), and one task per thread sweeps the idle
//! connections every [`SWEEP_EVERY`]: those that were closed by the peer or
//! sent data, and those past their idle timeout, are dropped. A connection
//! the peer closed is thus closed here within a second instead of at once.
//!
//! Like nginx's `keepalive N` (per worker), the pool's size bounds each
//! thread's idle connections of one connector; the least recently released
//! goes first.

use super::{test_reusable_stream, PoolCallback};
use crate::protocols::Stream;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::runtime::{Handle, RuntimeFlavor};

/// How often each thread's idle connections are looked over.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Should the current runtime use the per-thread pool?
pub fn applies() -> bool {
    Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::CurrentThread)
}

/// One connector's handle on the per-thread pools.
pub struct LocalPool {
    id: u64,
    size: usize,
    /// Idle connections of a dropped connector are dropped at the next sweep.
    alive: Arc<()>,
    unexpected_data: Arc<AtomicU64>,
    callback: Option<PoolCallback>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static IDLE: RefCell<ThreadIdle> = RefCell::new(ThreadIdle::default());
}

/// This thread's idle connections, by connector.
#[derive(Default)]
struct ThreadIdle {
    connectors: HashMap<u64, ConnectorIdle>,
    /// Held by this thread's sweeper task: dead once its runtime dropped it.
    sweeper: Weak<()>,
}

/// One connector's idle connections on this thread.
struct ConnectorIdle {
    by_key: HashMap<u64, Vec<IdleStream>>,
    /// Released order, oldest first, for the size bound; entries of
    /// connections since reused are skipped (and cleared out in bulk).
    order: VecDeque<(u64, u64)>,
    count: usize,
    next_serial: u64,
    alive: Weak<()>,
    unexpected_data: Arc<AtomicU64>,
}

struct IdleStream {
    stream: Stream,
    serial: u64,
    released: Instant,
    idle_timeout: Option<Duration>,
}

impl IdleStream {
    fn expired(&self, now: Instant) -> bool {
        self.idle_timeout
            .is_some_and(|timeout| now.saturating_duration_since(self.released) >= timeout)
    }
}

impl LocalPool {
    pub fn new(
        size: usize,
        unexpected_data: Arc<AtomicU64>,
        callback: Option<PoolCallback>,
    ) -> Self {
        LocalPool {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            size,
            alive: Arc::new(()),
            unexpected_data,
            callback,
        }
    }

    /// Keeps `stream` (already tested reusable) for a later request to `key`.
    pub fn put(&self, key: u64, stream: Stream, idle_timeout: Option<Duration>) {
        if self.size == 0 {
            return;
        }
        let evicted = IDLE.with(|idle| {
            let mut idle = idle.borrow_mut();
            if idle.sweeper.strong_count() == 0 {
                idle.sweeper = start_sweeper();
            }
            let connector = idle
                .connectors
                .entry(self.id)
                .or_insert_with(|| ConnectorIdle {
                    by_key: HashMap::new(),
                    order: VecDeque::new(),
                    count: 0,
                    next_serial: 0,
                    alive: Arc::downgrade(&self.alive),
                    unexpected_data: self.unexpected_data.clone(),
                });
            let serial = connector.next_serial;
            connector.next_serial += 1;
            connector.by_key.entry(key).or_default().push(IdleStream {
                stream,
                serial,
                released: Instant::now(),
                idle_timeout,
            });
            connector.order.push_back((key, serial));
            connector.count += 1;
            let mut evicted = Vec::new();
            while connector.count > self.size {
                match connector.pop_oldest() {
                    Some(oldest) => evicted.push(oldest),
                    None => break,
                }
            }
            connector.compact();
            evicted
        });
        // Dropped (closed) outside the pool's borrow.
        for stream in evicted {
            if let Some(callback) = &self.callback {
                callback(stream.released.elapsed());
            }
        }
    }

    /// The most recently released idle connection to `key` that is not past
    /// its idle timeout; the caller tests it before use.
    pub fn take(&self, key: u64) -> Option<Stream> {
        let now = Instant::now();
        IDLE.with(|idle| {
            let mut idle = idle.borrow_mut();
            let connector = idle.connectors.get_mut(&self.id)?;
            let streams = connector.by_key.get_mut(&key)?;
            while let Some(idle) = streams.pop() {
                connector.count -= 1;
                if !idle.expired(now) {
                    return Some(idle.stream);
                }
            }
            None
        })
    }
}

impl ConnectorIdle {
    /// Removes the least recently released idle connection.
    fn pop_oldest(&mut self) -> Option<IdleStream> {
        while let Some((key, serial)) = self.order.pop_front() {
            let Some(streams) = self.by_key.get_mut(&key) else {
                continue;
            };
            if let Some(position) = streams.iter().position(|s| s.serial == serial) {
                self.count -= 1;
                return Some(streams.remove(position));
            }
        }
        None
    }

    /// Clears out the order's entries for connections no longer idle once
    /// they outnumber the idle ones, so that it stays O(idle connections).
    fn compact(&mut self) {
        if self.order.len() <= 2 * self.count + 64 {
            return;
        }
        let by_key = &self.by_key;
        self.order.retain(|(key, serial)| {
            by_key
                .get(key)
                .is_some_and(|streams| streams.iter().any(|s| s.serial == *serial))
        });
    }

    /// Drops idle connections closed by the peer, that sent data, or past
    /// their idle timeout.
    fn sweep(&mut self, now: Instant) {
        let unexpected_data = &self.unexpected_data;
        let mut count = 0;
        self.by_key.retain(|_, streams| {
            streams.retain_mut(|idle| {
                !idle.expired(now) && test_reusable_stream(&mut idle.stream, unexpected_data)
            });
            count += streams.len();
            !streams.is_empty()
        });
        self.count = count;
        self.compact();
    }
}

/// Starts this thread's sweeper on the current runtime; returns the token
/// that stays alive as long as the task does.
fn start_sweeper() -> Weak<()> {
    let token = Arc::new(());
    let weak = Arc::downgrade(&token);
    let Ok(runtime) = Handle::try_current() else {
        return Weak::new();
    };
    runtime.spawn(async move {
        let _token = token;
        loop {
            tokio::time::sleep(SWEEP_EVERY).await;
            let now = Instant::now();
            IDLE.with(|idle| {
                let mut idle = idle.borrow_mut();
                idle.connectors.retain(|_, c| c.alive.strong_count() > 0);
                idle.connectors.values_mut().for_each(|c| c.sweep(now));
            });
        }
    });
    weak
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::TransportConnector;
    use crate::upstreams::peer::{BasicPeer, Peer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A listener that keeps every connection it accepts until told to
    /// close them all.
    async fn keeping_listener() -> (String, tokio::sync::mpsc::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (close, mut closing) = tokio::sync::mpsc::channel::<()>(1);
        tokio::spawn(async move {
            let mut kept = Vec::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => kept.push(accepted.unwrap().0),
                    _ = closing.recv() => {
                        kept.clear();
                    }
                }
            }
        });
        (address, close)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_released_connection_is_reused_without_a_new_connect() {
        assert!(applies());
        let (address, _close) = keeping_listener().await;
        let connector = TransportConnector::new(None);
        let peer = BasicPeer::new(&address);
        let (stream, reused) = connector.get_stream(&peer).await.unwrap();
        assert!(!reused);
        let id = stream.id();
        connector.release_stream(stream, peer.reuse_hash(), None);
        let (stream, reused) = connector.get_stream(&peer).await.unwrap();
        assert!(reused, "the released connection was not reused");
        assert_eq!(stream.id(), id);
        // Taken: the pool no longer holds it.
        let (other, reused) = connector.get_stream(&peer).await.unwrap();
        assert!(!reused);
        assert_ne!(other.id(), id);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn idle_connections_closed_by_the_peer_or_timed_out_are_not_reused() {
        let (address, close) = keeping_listener().await;
        let connector = TransportConnector::new(None);
        let peer = BasicPeer::new(&address);
        let (stream, _) = connector.get_stream(&peer).await.unwrap();
        connector.release_stream(stream, peer.reuse_hash(), None);
        tokio::time::sleep(Duration::from_millis(50)).await; // accepted by then
        close.send(()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, reused) = connector.get_stream(&peer).await.unwrap();
        assert!(!reused, "a connection the peer closed was reused");

        let (stream, _) = connector.get_stream(&peer).await.unwrap();
        connector.release_stream(stream, peer.reuse_hash(), Some(Duration::from_millis(50)));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, reused) = connector.get_stream(&peer).await.unwrap();
        assert!(!reused, "a connection past its idle timeout was reused");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_sweeper_closes_idle_connections_the_peer_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = BasicPeer::new(&listener.local_addr().unwrap().to_string());
        let connector = TransportConnector::new(None);
        let (stream, _) = connector.get_stream(&peer).await.unwrap();
        let (mut server_side, _) = listener.accept().await.unwrap();
        connector.release_stream(stream, peer.reuse_hash(), None);
        // The server closes its end: our idle end must be closed by the
        // sweep, which the server sees as an end of stream.
        server_side.shutdown().await.unwrap();
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(SWEEP_EVERY * 3, server_side.read(&mut byte)).await;
        assert!(
            matches!(read, Ok(Ok(0))),
            "the idle connection was not closed by the sweep: {read:?}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_size_bounds_the_idle_connections_least_recently_released_first() {
        let (address, _close) = keeping_listener().await;
        let pool = LocalPool::new(2, Arc::default(), None);
        let connector = TransportConnector::new(None);
        let peer = BasicPeer::new(&address);
        let mut ids = Vec::new();
        for _ in 0..3 {
            let (stream, _) = connector.get_stream(&peer).await.unwrap();
            ids.push(stream.id());
            pool.put(7, stream, None);
        }
        // The first was evicted; the last released comes out first.
        assert_eq!(pool.take(7).map(|s| s.id()), Some(ids[2]));
        assert_eq!(pool.take(7).map(|s| s.id()), Some(ids[1]));
        assert!(pool.take(7).is_none());
    }
}
