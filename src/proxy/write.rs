//! The proxy phases of a write: admit it, stamp it, capture its body while it
//! streams to the primary, and hand it to the replicator once the primary has
//! answered (waiting for the quorum in `sync` mode).

use crate::config::{OnTimeout, Oversize, ReplicateOn, ReplicationMode};
use crate::replication::{
    CapturedRequest, Full, NewWrite, Replicator, IDEMPOTENCY_KEY, REPLICATED_FROM,
    REPLICATION_STATUS, VERSION,
};
use bytes::{Bytes, BytesMut};
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use std::net::IpAddr;

/// A write on its way to its primary.
pub struct WriteCapture {
    pub version: u64,
    idempotency_key: String,
    /// The request as sent to the primary, for the peers' copies.
    request: Option<CapturedRequest>,
    /// Its order key.
    key: u64,
    /// `max_body` less the size of the request's head.
    body_limit: usize,
    body: BytesMut,
    complete: bool,
    /// The body outgrew `max_body` under `oversize: pass`: not replicated.
    oversize: bool,
    /// Set when a sync write's quorum did not answer in time.
    pub quorum_timed_out: bool,
    /// What became of its replication, for the access log: `pending`,
    /// `skipped`, `not stored`, `queued` (async), `quorum` or `quorum missed` (sync).
    pub outcome: &'static str,
}

/// What `admit` decided for a request.
pub enum Admission {
    /// Not a write to replicate.
    Pass,
    /// A write to capture and replicate.
    Capture(Box<WriteCapture>),
    /// Refused before reaching any origin, with this status and message.
    Refuse(u16, &'static str),
}

pub const OVERSIZE_MESSAGE: &str =
    "payload too large: the write (headers and body) exceeds replication.max_body\n";
pub const BACKLOG_FULL_MESSAGE: &str =
    "service unavailable: the replication backlog is full, retry later\n";
pub const JOURNAL_FULL_MESSAGE: &str =
    "service unavailable: the replication journal is full (journal.max_bytes), retry later\n";
pub const QUORUM_TIMEOUT_MESSAGE: &str =
    "gateway timeout: the replication quorum did not acknowledge in time; the write stays queued for the peers\n";

/// Decides what happens to a request before it reaches any origin.
pub fn admit(
    replicator: &Replicator,
    request: &mut RequestHeader,
    client: Option<IpAddr>,
) -> Admission {
    // By a constant name: a `&str` is parsed into a header name per lookup.
    const REPLICATED_FROM_NAME: http::HeaderName = http::HeaderName::from_static(REPLICATED_FROM);
    if request.headers.contains_key(&REPLICATED_FROM_NAME) {
        if replicator.trusts(client) {
            return Admission::Pass; // already a copy: replicating it again would loop
        }
        request.remove_header(&REPLICATED_FROM_NAME);
    }
    if !replicator.replicates(&request.method) {
        return Admission::Pass;
    }
    let config = replicator.config();
    let declared = request
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // `max_body` bounds the whole write every origin receives: its headers
    // count too (a 1-byte body under 900 KB of headers is a 900 KB write).
    let body_limit = config.max_body.saturating_sub(head_size(request));
    if body_limit == 0 || declared.is_some_and(|length| length > body_limit as u64) {
        return match config.oversize {
            Oversize::Reject => {
                replicator.count_rejected();
                Admission::Refuse(413, OVERSIZE_MESSAGE)
            }
            Oversize::Pass => {
                replicator.count_skipped(None);
                Admission::Pass
            }
        };
    }
    match replicator.admit() {
        Ok(()) => {}
        Err(Full::Backlog) => return Admission::Refuse(503, BACKLOG_FULL_MESSAGE),
        Err(Full::Journal) => return Admission::Refuse(503, JOURNAL_FULL_MESSAGE),
    }
    let version = replicator.next_version();
    let client_key = request
        .headers
        .get(IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty());
    let idempotency_key = replicator.idempotency_key(client_key, version);
    Admission::Capture(Box::new(WriteCapture {
        version,
        idempotency_key,
        request: None,
        key: 0,
        body_limit,
        body: BytesMut::new(),
        complete: false,
        oversize: false,
        quorum_timed_out: false,
        outcome: "pending",
    }))
}

/// Bytes of a request's head as it is sent: request line and headers.
fn head_size(request: &RequestHeader) -> usize {
    let uri = &request.uri;
    let target = uri.path_and_query().map_or(1, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len());
    let line = request.method.as_str().len() + target + 12;
    let headers: usize = request
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    line + headers
}

impl WriteCapture {
    /// The largest body this write may have (`max_body` less its head).
    pub fn body_limit(&self) -> usize {
        self.body_limit
    }

    /// Sets the write's version and idempotency key on the request.
    pub fn stamp(&self, request: &mut RequestHeader) -> Result<()> {
        request.insert_header(VERSION, self.version.to_string())?;
        request.insert_header(IDEMPOTENCY_KEY, self.idempotency_key.as_str())?;
        Ok(())
    }

