//! hothot's own answers: the status for a failure, its short plain-text
//! body, and how it is written to the client.

use super::write;
use super::RequestCtx;
use bytes::Bytes;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

pub const NO_ORIGIN_MESSAGE: &str = "service unavailable: no healthy origin\n";
pub const SHED_MESSAGE: &str =
    "service unavailable: every origin is at its capacity, retry later\n";

/// The status hothot answers a failure with; 0 when the client is gone.
pub fn status_for(e: &Error) -> u16 {
    match (e.etype(), e.esource()) {
        (ErrorType::HTTPStatus(code), _) => *code,
        (
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout,
            ErrorSource::Upstream,
        ) => 504,
        (_, ErrorSource::Upstream) => 502,
        (
            ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed,
            ErrorSource::Downstream,
        ) => 0,
        (_, ErrorSource::Downstream) => 400,
        _ => 500,
    }
}

pub fn error_body(status: u16, ctx: &RequestCtx) -> &'static str {
    if status == 504 && ctx.write.as_ref().is_some_and(|w| w.quorum_timed_out) {
        return write::QUORUM_TIMEOUT_MESSAGE;
    }
    match status {
        400 => "bad request\n",
        413 => write::OVERSIZE_MESSAGE,
        502 => "bad gateway: the origin failed to answer\n",
        503 => NO_ORIGIN_MESSAGE,
        504 => "gateway timeout: the origin did not answer in time\n",
        _ => "proxy error\n",
    }
}

/// Answers `status` with a plain-text `body` (and closes the connection).
pub async fn respond_plain(session: &mut Session, status: u16, body: Bytes) -> Result<()> {
    respond(session, status, body, false).await
}

/// Answers a request shed by `balancing.limit`: 503 with `Retry-After: 1`.
pub async fn respond_shed(session: &mut Session) -> Result<()> {
    let body = Bytes::from_static(SHED_MESSAGE.as_bytes());
    respond(session, 503, body, true).await
}

async fn respond(session: &mut Session, status: u16, body: Bytes, retry: bool) -> Result<()> {
    let mut header = ResponseHeader::build(status, Some(4))?;
    header.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    if retry {
        header.insert_header(http::header::RETRY_AFTER, "1")?;
    }
    header.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    session
        .as_downstream_mut()
        .write_error_response(header, body)
        .await
}
