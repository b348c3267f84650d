//! The admin API, on its own listener (`admin.listen`): what state the pool
//! is in, and an operator's hand on it.
//!
//! - `GET /status`: JSON with every origin's state, capacity, share, factor,
//!   pending writes and lag; the replication mode and order; the journal's
//!   size; hothot's version and the configuration's (SHA-256, load time).
//! - `POST /origins/{name}/drain`, `POST /origins/{name}/enable`: no new
//!   traffic for the origin (in-flight requests finish, replicated writes
//!   still reach it), or traffic again (ramping up over `slow_start`).
//!   Runtime state, not configuration. A detached origin is not enabled
//!   (409): it lacks writes, and only a resync gives them back.
//! - `POST /origins/{name}/resync?from={donor}`, `.../resync/done`,
//!   `.../resync/abort`: rebuild an origin from a peer at a consistent cut
//!   ([`resync`], [`crate::replication`]).
//! - `GET /healthz`: hothot is up. `GET /readyz`: at least one origin is
//!   serving and, in a cluster, etcd takes writes (for whatever balances
//!   several hothot instances).
//!
//! Write endpoints need `Authorization: Bearer <token>` when
//! `admin.token_file` is set (compared in constant time; a wrong or missing
//! token gets 401 and a log line, at most 5 per 10 s). Without a token file they are allowed
//! only on a loopback listener (403 otherwise).

use crate::config::{Admin, Config};
use crate::log_throttle::{suppressed_note, Throttle};
use crate::metrics::Metrics;
use crate::pool::{Origin, OriginId, Pool, Standing};
use crate::reload::ConfigVersion;
use crate::replication::Replicator;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use subtle::ConstantTimeEq;

mod resync;

pub struct AdminApp {
    pool: Arc<Pool>,
    replicator: Arc<Replicator>,
    metrics: Arc<Metrics>,
    settings: Admin,
    /// The configuration in force (a reload changes it).
    version: Arc<Mutex<ConfigVersion>>,
    replication_mode: &'static str,
    replication_order: &'static str,
}

/// Refused admin requests' log lines (see [`crate::log_throttle`]).
static REFUSALS: Throttle = Throttle::new();

