//! How many client connections hothot holds, and for how long.
//!
//! A wrapper around the proxy's Pingora app ([`Guarded`]) sees every client
//! connection from accept to close. It admits a new connection against
//! `limits.max_connections`; when hothot is full it closes the connection
//! that has waited longest for a request (an idle keep-alive connection, or
//! one still sending its header), as nginx reuses idle connections, and
//! when none is waiting it refuses the newcomer cheaply: a canned 503 and
//! close, before anything is parsed. It also bounds the whole time a request
//! header may take (`limits.header_timeout`, from the accept, or from the
//! first byte of a reused connection's next request, which may take
//! `keepalive_timeout` to come): Pingora's own header timeout restarts with
//! every byte, so one byte every few seconds held a connection for minutes.
//!
//! A first gate ([`Gate`]) sits in Pingora's accept loop itself: when the
//! connections held and those accepted but not yet admitted reach twice the
//! limit, a new connection is closed there, before it gets a task or a
//! buffer. Without it a fast flood outran the admissions and the
//! process ran out of descriptors, which stalls Pingora's accept loop for a
//! second each time.
//!
//! The limit keeps a reserve of descriptors for what hothot opens itself
//! (origin connections, probes, replication, the journal), so that a flood
//! of clients can never starve the probes and mark the pool down; see
//! [`budget::descriptor_budget`].

mod budget;
mod serve;
mod signal;

pub use budget::budget;
pub use serve::{buffers, guarded_service, Guarded};

use crate::metrics::ConnectionMetrics;
use async_trait::async_trait;
use pingora_core::listeners::ConnectionFilter;
use pingora_core::server::ShutdownWatch;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

tokio::task_local! {
    /// The connection whose request the current task serves.
    static CURRENT: Arc<Connection>;
}

/// The proxy has read the current request's header: the connection is no
/// longer waiting (nor evictable) until its next request.
pub fn header_received() {
    let _ = CURRENT.try_with(|connection| connection.waiting.store(false, Ordering::Release));
}

/// One client connection.
pub struct Connection {
    /// Waiting for a request header (idle, or still receiving one).
    waiting: AtomicBool,
    /// How many times it started waiting: names the current wait, so that
    /// the queue's entries for its earlier waits are known stale.
    waits: AtomicU64,
    signals: signal::Signals,
    book: Arc<Book>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.book.open.fetch_sub(1, Ordering::AcqRel);
        self.book.metrics.open.dec();
    }
}

/// The connections held, and which of them wait for a request.
pub struct Book {
    /// The budget; a reload that adds or removes origins recomputes it.
    max: AtomicUsize,
    open: AtomicUsize,
    /// Accepted by the [`Gate`], not yet admitted.
    pending: AtomicUsize,
    /// Connections that started waiting, oldest first, with the wait each
    /// entry stands for (stale entries are skipped, and cleared out as the
    /// queue grows).
    waiting: Mutex<VecDeque<(Weak<Connection>, u64)>>,
    /// A graceful shutdown has started ([`Book::drain`]).
    draining: AtomicBool,
    /// A task watches for the shutdown ([`Book::watch_shutdown`]).
    watching: AtomicBool,
    metrics: ConnectionMetrics,
}

impl Book {
    pub fn new(max: usize, metrics: ConnectionMetrics) -> Arc<Self> {
        let book = Arc::new(Book {
            max: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            waiting: Mutex::new(VecDeque::new()),
            draining: AtomicBool::new(false),
            watching: AtomicBool::new(false),
            metrics,
        });
        book.set_max(max);
        book
    }

