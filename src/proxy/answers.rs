//! Every answer hothot gives of its own, not an origin's: the one place that
//! turns what happened (a refusal, a replication outcome, a failure) into a
//! status, a short plain-text body and its headers.

use crate::replication::{Full, Unanswered};
use bytes::Bytes;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

/// An answer of hothot's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Canned {
    /// An HTTP/1.1 request without `Host` (RFC 9112 §3.2).
    NoHost,
    /// A request with more than one `Host`.
    TwoHosts,
    /// Pingora found the request malformed.
    BadRequest,
    /// The client did not send its body in time (`limits.body_timeout`).
    RequestTimeout,
    /// The write (headers and body) exceeds `replication.max_body`.
    Oversize,
    /// The origin failed (refused, reset, closed without an answer).
    BadGateway,
    /// A sequenced write no origin could apply.
    NoAnswer,
    /// An origin's answer to a sequenced write could not be read.
    Malformed,
    /// No origin is serving.
    NoOrigin,
    /// Every serving origin is at its capacity (`balancing.limit`).
    Shed,
    /// The journal holds `journal.max_bytes`.
    JournalFull,
    /// The journal could not store a sequenced write.
    NotStored,
    /// A cluster's instance could not append the write to etcd in time.
    ClusterUnavailable,
    /// hothot holds all the client connections it may
    /// (`limits.max_connections`); written on the connection and closed.
    TooManyConnections,
    /// The origin did not answer within `timeouts.read`.
    GatewayTimeout,
    /// No origin answered a sequenced write within `timeouts.read`.
    AnswerTimeout,
    /// A sync write's quorum did not acknowledge within `replication.timeout`.
    QuorumTimeout,
    /// Any other failure, with the status Pingora chose.
    Failure(u16),
}

impl Canned {
    pub fn status(self) -> u16 {
        match self {
            Canned::NoHost | Canned::TwoHosts | Canned::BadRequest => 400,
            Canned::RequestTimeout => 408,
            Canned::Oversize => 413,
            Canned::BadGateway | Canned::NoAnswer | Canned::Malformed => 502,
            Canned::NoOrigin
            | Canned::Shed
            | Canned::JournalFull
            | Canned::NotStored
            | Canned::ClusterUnavailable
            | Canned::TooManyConnections => 503,
            Canned::GatewayTimeout | Canned::AnswerTimeout | Canned::QuorumTimeout => 504,
            Canned::Failure(status) => status,
        }
    }

    pub fn body(self) -> &'static str {
        match self {
            Canned::NoHost => "bad request: an HTTP/1.1 request needs a Host header\n",
            Canned::TwoHosts => "bad request: more than one Host header\n",
            Canned::BadRequest => "bad request\n",
            Canned::RequestTimeout => {
                "request timeout: the request body did not arrive in time (limits.body_timeout)\n"
            }
            Canned::Oversize => {
                "payload too large: the write (headers and body) exceeds replication.max_body\n"
            }
            Canned::BadGateway => "bad gateway: the origin failed to answer\n",
            Canned::NoAnswer => {
                "bad gateway: no origin could apply the write; it stays queued for every origin\n"
            }
            Canned::Malformed => "bad gateway: the origin's answer could not be read\n",
            Canned::NoOrigin => "service unavailable: no healthy origin\n",
            Canned::Shed => "service unavailable: every origin is at its capacity, retry later\n",
            Canned::JournalFull => {
                "service unavailable: the replication journal is full (journal.max_bytes), retry later\n"
            }
            Canned::NotStored => {
                "service unavailable: the replication journal could not store the write\n"
            }
            Canned::ClusterUnavailable => {
                "service unavailable: the cluster's shared order (etcd) did not take the write in time \
                 (timeouts.connect); it was not sent to any origin, retry later\n"
            }
            Canned::TooManyConnections => "service unavailable: too many client connections\n",
            Canned::GatewayTimeout => "gateway timeout: the origin did not answer in time\n",
            Canned::AnswerTimeout => {
                "gateway timeout: no origin answered the write in time; it stays queued for every origin\n"
            }
            Canned::QuorumTimeout => {
                "gateway timeout: the replication quorum did not acknowledge in time; the write stays queued for the peers\n"
            }
            Canned::Failure(_) => "proxy error\n",
        }
    }

    /// Does it tell the client when to try again (`Retry-After: 1`)?
    fn retry_after(self) -> bool {
        matches!(
            self,
            Canned::Shed | Canned::TooManyConnections | Canned::ClusterUnavailable
        )
    }

    /// The answer for a failure of a proxied request hothot did not decide
    /// itself; `None` when the client is gone (nobody to answer).
    pub fn for_error(e: &Error) -> Option<Canned> {
        Some(match (e.etype(), e.esource()) {
            (ErrorType::HTTPStatus(code), _) => Canned::for_status(*code),
            (
                ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout,
                ErrorSource::Upstream,
            ) => Canned::GatewayTimeout,
            (_, ErrorSource::Upstream) => Canned::BadGateway,
            (ErrorType::ReadTimedout, ErrorSource::Downstream) => Canned::RequestTimeout,
            // The client is gone, or its HTTP/2 stream (reset, broken):
            // nobody to answer, counted 499.
            (
                ErrorType::WriteError
                | ErrorType::ReadError
                | ErrorType::ConnectionClosed
                | ErrorType::WriteTimedout
                | ErrorType::H2Error,
                ErrorSource::Downstream,
            ) => return None,
            (_, ErrorSource::Downstream) => Canned::BadRequest,
            _ => Canned::Failure(500),
        })
    }

    /// The answer for a status Pingora raised.
    fn for_status(status: u16) -> Canned {
        match status {
            400 => Canned::BadRequest,
            413 => Canned::Oversize,
            502 => Canned::BadGateway,
            503 => Canned::NoOrigin,
            504 => Canned::GatewayTimeout,
            other => Canned::Failure(other),
        }
    }

    /// The error a proxy phase returns so that Pingora answers with this
    /// (hothot's `fail_to_proxy` writes it).
    pub fn error(self, why: &'static str) -> Box<Error> {
        Error::explain(ErrorType::HTTPStatus(self.status()), why)
    }

    /// Its header: status, plain text, `Content-Length` of [`Canned::body`].
    pub fn header(self) -> Result<ResponseHeader> {
        let mut header = ResponseHeader::build(self.status(), Some(4))?;
        header.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
        if self.retry_after() {
            header.insert_header(http::header::RETRY_AFTER, "1")?;
        }
        header.insert_header(http::header::CONTENT_LENGTH, self.body().len())?;
        Ok(header)
    }

    /// The whole answer as HTTP/1.1 bytes, closing the connection: for a
    /// connection hothot refuses before any session exists.
    pub fn raw(self) -> Vec<u8> {
        let body = self.body();
        let mut raw = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n",
            self.status(),
            http::StatusCode::from_u16(self.status())
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or(""),
            body.len()
        );
        if self.retry_after() {
            raw.push_str("Retry-After: 1\r\n");
        }
        raw.push_str("Connection: close\r\n\r\n");
        raw.push_str(body);
        raw.into_bytes()
    }
}