/// An answer: status, content type, body.
type AdminAnswer = (StatusCode, &'static str, Vec<u8>);

fn text(status: StatusCode, body: &str) -> AdminAnswer {
    (
        status,
        "text/plain; charset=utf-8",
        format!("{body}\n").into_bytes(),
    )
}

impl AdminApp {
    pub fn new(
        pool: Arc<Pool>,
        replicator: Arc<Replicator>,
        metrics: Arc<Metrics>,
        settings: Admin,
        version: Arc<Mutex<ConfigVersion>>,
        config: &Config,
    ) -> Self {
        AdminApp {
            pool,
            replicator,
            metrics,
            settings,
            version,
            replication_mode: config.replication.mode.name(),
            replication_order: config.replication.order.name(),
        }
    }

    async fn route(
        &self,
        method: &http::Method,
        uri: &http::Uri,
        authorization: Option<&[u8]>,
    ) -> AdminAnswer {
        let path = uri.path();
        let readable = matches!(*method, http::Method::GET | http::Method::HEAD);
        match path.trim_end_matches('/') {
            "/status" | "/healthz" | "/readyz" if !readable => text(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed: use GET",
            ),
            "/status" => (
                StatusCode::OK,
                "application/json",
                serde_json::to_vec_pretty(&self.status()).unwrap_or_default(),
            ),
            "/healthz" => text(StatusCode::OK, "ok"),
            "/readyz" => match (self.pool.any_serving(), self.replicator.takes_writes()) {
                (true, true) => text(StatusCode::OK, "ready"),
                (false, _) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: no origin is serving",
                ),
                (true, false) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: etcd is unreachable, writes are refused (reads are served)",
                ),
            },
            other => match origin_action(other) {
                None => text(
                    StatusCode::NOT_FOUND,
                    "not found: try /status, /healthz, /readyz, POST /origins/{name}/drain, \
                     /enable, /resync?from={donor}, /resync/done or /resync/abort",
                ),
                Some(_) if *method != http::Method::POST => text(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method not allowed: use POST",
                ),
                Some((name, action)) => match self.authorize(authorization) {
                    Err(refusal) => {
                        // Anyone who reaches the port can cause this line.
                        if let Some(suppressed) = REFUSALS.admit() {
                            log::warn!(
                                "admin: {method} {path} refused: {}{}",
                                refusal.1.trim_end(),
                                suppressed_note(suppressed)
                            );
                        }
                        text(refusal.0, refusal.1)
                    }
                    Ok(()) => match action {
                        Action::Drain => self.drain(name, true),
                        Action::Enable => self.drain(name, false),
                        Action::Resync => self.resync(name, uri.query()).await,
                        Action::ResyncDone => self.resync_done(name),
                        Action::ResyncAbort => self.resync_abort(name),
                    },
                },
            },
        }
    }

    /// Checks the bearer token of a write request.
    fn authorize(&self, authorization: Option<&[u8]>) -> Result<(), (StatusCode, &'static str)> {
        let Some(token) = &self.settings.token else {
            return match self.settings.listen.ip().is_loopback() {
                true => Ok(()),
                false => Err((
                    StatusCode::FORBIDDEN,
                    "forbidden: set admin.token_file to allow changes on a non-loopback listener",
                )),
            };
        };
        let given = authorization
            .and_then(|value| value.strip_prefix(b"Bearer "))
            .map(|t| t.trim_ascii());
        match given {
            Some(given) if bool::from(given.ct_eq(token.as_bytes())) => Ok(()),
            Some(_) => Err((StatusCode::UNAUTHORIZED, "unauthorized: wrong token")),
            None => Err((
                StatusCode::UNAUTHORIZED,
                "unauthorized: send Authorization: Bearer <token>",
            )),
        }
    }

    fn drain(&self, name: &str, drain: bool) -> AdminAnswer {
        let Some(origin) = self.pool.find(name) else {
            return text(StatusCode::NOT_FOUND, &format!("no origin named {name:?}"));
        };
        if !drain {
            if let Standing::Detached(detached) = origin.standing() {
                return text(
                    StatusCode::CONFLICT,
                    &format!(
                        "{name} is detached ({}): it lacks writes its peers have; resync it \
                         (POST /origins/{name}/resync?from=PEER)",
                        detached.why
                    ),
                );
            }
        }
        if self.pool.set_drained(origin.id, drain) {
            let action = if drain { "drained" } else { "enabled again" };
            log::warn!("origin {name} {action} through the admin API");
            self.metrics.publish_pool(&self.pool);
        }
        let body = serde_json::to_vec_pretty(&origin_status(origin, &self.pool.shares()));
        (StatusCode::OK, "application/json", body.unwrap_or_default())
    }

    fn status(&self) -> serde_json::Value {
        let shares = self.pool.shares();
        let origins: Vec<_> = (self.pool.members())
            .map(|origin| origin_status(origin, &shares))
            .collect();
        let version = self
            .version
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let loaded_at = version
            .loaded_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "build": {
                "commit": env!("HOTHOT_GIT_COMMIT"),
                "pingora": env!("HOTHOT_PINGORA_VERSION"),
                "openssl": openssl::version::version(),
            },
            "config": {"sha256": version.sha256, "loaded_at_unix": loaded_at},
            "ready": self.pool.any_serving() && self.replicator.takes_writes(),
            "replication": {
                "mode": self.replication_mode,
                "order": self.replication_order,
                "routes": self.replicator.config().routes.iter().map(|r| r.describe()).collect::<Vec<_>>(),
            },
            "journal_bytes": self.metrics.replication.journal_bytes.get(),
            "cluster": self.replicator.cluster_status(),
            "origins": origins,
        })
    }
}