    /// How many client connections are held now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// How many client connections may be held.
    pub fn max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }

    /// Sets the budget, and exports it. At a reload (its origins changed the
    /// descriptors kept for them) connections already held beyond it stay;
    /// new ones are taken as at the limit (by evicting an idle one, or
    /// refused).
    pub fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
        self.metrics.max.set(i64::try_from(max).unwrap_or(i64::MAX));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(Weak<Connection>, u64)>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// May a just-accepted connection go on to be admitted? Not once the
    /// connections held and pending reach twice the limit.
    fn pass_gate(&self) -> bool {
        let load = self.open.load(Ordering::Acquire) + self.pending.load(Ordering::Acquire);
        if load >= 2 * self.max() {
            self.metrics.refused.inc();
            return false;
        }
        self.pending.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// A new connection, if there is room (made by evicting a waiting one).
    fn admit(self: &Arc<Self>) -> Option<Arc<Connection>> {
        // Plain TCP has no handshake that could fail between the gate and
        // here, so every connection through the gate arrives.
        let _ = self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| p.checked_sub(1));
        let open = self.open.fetch_add(1, Ordering::AcqRel) + 1;
        if open > self.max() && !self.evict_one() {
            self.open.fetch_sub(1, Ordering::AcqRel);
            self.metrics.refused.inc();
            return None;
        }
        self.metrics.open.inc();
        Some(Arc::new(Connection {
            waiting: AtomicBool::new(true),
            waits: AtomicU64::new(0),
            signals: signal::Signals::default(),
            book: self.clone(),
        }))
    }

    /// Closes the connection that has waited longest for a request (since
    /// its last one: an entry of an earlier wait of a connection that has
    /// been busy since says nothing of how long it has waited now).
    fn evict_one(&self) -> bool {
        let mut waiting = self.lock();
        while let Some((weak, wait)) = waiting.pop_front() {
            let Some(connection) = weak.upgrade() else {
                continue;
            };
            if connection.waits.load(Ordering::Acquire) != wait {
                continue;
            }
            let idle = connection.waiting.compare_exchange(
                true,
                false,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
            if idle.is_ok() {
                connection.signals.raise(signal::Wake::Evicted);
                self.metrics.evicted.inc();
                return true;
            }
        }
        false
    }

    /// Has a graceful shutdown started?
    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// A graceful shutdown has started: every connection waiting for a
    /// request is told now, the others when they next wait (a connection
    /// starts waiting, in the queue, before it looks at the flag).
    fn drain(&self) {
        self.draining.store(true, Ordering::Release);
        for (connection, _) in self.lock().iter() {
            if let Some(connection) = connection.upgrade() {
                connection.signals.raise(signal::Wake::Draining);
            }
        }
    }

    /// Makes sure a task on the current runtime calls [`Book::drain`] when
    /// `shutdown` is raised; the first connection starts it. One task per
    /// book, so that no connection pays for a wait on the shutdown channel
    /// per request.
    fn watch_shutdown(self: &Arc<Self>, shutdown: &ShutdownWatch) {
        if self.watching.load(Ordering::Acquire) || self.watching.swap(true, Ordering::AcqRel) {
            return;
        }
        let book = Arc::downgrade(self);
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            while !*shutdown.borrow_and_update() {
                if shutdown.changed().await.is_err() {
                    return;
                }
            }
            if let Some(book) = book.upgrade() {
                book.drain();
            }
        });
    }

    /// `connection` starts waiting for its next request.
    fn wait_for_request(&self, connection: &Arc<Connection>) {
        let wait = connection.waits.fetch_add(1, Ordering::AcqRel) + 1;
        connection.waiting.store(true, Ordering::Release);
        let mut waiting = self.lock();
        waiting.push_back((Arc::downgrade(connection), wait));
        // Entries go stale as requests arrive; clear them out once they
        // outnumber the connections, so the queue stays O(connections).
        let open = self.open.load(Ordering::Relaxed);
        if waiting.len() > 2 * open.max(64) {
            waiting.retain(|(w, wait)| {
                w.upgrade().is_some_and(|c| {
                    c.waiting.load(Ordering::Acquire) && c.waits.load(Ordering::Acquire) == *wait
                })
            });
        }
    }
}

/// The gate in Pingora's accept loop (see the module's documentation).
pub struct Gate(Arc<Book>);

impl Gate {
    pub fn new(book: Arc<Book>) -> Self {
        Gate(book)
    }
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate").field("max", &self.0.max()).finish()
    }
}

#[async_trait]
impl ConnectionFilter for Gate {
    async fn should_accept(&self, _peer: Option<&std::net::SocketAddr>) -> bool {
        self.0.pass_gate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(max: usize) -> Arc<Book> {
        let registry = prometheus::Registry::new();
        Book::new(max, ConnectionMetrics::new(&registry).unwrap())
    }

    /// Two connections admitted to `book`, each waiting for its request,
    /// the first longest.
    fn two_waiting(book: &Arc<Book>) -> (Arc<Connection>, Arc<Connection>) {
        let first = book.admit().unwrap();
        book.wait_for_request(&first);
        let second = book.admit().unwrap();
        book.wait_for_request(&second);
        (first, second)
    }

    #[test]
    fn a_full_book_evicts_the_longest_waiting_connection_or_refuses() {
        let book = book(2);
        let (first, second) = two_waiting(&book);
        // second is being served: only first may be evicted.
        second.waiting.store(false, Ordering::Release);
        let third = book.admit().expect("the idle connection makes room");
        assert!(
            !first.waiting.load(Ordering::Acquire),
            "first was not evicted"
        );
        assert!(book.admit().is_none(), "nobody else is idle: refused");
        // The gate closes at twice the limit (held plus pending).
        assert!(book.pass_gate(), "3 held and 1 pending of 2 × 2");
        assert!(!book.pass_gate());
        drop((first, second, third));
        assert_eq!(book.open.load(Ordering::Acquire), 0);
        // One pending from above, three more: four pending is twice the limit.
        assert!((0..3).all(|_| book.pass_gate()));
        assert!(!book.pass_gate(), "4 pending of 2 × 2");
    }

    #[test]
    fn a_connection_busy_since_its_first_wait_is_not_taken_for_the_longest_waiting() {
        let book = book(2);
        let (client, idle) = two_waiting(&book);
        // The client is served and waits again: its first entry is stale.
        client.waiting.store(false, Ordering::Release);
        book.wait_for_request(&client);
        let _newcomer = book.admit().expect("the idle connection makes room");
        assert!(
            !idle.waiting.load(Ordering::Acquire),
            "the idle one was not evicted"
        );
        assert!(
            client.waiting.load(Ordering::Acquire),
            "the client was evicted"
        );
    }
}