    /// Stamps the request to the primary and keeps a copy for the peers.
    /// Called once per attempt: a retried write starts its body afresh.
    /// `has_body` comes from the client's request: Pingora removes
    /// `Transfer-Encoding` from the upstream header before this phase, so a
    /// chunked request looks bodiless here.
    pub fn prepare(
        &mut self,
        replicator: &Replicator,
        request: &mut RequestHeader,
        has_body: bool,
    ) -> Result<()> {
        self.stamp(request)?;
        self.key = replicator.key_of(request);
        // A request without a body gets no body callback that could end it.
        self.request = Some(CapturedRequest::of(request));
        self.body.clear();
        self.complete = !has_body;
        self.oversize = false;
        Ok(())
    }

    /// Keeps a chunk of the body as it streams to the primary.
    pub fn append(
        &mut self,
        replicator: &Replicator,
        chunk: Option<&Bytes>,
        end: bool,
    ) -> Result<()> {
        if let Some(chunk) = chunk {
            if !self.oversize {
                let config = replicator.config();
                if self.body.len() + chunk.len() > self.body_limit {
                    if config.oversize == Oversize::Reject {
                        replicator.count_rejected();
                        self.outcome = "rejected";
                        return Err(Error::explain(
                            ErrorType::HTTPStatus(413),
                            "body exceeds replication.max_body",
                        ));
                    }
                    self.oversize = true;
                    self.body = BytesMut::new();
                } else {
                    self.body.extend_from_slice(chunk);
                }
            }
        }
        self.complete |= end;
        Ok(())
    }

    /// The request ended without the primary's answer (it timed out, failed,
    /// or the client left first): the write is not replicated, and is
    /// counted `skipped` like any write the primary did not answer with 2xx.
    pub fn unanswered(&mut self, replicator: &Replicator, primary: Option<usize>) {
        if self.outcome == "pending" {
            replicator.count_skipped(primary);
            self.outcome = "skipped";
        }
    }

    /// The primary answered: replicate (and in sync mode wait), or count why not.
    pub async fn finish(
        &mut self,
        replicator: &Replicator,
        primary: usize,
        response: &mut ResponseHeader,
    ) -> Result<()> {
        let config = replicator.config();
        let success = response.status.is_success();
        if !self.complete && success {
            // The primary took a write whose body has not ended: its copy
            // would be truncated, and a client told 2xx would believe every
            // origin has it. Neither happens: it is not replicated, and the
            // client gets an error instead of the 2xx.
            log::warn!(
                "write version {}: the primary answered {} before the request body ended; \
                 not replicated, the client gets 502",
                self.version,
                response.status.as_u16()
            );
            replicator.count_skipped(Some(primary));
            self.outcome = "skipped";
            return Err(Error::explain(
                ErrorType::HTTPStatus(502),
                "the origin answered before the request body ended",
            ));
        }
        if self.oversize
            || !self.complete
            || (config.replicate_on == ReplicateOn::Success && !success)
        {
            replicator.count_skipped(Some(primary));
            self.outcome = "skipped";
            return Ok(());
        }
        let Some(request) = self.request.take() else {
            return Ok(());
        };
        let body = std::mem::take(&mut self.body).freeze();
        let Some(write) = replicator
            .submit(NewWrite {
                version: self.version,
                idempotency_key: std::mem::take(&mut self.idempotency_key),
                primary,
                key: self.key,
                request,
                body,
            })
            .await
        else {
            self.outcome = "not stored";
            return Ok(());
        };
        let quorum =
            config.mode != ReplicationMode::Sync || replicator.wait_for_quorum(&write).await;
        self.quorum_timed_out = !quorum;
        self.outcome = sync_outcome(config.mode, quorum);
        mark_answer(replicator, response, self.version, primary, quorum)
    }

    /// The write as the sequence takes it (`order: total` or `key`):
    /// `request` is what every origin receives, `body` the whole body.
    pub fn sequenced(
        self,
        replicator: &Replicator,
        mut request: RequestHeader,
        primary: usize,
        body: Bytes,
    ) -> Result<NewWrite> {
        self.stamp(&mut request)?;
        Ok(NewWrite {
            version: self.version,
            key: replicator.key_of(&request),
            request: CapturedRequest::of(&request),
            idempotency_key: self.idempotency_key,
            primary,
            body,
        })
    }
}

/// What a replicated write's log line says once its primary answered.
pub fn sync_outcome(mode: ReplicationMode, quorum: bool) -> &'static str {
    match (mode, quorum) {
        (ReplicationMode::Sync, true) => "quorum",
        (ReplicationMode::Sync, false) => "quorum missed",
        _ => "queued",
    }
}

/// Marks the client's answer to a replicated write: its version, the
/// read-your-writes cookie naming the origin that answered, and what a
/// missed sync quorum means (`partial`, or a 504 error under `fail`).
pub fn mark_answer(
    replicator: &Replicator,
    response: &mut ResponseHeader,
    version: u64,
    answered_by: usize,
    quorum: bool,
) -> Result<()> {
    let config = replicator.config();
    response.insert_header(VERSION, version.to_string())?;
    if config.read_your_writes {
        let cookie = super::route::cookie(version, replicator.origin_name(answered_by));
        response.append_header(http::header::SET_COOKIE, cookie)?;
    }
    match (quorum, config.on_timeout) {
        (true, _) => Ok(()),
        (false, OnTimeout::Degrade) => response.insert_header(REPLICATION_STATUS, "partial"),
        (false, OnTimeout::Fail) => Err(Error::explain(
            ErrorType::HTTPStatus(504),
            "replication quorum timed out",
        )),
    }
}
