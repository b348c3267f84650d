//! The listeners beside the proxy's (admin, metrics): how each is guarded
//! so that no client of theirs can hurt the proxy.
//!
//! Each gets the proxy's treatment ([`crate::connections`]) with a book of
//! its own: a header timeout from the accept, a keep-alive timeout, and a
//! small connection cap (`admin.limits`, `metrics.limits`; 64 by default:
//! scrapers and operators open a handful) enforced in the accept loop and
//! at admission, whose descriptors are kept out of the proxy's budget. A
//! slowloris flood on the metrics port then holds at most its cap, each
//! for at most its header timeout, and the proxy and its probes never run
//! out of descriptors.
//!
//! Their requests are served by [`SideApp`] rather than Pingora's own
//! `ServeHttp` loop, which logs an ERROR line for every client that closes
//! or stalls mid-header (any client could flood the log): here those are
//! counted in `hothot_client_aborts_total` and logged at debug.

use crate::config::Limits;
use crate::connections::{buffers, guarded_service, Book, Guarded};
use crate::metrics::ConnectionMetrics;
use async_trait::async_trait;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora_core::listeners::ListenerConfig;
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::listening::Service;
use pingora_http::ResponseHeader;
use std::net::SocketAddr;
use std::sync::Arc;

/// A side listener's Pingora service.
pub type SideService<S> = Service<Guarded<SideApp<S>>>;

/// Builds the service for `app` on `listen`, guarded by `limits`; its
/// connections are counted in `metrics`.
pub fn service<S: ServeHttp + Send + Sync + 'static>(
    name: &str,
    app: S,
    listen: SocketAddr,
    limits: Limits,
    metrics: ConnectionMetrics,
) -> SideService<S> {
    let book = Book::new(max_connections(&limits), metrics);
    let mut service = guarded_service(name, SideApp { app, limits }, book, limits);
    let endpoint = ListenerConfig::tcp(listen.to_string()).l4_buffer(buffers(&limits));
    service.add_listener(endpoint);
    service
}

/// Connections a side listener holds at once unless its `limits` say.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;

/// Descriptors a side listener may hold at most: its cap, and as many
/// again accepted but not yet admitted (see [`crate::connections`]).
pub fn descriptors(limits: &Limits) -> usize {
    2 * max_connections(limits)
}

fn max_connections(limits: &Limits) -> usize {
    limits.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS)
}

/// Serves one request at a time with a [`ServeHttp`] app.
pub struct SideApp<S> {
    app: S,
    limits: Limits,
}

#[async_trait]
impl<S: ServeHttp + Send + Sync> HttpServerApp for SideApp<S> {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        match session.read_request().await {
            Ok(true) => crate::connections::header_received(),
            Ok(false) => return None,
            Err(e) => {
                crate::logging::client_aborts().inc();
                log::debug!("side listener: a client failed before its request header: {e}");
                return None;
            }
        }
        session.set_read_timeout(Some(self.limits.body_timeout));
        session.set_write_timeout(Some(self.limits.body_timeout));
        let keepalive = match *shutdown.borrow() {
            true => None,
            false => Some(self.limits.keepalive_timeout.as_secs()),
        };
        session.set_keepalive(keepalive);
        let (parts, body) = self.app.response(&mut session).await.into_parts();
        let header: ResponseHeader = parts.into();
        let written = match session.write_response_header(Box::new(header)).await {
            Ok(()) if body.is_empty() => Ok(()),
            Ok(()) => session
                .write_response_body(body.into(), true)
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            log::debug!("side listener: the client left before its answer: {e}");
            return None;
        }
        let settings = HttpPersistentSettings::for_session(&session);
        match session.finish().await {
            Ok(stream) => stream.map(|s| ReusedHttpStream::from_reusable_stream(s, settings)),
            Err(e) => {
                log::debug!("side listener: cannot finish the request: {e}");
                None
            }
        }
    }
}
