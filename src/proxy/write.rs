//! The proxy phases of a write: admit it, stamp it, capture its body while it
//! streams to the primary, and hand it to the replicator once the primary has
//! answered (waiting for the quorum in `sync` mode).

use super::answers::Canned;
use crate::classify::{Class, Classified};
use crate::config::{OnTimeout, Oversize, ReplicateOn, ReplicationMode};
use crate::pool::OriginId;
use crate::replication::{
    CapturedRequest, NewWrite, Replicator, IDEMPOTENCY_KEY, REPLICATION_STATUS, VERSION,
};
use crate::routes::Consistency;
use bytes::{Bytes, BytesMut};
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};

/// What became of a write's replication, for the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// On its way to its primary.
    Pending,
    /// Not replicated on purpose (oversize with `pass`, the primary's answer).
    Skipped,
    /// Refused before reaching any origin (oversize with `reject`).
    Rejected,
    /// The journal could not store it.
    NotStored,
    /// Queued for the peers (`async`).
    Queued,
    /// The sync quorum acknowledged it.
    Quorum,
    /// The sync quorum did not acknowledge it in time.
    QuorumMissed,
    /// Sequenced, but no origin's answer reached its client.
    NotAnswered,
}

impl WriteOutcome {
    /// As the access log writes it.
    pub fn label(self) -> &'static str {
        match self {
            WriteOutcome::Pending => "pending",
            WriteOutcome::Skipped => "skipped",
            WriteOutcome::Rejected => "rejected",
            WriteOutcome::NotStored => "not stored",
            WriteOutcome::Queued => "queued",
            WriteOutcome::Quorum => "quorum",
            WriteOutcome::QuorumMissed => "quorum missed",
            WriteOutcome::NotAnswered => "not answered",
        }
    }

    /// A replicated write's outcome once its primary answered.
    pub fn after_quorum(mode: ReplicationMode, quorum: bool) -> Self {
        match (mode, quorum) {
            (ReplicationMode::Sync, true) => WriteOutcome::Quorum,
            (ReplicationMode::Sync, false) => WriteOutcome::QuorumMissed,
            _ => WriteOutcome::Queued,
        }
    }
}

/// A write on its way to its primary.
pub struct WriteCapture {
    /// Its route's consistency, or the pool's.
    consistency: Consistency,
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
    pub outcome: WriteOutcome,
}

/// What `admit` decided for a request.
pub enum Admission {
    /// Not a write to replicate.
    Pass,
    /// A write to capture and replicate.
    Capture(Box<WriteCapture>),
    /// Refused before reaching any origin.
    Refuse(Canned),
}

/// Decides what happens to a request `classified` so before it reaches
/// any origin.
pub fn admit(
    replicator: &Replicator,
    classified: Classified,
    request: &RequestHeader,
) -> Admission {
    if classified.class != Class::Write || !replicator.is_on() {
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
                Admission::Refuse(Canned::Oversize)
            }
            Oversize::Pass => {
                replicator.count_skipped(None);
                Admission::Pass
            }
        };
    }
    if let Err(full) = replicator.admit() {
        return Admission::Refuse(full.into());
    }
    let version = replicator.next_version();
    let client_key = request
        .headers
        .get(IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty());
    let idempotency_key = replicator.idempotency_key(client_key, version);
    Admission::Capture(Box::new(WriteCapture {
        consistency: Consistency::of(&config, classified.route),
        version,
        idempotency_key,
        request: None,
        key: 0,
        body_limit,
        body: BytesMut::new(),
        complete: false,
        oversize: false,
        outcome: WriteOutcome::Pending,
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
    fn stamp(&self, request: &mut RequestHeader) -> Result<()> {
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

    /// Keeps a chunk of the body as it streams to the primary; a body that
    /// outgrows `max_body` under `oversize: reject` is cut off (413).
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
                        self.outcome = WriteOutcome::Rejected;
                        return Err(Canned::Oversize.error("body exceeds replication.max_body"));
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
    pub fn unanswered(&mut self, replicator: &Replicator, primary: Option<OriginId>) {
        if self.outcome == WriteOutcome::Pending {
            replicator.count_skipped(primary);
            self.outcome = WriteOutcome::Skipped;
        }
    }

    /// The primary answered: replicate (and in sync mode wait), or count why
    /// not. `Err` is what the client gets instead of the primary's answer.
    pub async fn finish(
        &mut self,
        replicator: &Replicator,
        primary: OriginId,
        response: &mut ResponseHeader,
    ) -> std::result::Result<(), Canned> {
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
            self.outcome = WriteOutcome::Skipped;
            return Err(Canned::BadGateway);
        }
        if self.oversize
            || !self.complete
            || (config.replicate_on == ReplicateOn::Success && !success)
        {
            replicator.count_skipped(Some(primary));
            self.outcome = WriteOutcome::Skipped;
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
            self.outcome = WriteOutcome::NotStored;
            return Ok(());
        };
        let consistency = &self.consistency;
        let quorum = consistency.mode != ReplicationMode::Sync
            || replicator.wait_for_quorum(&write, consistency).await;
        self.outcome = WriteOutcome::after_quorum(consistency.mode, quorum);
        mark_answer(
            replicator,
            response,
            (self.version, self.version),
            primary,
            (quorum, consistency.on_timeout),
        )
    }

    /// How this write's client is answered (its route's, or the pool's).
    pub fn consistency(&self) -> Consistency {
        self.consistency
    }

    /// The write as the sequence takes it (`order: total` or `key`):
    /// `request` is what every origin receives, `body` the whole body.
    pub fn sequenced(
        self,
        replicator: &Replicator,
        mut request: RequestHeader,
        primary: OriginId,
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

/// Marks the client's answer to a replicated write: its version, the
/// read-your-writes cookie naming what the client saw (`seen`: the version,
/// or in a cluster the write's position) and the origin that answered, and
/// what a missed sync quorum means under `on_timeout` (`partial`, or a 504
/// under `fail`).
pub fn mark_answer(
    replicator: &Replicator,
    response: &mut ResponseHeader,
    (version, seen): (u64, u64),
    answered_by: OriginId,
    (quorum, on_timeout): (bool, OnTimeout),
) -> std::result::Result<(), Canned> {
    let config = replicator.config();
    let marked = (|| -> Result<()> {
        response.insert_header(VERSION, version.to_string())?;
        if config.read_your_writes {
            let cookie = super::route::cookie(seen, replicator.origin_name(answered_by));
            response.append_header(http::header::SET_COOKIE, cookie)?;
        }
        if !quorum && on_timeout == OnTimeout::Degrade {
            response.insert_header(REPLICATION_STATUS, "partial")?;
        }
        Ok(())
    })();
    if let Err(e) = marked {
        log::error!("write version {version}: cannot mark the answer: {e}");
        return Err(Canned::Failure(500));
    }
    match (quorum, on_timeout) {
        (false, OnTimeout::Fail) => Err(Canned::QuorumTimeout),
        _ => Ok(()),
    }
}
