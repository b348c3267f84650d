//! What the end of an attempt does: it feeds passive health (a failure
//! streak may eject the origin) and the adaptive factors (latency, errors),
//! and decides whether a failed attempt may be retried elsewhere.

use super::{HotHotProxy, RequestCtx};
use crate::log_throttle::{suppressed_note, Throttle};
use crate::pool::{FailureVerdict, OriginId};
use http::StatusCode;
use pingora_error::{Error, ErrorSource, ErrorType};

/// Ejections the floor refused, logged (see [`crate::log_throttle`]).
static FLOOR: Throttle = Throttle::new();

impl HotHotProxy {
    /// The attempt's origin sent its response header; `error` for a 5xx.
    pub(super) fn answered(&self, ctx: &RequestCtx, error: bool) {
        let Some(origin) = self.attempted(ctx) else {
            return;
        };
        self.adaptive
            .record(origin, Some(ctx.attempt_started.elapsed()), error);
        match error {
            true => self.note_failure(origin.id),
            false => self.pool.record_success(origin.id),
        }
    }

    /// The attempt's origin sent a response header with `status`: true when
    /// it is the answer's (not an informational one). A `101` starts the
    /// answer too (nothing may be retried after it), and what follows is a
    /// tunnel, whose headers stay as they are.
    pub(super) fn response_header(&self, ctx: &mut RequestCtx, status: StatusCode) -> bool {
        let upgraded = status == StatusCode::SWITCHING_PROTOCOLS;
        if status.is_informational() && !upgraded {
            return false;
        }
        ctx.response_started = true;
        ctx.upgraded = upgraded;
        ctx.upstream_status = Some(status.as_u16());
        self.answered(ctx, status.is_server_error());
        !upgraded
    }

    /// Pingora's `error_while_proxy`: the attempt failed after the
    /// connection to its origin (on `path`) was made. Counted against the
    /// origin unless the client or a tunnel's end caused it; retried on
    /// another origin only before the answer started and for a request
    /// that can be sent again.
    pub(super) fn failed_while_proxying(
        &self,
        path: &str,
        mut e: Box<Error>,
        ctx: &mut RequestCtx,
    ) -> Box<Error> {
        if *e.esource() != ErrorSource::Upstream || ctx.upgraded {
            // A tunnel ends when either side ends it or goes quiet.
            e.set_retry(false);
            return e;
        }
        let timed_out = (*e.etype() == ErrorType::ReadTimedout).then_some(path);
        self.failed(ctx, !ctx.response_started, timed_out);
        if ctx.response_started || !ctx.classified.replayable {
            e.set_retry(false);
        } else {
            self.retry_on_another(ctx, &mut e);
        }
        e
    }

    /// The attempt failed: before its origin answered (a connect error;
    /// with `waited`, an error or timeout after the request went out), or
    /// in the middle of the answer (already counted by [`Self::answered`]
    /// for the factors). `timed_out`: the path of a request that got no
    /// answer in time, which counts only when it does not look like one
    /// slow path ([`crate::health::ReadTimeouts`]).
    pub(super) fn failed(&self, ctx: &RequestCtx, waited: bool, timed_out: Option<&str>) {
        let Some(origin) = self.attempted(ctx) else {
            return;
        };
        if let Some(path) = timed_out {
            let probes_failing = origin.probes.last_failed();
            if !origin.read_timeouts.counts(path, probes_failing) {
                log::debug!(
                    "origin {}: {path} timed out; not counted against it (one slow path, probes pass)",
                    origin.name
                );
                return;
            }
        }
        if !ctx.response_started {
            let latency = waited.then(|| ctx.attempt_started.elapsed());
            self.adaptive.record(origin, latency, true);
        }
        self.note_failure(origin.id);
    }

    /// Passive health: a live failure of `origin`, which may eject it.
    fn note_failure(&self, origin: OriginId) {
        match self.pool.record_failure(origin) {
            FailureVerdict::Counted => return,
            FailureVerdict::Floor => {
                if let Some(suppressed) = FLOOR.admit() {
                    log::warn!(
                        "origin {} failed health.passive.failures live requests in a row, but \
                         health.passive.max_ejection_percent of the pool is ejected already: \
                         it stays in service{}",
                        self.pool.name(origin),
                        suppressed_note(suppressed)
                    );
                }
                return;
            }
            FailureVerdict::Ejected => {}
        }
        if let Some(origin) = self.pool.get(origin) {
            log::warn!(
                "origin {} ({}) ejected after consecutive live-traffic failures",
                origin.name,
                origin.address()
            );
            origin.metrics.ejections.inc();
        }
        self.metrics.publish_pool(&self.pool);
    }

    /// Another attempt is allowed and some untried origin is serving.
    fn can_retry(&self, ctx: &RequestCtx) -> bool {
        let attempts = u32::try_from(ctx.tried.len()).unwrap_or(u32::MAX);
        attempts <= self.live.retries()
            && self
                .pool
                .members()
                .any(|o| !ctx.tried.contains(&o.id) && o.is_serving())
    }

    pub(super) fn retry_on_another(&self, ctx: &RequestCtx, e: &mut Error) {
        let retry = self.can_retry(ctx);
        e.set_retry(retry);
        if let (true, Some(origin)) = (retry, self.attempted(ctx)) {
            origin.metrics.retries.inc();
        }
    }
}
