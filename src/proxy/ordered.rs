//! The proxy phase of a write under `order: total` or `key`: hothot reads
//! it whole, picks its primary by capacity, hands it to the sequence, and
//! answers the client itself with the answer the replicator chose (see
//! [`crate::replication::Replicator::order`]). Pingora never proxies such a
//! write: every origin, the primary included, receives it from its backlog,
//! in the sequence's order.

use super::answers::Canned;
use super::route::Route;
use super::write::{self, WriteOutcome};
use super::{client_ip, headers, HotHotProxy, RequestCtx};
use crate::replication::{decode_answer, Decoded, Ordered};
use bytes::{Bytes, BytesMut};
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

/// Serves the write `capture` admitted; the client always has its answer
/// when this returns `Ok(true)`.
pub async fn serve(
    proxy: &HotHotProxy,
    session: &mut Session,
    ctx: &mut RequestCtx,
    capture: Box<write::WriteCapture>,
) -> Result<bool> {
    let replicator = &proxy.replicator;
    let Some(body) = read_body(session, capture.body_limit()).await? else {
        // A chunked body that outgrew max_body: the rest of it is not read,
        // so the connection cannot be reused.
        replicator.count_rejected();
        session.set_keepalive(None);
        return proxy.answer(session, ctx, Canned::Oversize).await;
    };
    let primary = match proxy.router.choose_primary().await {
        Route::Origin(primary) => primary,
        Route::Full => {
            proxy.metrics.shed.inc();
            return proxy.answer(session, ctx, Canned::Shed).await;
        }
        Route::NoOrigin | Route::NoOtherOrigin => {
            proxy.metrics.no_origin.inc();
            return proxy.answer(session, ctx, Canned::NoOrigin).await;
        }
    };
    ctx.tried.push(primary);
    let mut request = session.req_header().clone();
    headers::strip_hop_by_hop_request(&mut request);
    headers::add_forwarded(&mut request, client_ip(session), "http")?;
    let consistency = capture.consistency();
    let new = capture.sequenced(replicator, request, primary, body)?;
    let version = new.version;
    let (origin, raw, quorum, position) = match replicator.order(new, &consistency).await {
        Ordered::Answer {
            origin,
            raw,
            quorum,
            position,
        } => (origin, raw, quorum, position),
        Ordered::Unanswered(why) => {
            ctx.sequenced = Some((version, WriteOutcome::NotAnswered));
            return proxy.answer(session, ctx, why.into()).await;
        }
    };
    let outcome = WriteOutcome::after_quorum(consistency.mode, quorum);
    ctx.sequenced = Some((version, outcome));
    if origin != primary {
        // The primary could not answer and another origin did: for the
        // dashboards that is a retry on another origin, and the answer (with
        // its metrics) is that origin's.
        if let Some(primary) = proxy.pool.get(primary) {
            primary.metrics.retries.inc();
        }
        ctx.tried.push(origin);
    }
    let Ok(decoded) = decode_answer(&raw) else {
        return proxy.answer(session, ctx, Canned::Malformed).await;
    };
    ctx.upstream_status = Some(decoded.status);
    let (mut response, body) = relayed(decoded)?;
    // In a cluster, versions come from each instance's clock: the cookie
    // names the write's position in the one order instead.
    let seen = match replicator.is_clustered() {
        true => position,
        false => version,
    };
    let quorum = (quorum, consistency.on_timeout);
    let marks = write::mark_answer(replicator, &mut response, (version, seen), origin, quorum);
    if let Err(canned) = marks {
        return proxy.answer(session, ctx, canned).await;
    }
    session
        .write_response_header(Box::new(response), body.is_empty())
        .await?;
    if !body.is_empty() {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(true)
}

/// Reads the whole request body; `None` once it outgrows `max`. Its
/// failures are the client's (a malformed or truncated body, a timeout, a
/// client gone): 400, 408 or 499, never a 500.
async fn read_body(session: &mut Session, max: usize) -> Result<Option<Bytes>> {
    if expects_continue(session.req_header()) {
        // The client waits for this before it sends the body; Pingora
        // forwards it from the origin when it proxies, here it is ours.
        session
            .write_continue_response()
            .await
            .map_err(|e| e.into_down())?;
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = session
        .read_request_body()
        .await
        .map_err(|e| e.into_down())?
    {
        if body.len() + chunk.len() > max {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body.freeze()))
}

fn expects_continue(request: &RequestHeader) -> bool {
    request.version == http::Version::HTTP_11
        && request
            .headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// The origin's answer as the client gets it: its status and end-to-end
/// headers, and its body (unframed, so sent with its own `Content-Length`).
fn relayed(decoded: Decoded) -> Result<(ResponseHeader, Bytes)> {
    let mut response = ResponseHeader::build(decoded.status, Some(decoded.headers.len() + 4))?;
    for (name, value) in decoded.headers {
        if name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding")
        {
            continue;
        }
        response.append_header(name, value.as_slice())?;
    }
    headers::strip_hop_by_hop(&mut response);
    response.insert_header(http::header::CONTENT_LENGTH, decoded.body.len())?;
    Ok((response, decoded.body))
}
