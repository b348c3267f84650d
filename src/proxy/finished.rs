//! What a finished request leaves behind: its counts in the metrics and its
//! line in the access log.

use super::{HotHotProxy, RequestCtx, CLIENT_CLOSED};
use crate::access_log::Line;
use crate::metrics::Kind;
use pingora_proxy::Session;
use std::borrow::Cow;
use std::time::SystemTime;

impl HotHotProxy {
    pub(super) fn finished(&self, session: &Session, ctx: &RequestCtx) {
        // A `100 Continue` alone is not an answer: a client that leaves
        // after it left before its answer (499).
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .filter(|&status| status >= 200 || status == 101)
            .or(ctx.error_status)
            .unwrap_or(CLIENT_CLOSED);
        let request = session.req_header();
        let duration = ctx.started.elapsed();
        let kind = Kind::of(ctx.classified.class);
        let answered = (status != CLIENT_CLOSED).then_some(status);
        let last = self.attempted(ctx);
        match last {
            Some(origin) => {
                let metrics = &origin.metrics;
                metrics.requests.inc(request.method.as_str(), status);
                metrics.responses.inc(kind, answered);
                metrics.duration[kind as usize].observe(duration.as_secs_f64());
            }
            None => {
                let unrouted = &self.metrics.unrouted;
                unrouted.requests.inc(request.method.as_str(), status);
                unrouted.responses.inc(kind, answered);
            }
        }
        let Some(log) = &self.access_log else {
            return;
        };
        let header = |name: http::header::HeaderName| {
            request
                .headers
                .get(name)
                .map(|value| header_text(value.as_bytes()))
        };
        let (referer, user_agent) = (
            header(http::header::REFERER),
            header(http::header::USER_AGENT),
        );
        let protocol = match request.version {
            http::Version::HTTP_10 => "HTTP/1.0",
            http::Version::HTTP_2 => "HTTP/2.0",
            _ => "HTTP/1.1",
        };
        let write = match &ctx.write {
            Some(capture) => Some((capture.version, capture.outcome)),
            None => ctx.sequenced,
        }
        .map(|(version, outcome)| (version, outcome.label()));
        log.log(&Line {
            time: SystemTime::now(),
            client: super::client_ip(session),
            method: request.method.as_str(),
            target: request
                .uri
                .path_and_query()
                .map_or(request.uri.path(), |p| p.as_str()),
            protocol,
            status,
            body_bytes: session.body_bytes_sent(),
            referer: referer.as_deref(),
            user_agent: user_agent.as_deref(),
            duration,
            origin: last.map(|origin| origin.name.as_str()),
            attempts: ctx.tried.len(),
            upstream_status: ctx.upstream_status,
            write,
            route: ctx.classified.route,
        });
    }
}

/// A header value as text for the access log: itself when it is UTF-8
/// (non-ASCII included), else its bytes outside ASCII as `\xHH`, as nginx
/// writes them; never nothing, which would read as a missing header.
fn header_text(value: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(value) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => {
            let mut text = String::with_capacity(value.len() * 2);
            for &byte in value {
                match byte.is_ascii() {
                    true => text.push(char::from(byte)),
                    false => text.push_str(&format!("\\x{byte:02X}")),
                }
            }
            Cow::Owned(text)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn header_values_are_text_whatever_their_bytes() {
        assert_eq!(super::header_text("curl/8 ünï".as_bytes()), "curl/8 ünï");
        assert_eq!(super::header_text(b"a\xffb"), "a\\xFFb");
    }
}
