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
//! [`descriptor_budget`].

mod evict;
mod serve;

pub use serve::{buffers, guarded_service, Guarded};

use crate::metrics::ConnectionMetrics;
use async_trait::async_trait;
use pingora_core::listeners::ConnectionFilter;
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
    evict: evict::Eviction,
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
    metrics: ConnectionMetrics,
}

impl Book {
    pub fn new(max: usize, metrics: ConnectionMetrics) -> Arc<Self> {
        let book = Arc::new(Book {
            max: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            waiting: Mutex::new(VecDeque::new()),
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
            evict: evict::Eviction::default(),
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
                connection.evict.signal();
                self.metrics.evicted.inc();
                return true;
            }
        }
        false
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

/// Descriptors kept for what hothot opens itself, beyond what each client
/// connection needs (see [`descriptor_budget`]): `kept` (the upstream
/// keep-alive pool, the side listeners' connections), probes and
/// replication lanes (a few per origin), the journal, listeners and the
/// runtime.
fn reserve(origins: usize, kept: usize) -> usize {
    64 + kept + 8 * origins
}

/// The client connection budget for `origins` origins and `kept`
/// descriptors held elsewhere (the idle upstream pool, the side
/// listeners): [`descriptor_budget`] after the [`reserve`]. At start-up
/// and at every reload (the origins may change).
pub fn budget(
    configured: Option<usize>,
    origins: usize,
    kept: usize,
) -> Result<usize, (String, String)> {
    descriptor_budget(configured, reserve(origins, kept))
}

/// How many client connections hothot may hold: `limits.max_connections`,
/// or what the descriptor limit allows after the [`reserve`], at three
/// descriptors per connection: its own, the origin connection serving it,
/// and one for a connection the [`Gate`] let in that is not admitted yet
/// (a burst of new connections arrives faster than they are admitted). The soft limit is raised to the hard one first, as
/// nginx's `worker_rlimit_nofile` would. `Err` (naming the key) when the
/// configured number cannot fit.
pub fn descriptor_budget(
    configured: Option<usize>,
    reserve: usize,
) -> Result<usize, (String, String)> {
    let limit = raise_descriptor_limit();
    let fits = limit.saturating_sub(reserve) / 3;
    match configured {
        None if fits == 0 => Err((
            "limits.max_connections".to_owned(),
            format!("this process may open only {limit} descriptors (ulimit -n), {reserve} of which are kept for origins, probes and replication"),
        )),
        None => Ok(fits),
        Some(max) if max > fits => Err((
            "limits.max_connections".to_owned(),
            format!(
                "{max} connections need about {} descriptors (3 each, plus {reserve} for origins, probes and replication); this process may open {limit} (ulimit -n): lower it or raise the limit",
                max * 3 + reserve
            ),
        )),
        Some(max) => Ok(max),
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit.
fn raise_descriptor_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
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

    #[test]
    fn budgets_follow_the_descriptor_limit() {
        let limit = raise_descriptor_limit();
        assert_eq!(descriptor_budget(Some(10), 100), Ok(10));
        assert!(descriptor_budget(Some(limit), 0).is_err());
        assert_eq!(descriptor_budget(None, 100), Ok((limit - 100) / 3));
    }
}
