//! What the end of an attempt does: it feeds passive health (a failure
//! streak may eject the origin) and the adaptive factors (latency, errors),
//! and decides whether a failed attempt may be retried elsewhere.

use super::{HotHotProxy, RequestCtx};
use crate::pool::FailureVerdict;
use pingora_error::Error;

impl HotHotProxy {
    /// The attempt's origin sent its response header; `error` for a 5xx.
    pub(super) fn answered(&self, ctx: &RequestCtx, error: bool) {
        let Some(&index) = ctx.tried.last() else {
            return;
        };
        self.adaptive
            .record(index, Some(ctx.attempt_started.elapsed()), error);
        match error {
            true => self.note_failure(index),
            false => self.pool.record_success(index),
        }
    }

    /// The attempt failed: before its origin answered (a connect error;
    /// with `waited`, an error or timeout after the request went out), or
    /// in the middle of the answer (already counted by [`Self::answered`]
    /// for the factors).
    pub(super) fn failed(&self, ctx: &RequestCtx, waited: bool) {
        let Some(&index) = ctx.tried.last() else {
            return;
        };
        if !ctx.response_started {
            let latency = waited.then(|| ctx.attempt_started.elapsed());
            self.adaptive.record(index, latency, true);
        }
        self.note_failure(index);
    }

    /// Passive health: a live failure of `index`, which may eject it.
    fn note_failure(&self, index: usize) {
        if self.pool.record_failure(index) == FailureVerdict::Ejected {
            if let Some(origin) = self.pool.origin(index) {
                log::warn!(
                    "origin {} ({}) ejected after consecutive live-traffic failures",
                    origin.name,
                    origin.address
                );
            }
            self.metrics.origins[index].ejections.inc();
            self.metrics.publish_pool(&self.pool);
        }
    }

    /// Another attempt is allowed and some untried origin is serving.
    fn can_retry(&self, ctx: &RequestCtx) -> bool {
        let attempts = u32::try_from(ctx.tried.len()).unwrap_or(u32::MAX);
        attempts <= self.live.retries()
            && (0..self.pool.len()).any(|i| !ctx.tried.contains(&i) && self.pool.is_serving(i))
    }

    pub(super) fn retry_on_another(&self, ctx: &RequestCtx, e: &mut Error) {
        let retry = self.can_retry(ctx);
        e.set_retry(retry);
        if let (true, Some(&index)) = (retry, ctx.tried.last()) {
            self.metrics.origins[index].retries.inc();
        }
    }
}
