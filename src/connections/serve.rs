//! One client connection's life: admitted, then request after request,
//! with the idle time between them kept cheap.
//!
//! Pingora's own HTTP/1 loop builds a request's whole state (a session, a
//! 4 KiB header buffer and the proxy's request future, about 9 KiB boxed)
//! *before* it waits for the request's first byte, so an idle keep-alive
//! connection held all of it. [`Guarded`] runs that loop itself: it waits
//! for the first byte of each request with a future of a few dozen bytes,
//! and only then hands the connection to Pingora for one request. It is also
//! where the idle and header time limits and eviction apply (see the parent
//! module): `keepalive_timeout` bounds the wait for a reused connection's
//! next request, `header_timeout` the time from a new connection (or from
//! the first byte of a next request) to a whole header.

use super::signal::Wake;
use super::{Book, Connection, Gate, CURRENT};
use crate::config::Limits;
use crate::proxy::Canned;
use async_trait::async_trait;
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::l4::stream::L4BufferSettings;
use pingora_core::protocols::{Stream, ALPN};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::listening::Service;
use std::future::poll_fn;
use std::pin::{pin, Pin};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::time::Sleep;

/// A listening service for `app`, every connection of it admitted, timed
/// and counted by `book` (the [`Gate`] in the accept loop, [`Guarded`]
/// around the app); its listeners take [`buffers`].
pub fn guarded_service<A: HttpServerApp + Send + Sync + 'static>(
    name: &str,
    app: A,
    book: Arc<Book>,
    limits: Limits,
) -> Service<Guarded<A>> {
    let gate = Arc::new(Gate::new(book.clone()));
    let mut service = Service::new(name.to_owned(), Guarded::new(app, book, limits));
    service.set_connection_filter(gate);
    service
}

/// The per-connection buffers `limits` size (`client_read_buffer`,
/// `client_write_buffer`).
pub fn buffers(limits: &Limits) -> L4BufferSettings {
    L4BufferSettings::new(limits.client_read_buffer, limits.client_write_buffer)
}

/// The answer to a connection refused because hothot is full, made once.
static FULL: std::sync::LazyLock<Vec<u8>> =
    std::sync::LazyLock::new(|| Canned::TooManyConnections.raw());

/// How long an idle keep-alive connection may wait for its next request
/// once hothot shuts down gracefully (`SIGTERM`, or `SIGQUIT` in an
/// upgrade). A client sending requests back to back sends one well within
/// it, gets its answer with `Connection: close` and reconnects, to the new
/// process in an upgrade; a connection idle that long is closed as at its
/// keep-alive timeout. Short, because the process exits once its last
/// connection is gone ([`crate::drain`]).
const DRAIN_IDLE: Duration = Duration::from_secs(1);

/// How far the idle timer's deadline may lie before the wait's end and
/// stay where it is (nginx's `NGX_TIMER_LAZY_DELAY`, 300 ms): a client
/// sending request after request would otherwise move it at every request.
/// A timer left early fires early; the wait then goes on to its end.
const TIMER_SLACK: Duration = Duration::from_millis(300);

/// Pingora's keep-alive default for a new HTTP/1 session; the proxy sets
/// `limits.keepalive_timeout` once it has read the request.
const INITIAL_KEEPALIVE_SECONDS: u64 = 60;

/// The proxy's app, with every client connection admitted, timed and
/// counted by a [`Book`].
pub struct Guarded<A> {
    app: Arc<A>,
    book: Arc<Book>,
    limits: Limits,
}

