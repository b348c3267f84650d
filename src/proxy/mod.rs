//! The proxy phases: classify the request, pick an origin by capacity,
//! forward with the standard headers and timeouts, feed passive health,
//! retry where it is safe, count.
//!
//! Retry policy: a connect failure is retried on another origin for every
//! request, since nothing was sent. Any other upstream failure is retried
//! only for a replayable request (a read with a safe method and no body,
//! or a route's read whose body fits Pingora's retry buffer, see
//! [`crate::classify`]), and only before the origin's response header
//! arrived. At most `retries` extra attempts.

mod answers;
mod finished;
mod headers;
mod live;
mod ordered;
mod outcome;
mod route;
mod write;

use crate::access_log::AccessLog;
use crate::adaptive::Adaptive;
use crate::classify::{classify, Class, Classified, HeaderFacts};
use crate::config::Limits;
use crate::limit::Limiter;
use crate::metrics::{InFlight, Metrics};
use crate::pool::{Origin, OriginId, Pool};
use crate::replication::Replicator;
use crate::selection::{Balancer, Traffic};
use answers::respond;
pub use answers::Canned;
use async_trait::async_trait;
use bytes::Bytes;
pub use live::LiveSettings;
use pingora_core::modules::http::HttpModules;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use route::{Route, Router, SeenWrite};
use smallvec::SmallVec;
use std::sync::Arc;
use std::time::Instant;
use write::{Admission, WriteCapture, WriteOutcome};

/// Status hothot answers with when the client went away before any response
/// (nginx's convention); used only for counting.
const CLIENT_CLOSED: u16 = 499;

pub struct HotHotProxy {
    pool: Arc<Pool>,
    router: Router,
    adaptive: Arc<Adaptive>,
    metrics: Arc<Metrics>,
    replicator: Arc<Replicator>,
    live: Arc<LiveSettings>,
    limits: Limits,
    access_log: Option<Arc<AccessLog>>,
}

/// What the proxy is built from.
pub struct ProxyParts {
    pub pool: Arc<Pool>,
    pub balancer: Arc<Balancer>,
    pub adaptive: Arc<Adaptive>,
    pub limiter: Arc<Limiter>,
    pub live: Arc<LiveSettings>,
    pub metrics: Arc<Metrics>,
    pub replicator: Arc<Replicator>,
    pub access_log: Option<Arc<AccessLog>>,
    pub limits: Limits,
}

/// Per-request state; it lives across retries.
pub struct RequestCtx {
    _in_flight: InFlight,
    started: Instant,
    /// What the request is (decided in `request_filter`).
    classified: Classified,
    /// What its headers say (read in `request_filter`).
    header_facts: HeaderFacts,
    /// When the current attempt picked its origin.
    attempt_started: Instant,
    /// Origins attempted so far, in order; the last one is the current attempt.
    /// Inline up to four: most requests take one attempt, and a heap
    /// allocation for it was a measurable part of a request's cost.
    tried: SmallVec<[OriginId; 4]>,
    /// The answer hothot chose for a failure it raised itself (no origin,
    /// shed, oversize, a missed quorum); other failures are answered by
    /// their kind.
    canned: Option<Canned>,
    /// The current attempt's origin sent its response header.
    response_started: bool,
    /// The origin answered `101`: the connection is a tunnel now, whose end
    /// is nobody's failure and which is never retried.
    upgraded: bool,
    /// The status hothot itself answered with after a failure.
    error_status: Option<u16>,
    /// Set for a write that will be replicated after its primary answers
    /// (`order: version`).
    write: Option<Box<WriteCapture>>,
    /// The client's last replicated write (read-your-writes cookie), on reads.
    seen: Option<SeenWrite>,
    /// The status of the last origin answer (for the access log).
    upstream_status: Option<u16>,
    /// A sequenced write's version and what became of it (for the access log).
    sequenced: Option<(u64, WriteOutcome)>,
}

impl HotHotProxy {
    pub fn new(parts: ProxyParts) -> Self {
        HotHotProxy {
            router: Router::new(parts.balancer, parts.pool.clone(), parts.limiter),
            pool: parts.pool,
            adaptive: parts.adaptive,
            metrics: parts.metrics,
            replicator: parts.replicator,
            live: parts.live,
            limits: parts.limits,
            access_log: parts.access_log,
        }
    }

    /// The origin of the current (or last) attempt.
    fn attempted(&self, ctx: &RequestCtx) -> Option<&Arc<Origin>> {
        ctx.tried.last().and_then(|id| self.pool.get(*id))
    }

    /// Answers the request with `canned`; the request is done.
    async fn answer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        canned: Canned,
    ) -> Result<bool> {
        ctx.error_status = Some(canned.status());
        respond(session, canned).await?;
        Ok(true)
    }
}

#[async_trait]
impl ProxyHttp for HotHotProxy {
    type CTX = RequestCtx;

