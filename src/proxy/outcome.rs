//! What the end of an attempt does: it feeds passive health (a failure
//! streak may eject the origin) and the adaptive factors (latency, errors),
//! and decides whether a failed attempt may be retried elsewhere.

use super::{HotHotProxy, RequestCtx};
use crate::log_throttle::{suppressed_note, Throttle};
use crate::pool::{FailureVerdict, OriginId};
use pingora_error::Error;

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
                origin.address
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