impl From<Full> for Canned {
    fn from(full: Full) -> Self {
        match full {
            Full::Journal => Canned::JournalFull,
        }
    }
}

impl From<Unanswered> for Canned {
    fn from(unanswered: Unanswered) -> Self {
        match unanswered {
            Unanswered::NotStored => Canned::NotStored,
            Unanswered::ClusterUnavailable => Canned::ClusterUnavailable,
            Unanswered::NoAnswer => Canned::NoAnswer,
            Unanswered::TimedOut => Canned::AnswerTimeout,
        }
    }
}

/// Answers with `canned` (and closes the connection).
pub async fn respond(session: &mut Session, canned: Canned) -> Result<()> {
    let body = Bytes::from_static(canned.body().as_bytes());
    session
        .as_downstream_mut()
        .write_error_response(canned.header()?, body)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Canned; 17] = [
        Canned::ClusterUnavailable,
        Canned::NoHost,
        Canned::TwoHosts,
        Canned::BadRequest,
        Canned::Oversize,
        Canned::BadGateway,
        Canned::NoAnswer,
        Canned::Malformed,
        Canned::NoOrigin,
        Canned::Shed,
        Canned::JournalFull,
        Canned::NotStored,
        Canned::TooManyConnections,
        Canned::GatewayTimeout,
        Canned::AnswerTimeout,
        Canned::QuorumTimeout,
        Canned::Failure(500),
    ];

    #[test]
    fn every_answer_says_its_exact_length_and_its_status_class() {
        for canned in ALL {
            let header = canned.header().unwrap();
            assert_eq!(header.status.as_u16(), canned.status(), "{canned:?}");
            let length = header.headers.get("content-length").unwrap();
            assert_eq!(
                length.to_str().unwrap(),
                canned.body().len().to_string(),
                "{canned:?}"
            );
            assert!(canned.body().ends_with('\n') && canned.body().is_ascii());
            let retry = header.headers.get("retry-after").is_some();
            assert_eq!(retry, canned.retry_after(), "{canned:?}");
        }
    }

    #[test]
    fn a_raw_answer_parses_and_its_body_is_exactly_its_length() {
        for canned in ALL {
            let raw = canned.raw();
            let mut headers = [httparse::EMPTY_HEADER; 8];
            let mut response = httparse::Response::new(&mut headers);
            let httparse::Status::Complete(head) = response.parse(&raw).unwrap() else {
                panic!("{canned:?}: incomplete head");
            };
            assert_eq!(response.code, Some(canned.status()));
            let length: usize = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                .unwrap();
            assert_eq!(raw.len() - head, length, "{canned:?}");
            assert_eq!(&raw[head..], canned.body().as_bytes());
        }
    }

    #[test]
    fn failures_map_to_their_answers() {
        let upstream = |etype| Error::create(etype, ErrorSource::Upstream, None, None);
        let downstream = |etype| Error::create(etype, ErrorSource::Downstream, None, None);
        assert_eq!(
            Canned::for_error(&upstream(ErrorType::ReadTimedout)),
            Some(Canned::GatewayTimeout)
        );
        assert_eq!(
            Canned::for_error(&upstream(ErrorType::ConnectRefused)),
            Some(Canned::BadGateway)
        );
        assert_eq!(
            Canned::for_error(&downstream(ErrorType::ConnectionClosed)),
            None
        );
        assert_eq!(
            Canned::for_error(&Error::explain(ErrorType::HTTPStatus(501), "x")),
            Some(Canned::Failure(501))
        );
        assert_eq!(Canned::from(Full::Journal).status(), 503);
        assert_eq!(Canned::from(Unanswered::TimedOut).status(), 504);
    }
}