    /// No downstream modules. Pingora's default is a response compression
    /// module at level 0: disabled, yet built, boxed and called at every
    /// request; hothot compresses nothing and passes bodies as they are.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    fn new_ctx(&self) -> RequestCtx {
        let now = Instant::now();
        RequestCtx {
            _in_flight: InFlight::start(&self.metrics.in_flight),
            started: now,
            classified: Classified::default(),
            header_facts: HeaderFacts::default(),
            attempt_started: now,
            tried: SmallVec::new(),
            canned: None,
            response_started: false,
            upgraded: false,
            error_status: None,
            write: None,
            seen: None,
            upstream_status: None,
            sequenced: None,
        }
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        crate::connections::header_received();
        // RFC 9112 §9.3.2: pipelined requests are answered in order; Pingora
        // would otherwise drop every request after the first.
        session.set_pipelining_enabled(true);
        // Per read of the body, as nginx's client_body_timeout.
        session.set_read_timeout(Some(self.limits.body_timeout));
        // Pingora keeps a keep-alive connection forever unless told.
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(self.limits.keepalive_timeout.as_secs()));
        }
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let client = client_ip(session);
        let config = self.replicator.config();
        let facts = HeaderFacts::of(session.req_header());
        ctx.header_facts = facts;
        ctx.classified = classify(&config, session.req_header_mut(), client, &facts);
        if let Some(problem) = headers::host_problem(session.req_header().version, facts.hosts) {
            return self.answer(session, ctx, problem).await;
        }
        if facts.upgrade {
            // Once upgraded, the client's side is read as a tunnel too.
            session.set_read_timeout(Some(self.pool.timeouts().tunnel_idle));
        }
        if ctx.classified.class == Class::Read && config.read_your_writes && facts.cookie {
            ctx.seen = route::seen_write(session.req_header(), &self.pool);
        }
        drop(config);
        match write::admit(&self.replicator, ctx.classified, session.req_header()) {
            Admission::Pass => Ok(false),
            Admission::Capture(capture) if self.replicator.config().order.is_sequenced() => {
                ordered::serve(self, session, ctx, capture).await
            }
            Admission::Capture(capture) => {
                ctx.write = Some(capture);
                Ok(false)
            }
            Admission::Refuse(canned) => self.answer(session, ctx, canned).await,
        }
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(capture) = ctx.write.as_mut() else {
            return Ok(());
        };
        capture
            .append(&self.replicator, body.as_ref(), end_of_stream)
            .inspect_err(|_| ctx.canned = Some(Canned::Oversize))
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        match (ctx.write.as_mut(), ctx.tried.last(), ctx.response_started) {
            (Some(capture), Some(&primary), true) => {
                let finished = capture.finish(&self.replicator, primary, response).await;
                if let Err(canned) = finished {
                    ctx.canned = Some(canned);
                    return Err(canned.error("the write's replication failed"));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let traffic = Traffic::of(ctx.classified.class);
        let route = self.router.choose(traffic, &ctx.tried, ctx.seen).await;
        let origin = match route {
            Route::Origin(origin) => origin,
            Route::NoOrigin => {
                self.metrics.no_origin.inc();
                ctx.canned = Some(Canned::NoOrigin);
                return Err(Canned::NoOrigin.error("no origin is serving"));
            }
            Route::NoOtherOrigin => {
                return Err(Error::create(
                    ErrorType::ConnectNoRoute,
                    ErrorSource::Upstream,
                    Some("no other origin left to retry on".into()),
                    None,
                ))
            }
            Route::Full => {
                self.metrics.shed.inc();
                ctx.canned = Some(Canned::Shed);
                return Err(Canned::Shed.error("every origin is at its capacity"));
            }
        };
        let peer = self.pool.get(origin).map(|o| o.peer()).ok_or_else(|| {
            Error::explain(ErrorType::InternalError, "no peer for the chosen origin")
        })?;
        ctx.tried.push(origin);
        ctx.response_started = false;
        ctx.attempt_started = Instant::now();
        Ok(peer)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        headers::add_forwarded(request, client_ip(session), "http")?;
        match ctx.write.as_mut() {
            Some(capture) => capture.prepare(&self.replicator, request, ctx.header_facts.body),
            None => Ok(()),
        }
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if self.response_header(ctx, response.status) {
            headers::strip_hop_by_hop(response);
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        self.failed(ctx, false, None);
        self.retry_on_another(ctx, &mut e);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        _client_reused: bool,
    ) -> Box<Error> {
        let e = e.more_context(format!("origin {peer}"));
        // A body larger than Pingora's retry buffer cannot be sent again.
        if session.as_ref().retry_buffer_truncated() {
            ctx.classified.replayable = false;
        }
        self.failed_while_proxying(session.req_header().uri.path(), e, ctx)
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, e: &Error) -> bool {
        // A client that leaves early or sends a bad request is routine
        // (counted as 499 or its 4xx), not an error of hothot's; nor is a
        // tunnel's end.
        let routine = ctx.upgraded || *e.esource() == ErrorSource::Downstream;
        if routine {
            log::debug!("request ended by the client or its tunnel: {e}");
        }
        routine
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        // `None`: the client is gone, nobody to answer.
        let canned = ctx.canned.take().or_else(|| Canned::for_error(e));
        ctx.error_status = Some(canned.map_or(CLIENT_CLOSED, Canned::status));
        if let Some(canned) = canned {
            if let Err(write_error) = respond(session, canned).await {
                log::debug!(
                    "could not send the {} answer: {write_error}",
                    canned.status()
                );
            }
        }
        FailToProxy {
            error_code: canned.map_or(0, Canned::status),
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        if let Some(write) = ctx.write.as_mut() {
            write.unanswered(&self.replicator, ctx.tried.last().copied());
        }
        self.finished(session, ctx);
    }
}

fn client_ip(session: &Session) -> Option<std::net::IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}
