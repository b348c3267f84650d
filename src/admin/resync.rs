//! The admin API's resync endpoints: start, complete and abort the rebuild
//! of an origin from a donor (see [`crate::replication`]'s `resync`).

use super::{text, AdminAnswer, AdminApp};
use crate::replication::{ResyncError, ResyncStarted};
use http::StatusCode;
use serde_json::json;

impl AdminApp {
    /// `POST /origins/{name}/resync?from={donor}`.
    pub(super) async fn resync(&self, name: &str, query: Option<&str>) -> AdminAnswer {
        let donor = query
            .unwrap_or("")
            .split('&')
            .find_map(|pair| pair.strip_prefix("from="))
            .unwrap_or("");
        let started = self.replicator.resync(name, donor).await;
        answer(started, "resyncing")
    }

    /// `POST /origins/{name}/resync/done`.
    pub(super) fn resync_done(&self, name: &str) -> AdminAnswer {
        answer(self.replicator.resync_done(name), "catching up")
    }

    /// `POST /origins/{name}/resync/abort`.
    pub(super) fn resync_abort(&self, name: &str) -> AdminAnswer {
        answer(self.replicator.resync_abort(name), "detached")
    }
}

/// 200 with the resync's origin, donor, cut and the origin's new state, or
/// the refusal (409; 404 for an unknown origin).
fn answer(outcome: Result<ResyncStarted, ResyncError>, state: &str) -> AdminAnswer {
    match outcome {
        Ok(started) => {
            let body = json!({
                "origin": started.origin,
                "donor": started.donor,
                "seq": started.seq,
                "state": state,
            });
            let body = serde_json::to_vec_pretty(&body).unwrap_or_default();
            (StatusCode::OK, "application/json", body)
        }
        Err(e) if e.is_not_found() => text(StatusCode::NOT_FOUND, &e.to_string()),
        Err(e) => text(StatusCode::CONFLICT, &e.to_string()),
    }
}