impl<A> Guarded<A> {
    pub fn new(app: A, book: Arc<Book>, limits: Limits) -> Self {
        Guarded {
            app: Arc::new(app),
            book,
            limits,
        }
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for Guarded<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let Some(connection) = self.book.admit() else {
            refuse(stream).await;
            return None;
        };
        let h2c = self.app.server_options().is_some_and(|o| o.h2c);
        if h2c || stream.selected_alpn_proto() == Some(ALPN::H2) {
            // One HTTP/2 connection carries many requests at once: Pingora's
            // own loop serves it, held as busy.
            connection.waiting.store(false, Ordering::Release);
            return ServerApp::process_new(&self.app, stream, shutdown).await;
        }
        self.book.watch_shutdown(shutdown);
        let accepted = Instant::now();
        let from_accept = accepted + self.limits.header_timeout;
        // One timer for every wait of the connection, moved to each wait's
        // end: moving a registered timer later is one atomic operation,
        // where a timer per wait cost a registration and a removal.
        let mut idle = pin!(tokio::time::sleep_until(from_accept.into()));
        let mut next = Some((stream, None));
        while let Some((mut stream, settings)) = next {
            self.book.wait_for_request(&connection);
            // A new connection has header_timeout from its accept for a whole
            // header; a reused one keepalive_timeout for a first byte, then
            // header_timeout from it (as nginx). Pipelined bytes already read
            // are that first byte.
            let reused = settings.is_some();
            let pipelined = settings
                .as_ref()
                .is_some_and(HttpPersistentSettings::has_pipelined_prefix);
            if !pipelined {
                let wait_until = match reused {
                    true => Instant::now() + self.limits.keepalive_timeout,
                    false => from_accept,
                };
                if !first_byte(&mut stream, &connection, idle.as_mut(), wait_until).await {
                    return None;
                }
            }
            // A reused connection's header may take header_timeout from its
            // first byte, which has just come.
            let header_deadline = match reused {
                true => None,
                false => Some(from_accept),
            };
            let mut session = ServerSession::new_http1(stream);
            match settings {
                Some(settings) => settings.apply_to_session(&mut session),
                None => {
                    session.set_keepalive(Some(INITIAL_KEEPALIVE_SECONDS));
                    session.set_keepalive_reuses_remaining(
                        self.app
                            .server_options()
                            .and_then(|o| o.keepalive_request_limit),
                    );
                }
            }
            if *shutdown.borrow() {
                session.set_keepalive(None);
            }
            let served = CURRENT.scope(connection.clone(), async {
                tokio::select! {
                    biased;
                    reused = self.app.process_new_http(session, shutdown) => reused,
                    _ = connection.signals.wait(&[Wake::Evicted]) => None,
                    () = header_overdue(&connection, header_deadline, self.limits.header_timeout) => None,
                }
            });
            next = served.await.map(|reused| reused.consume());
        }
        None
    }

    async fn cleanup(&self) {
        self.app.http_cleanup().await;
    }
}

/// Waits for the first bytes of the connection's next request, reading them
/// into the connection's read buffer without consuming them (Pingora reads
/// the request from there), until `until` on `idle`. False when the
/// connection should close instead: the client closed it, `until` passed,
/// or it was evicted to make room. Once hothot shuts down gracefully it
/// still waits, for at most [`DRAIN_IDLE`]: a request that comes is served
/// with `Connection: close` (see `process_new`), so a busy client learns of
/// the close from an answer instead of finding its request cut off.
async fn first_byte(
    stream: &mut Stream,
    connection: &Connection,
    mut idle: Pin<&mut Sleep>,
    until: Instant,
) -> bool {
    let mut draining = connection.book.is_draining();
    loop {
        let (end, wakes): (_, &[Wake]) = match draining {
            true => (until.min(Instant::now() + DRAIN_IDLE), &[Wake::Evicted]),
            false => (until, &[Wake::Evicted, Wake::Draining]),
        };
        let armed = idle.deadline().into_std();
        // `armed + slack < end`, without a subtraction of instants (which
        // cost more than the comparison saves).
        let lazy = armed <= end
            && armed
                .checked_add(TIMER_SLACK)
                .is_some_and(|late| end <= late);
        if !lazy {
            idle.as_mut().reset(end.into());
        }
        tokio::select! {
            biased;
            // A stream that cannot wait this way (TLS) answers `None`:
            // Pingora then waits for the request itself.
            filled = poll_fn(|cx| stream.poll_fill_read_buf(cx)) => {
                return matches!(filled, Ok(None) | Ok(Some(1..)));
            }
            wake = connection.signals.wait(wakes) => match wake {
                Wake::Evicted => return false,
                Wake::Draining => draining = true,
            },
            () = idle.as_mut() => {
                if Instant::now() >= end {
                    return false;
                }
                // Left early by TIMER_SLACK: wait on to the end.
                idle.as_mut().reset(end.into());
            }
        }
    }
}

/// Completes at `deadline` (`None`: `timeout` from now) if the connection
/// still has not sent a whole request header; never otherwise. The proxy is
/// polled first and usually reads the whole header at once: then no timer
/// is set at all.
async fn header_overdue(connection: &Connection, deadline: Option<Instant>, timeout: Duration) {
    if !connection.waiting.load(Ordering::Acquire) {
        std::future::pending::<()>().await;
    }
    let deadline = deadline.unwrap_or_else(|| Instant::now() + timeout);
    tokio::time::sleep_until(deadline.into()).await;
    if !connection.waiting.load(Ordering::Acquire) {
        std::future::pending::<()>().await;
    }
}

/// Answers a connection hothot has no room for, then closes it.
async fn refuse(mut stream: Stream) {
    let _ = tokio::time::timeout(Duration::from_millis(100), stream.write_all(&FULL)).await;
}