/// One origin's part of `/status`; `shares` are the pool's.
fn origin_status(origin: &Origin, shares: &[(OriginId, f64)]) -> serde_json::Value {
    let standing = origin.standing();
    let state = if standing != Standing::Current {
        standing.name()
    } else if origin.is_donor() {
        "donor"
    } else if origin.is_drained() {
        "drained"
    } else if origin.is_ejected() {
        "ejected"
    } else if !origin.is_probe_up() {
        "down"
    } else if origin.capacity() == 0 {
        "zero capacity"
    } else {
        "up"
    };
    let (detached, missed) = match &standing {
        Standing::Detached(d) => (Some(d.why.clone()), d.missed.clone()),
        _ => (None, None),
    };
    let resync = match &standing {
        Standing::Resyncing { donor, seq } => Some(json!({"donor": donor, "seq": seq})),
        _ => None,
    };
    let share = shares.iter().find(|(id, _)| *id == origin.id);
    let replication = &origin.metrics.replication;
    json!({
        "name": origin.name,
        "address": origin.address().to_string(),
        // As written in the file: a DNS name's current answer is `address`.
        "configured_address": origin.written_address,
        "state": state,
        "serving": origin.is_serving(),
        "serving_reads": origin.is_serving_reads(),
        "probe_up": origin.is_probe_up(),
        "ejected": origin.is_ejected(),
        "drained": origin.is_drained(),
        "detached": detached,
        "waits_for_resync": matches!(standing, Standing::Detached(_)),
        "resync": resync,
        "missed_write": missed,
        "capacity": origin.capacity(),
        "factor": f64::from(origin.factor_milli()) / 1000.0,
        "share": share.map_or(0.0, |(_, share)| *share),
        "pending_writes": replication.pending.get(),
        "backlog_bytes": origin.backlog.bytes(),
        "applied_seq": origin.backlog.applied_seq(),
        "lag_seconds": replication.lag.get(),
    })
}

/// What a POST to `/origins/{name}/...` asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Drain,
    Enable,
    Resync,
    ResyncDone,
    ResyncAbort,
}

/// `/origins/{name}/{action}`: the name, and the action.
fn origin_action(path: &str) -> Option<(&str, Action)> {
    let rest = path.strip_prefix("/origins/")?;
    let (name, action) = rest.split_once('/')?;
    let action = match action {
        "drain" => Action::Drain,
        "enable" => Action::Enable,
        "resync" => Action::Resync,
        "resync/done" => Action::ResyncDone,
        "resync/abort" => Action::ResyncAbort,
        _ => return None,
    };
    (!name.is_empty()).then_some((name, action))
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let request = session.req_header();
        let authorization = request
            .headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        let (method, uri) = (request.method.clone(), request.uri.clone());
        let authorization = authorization.map(<[u8]>::to_vec);
        let (status, content_type, body) =
            self.route(&method, &uri, authorization.as_deref()).await;
        let mut response = Response::new(body);
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
        headers.insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-store"),
        );
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
        }
        let length = response.body().len();
        response
            .headers_mut()
            .insert(http::header::CONTENT_LENGTH, length.into());
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_actions_are_parsed_from_the_path() {
        assert_eq!(
            origin_action("/origins/a/drain"),
            Some(("a", Action::Drain))
        );
        assert_eq!(
            origin_action("/origins/b-1/enable"),
            Some(("b-1", Action::Enable))
        );
        assert_eq!(
            origin_action("/origins/c/resync"),
            Some(("c", Action::Resync))
        );
        assert_eq!(
            origin_action("/origins/c/resync/done"),
            Some(("c", Action::ResyncDone))
        );
        assert_eq!(
            origin_action("/origins/c/resync/abort"),
            Some(("c", Action::ResyncAbort))
        );
        assert_eq!(origin_action("/origins/c/resync/x"), None);
        assert_eq!(origin_action("/origins//drain"), None);
        assert_eq!(origin_action("/origins/a/stop"), None);
        assert_eq!(origin_action("/status"), None);
    }
}
