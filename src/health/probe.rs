//! One active probe of one origin: can we connect, and (for HTTP) does the
//! health endpoint answer with an expected status within the timeout?
//!
//! An HTTP probe keeps its connection for the next one (as Envoy's health
//! checker does) and connects afresh every `health.connect_every` probes,
//! so that a listener that stopped accepting still fails a probe while an
//! old connection lives. A kept connection found closed before any byte of
//! an answer (the origin's keep-alive timeout) is not a failure: the probe
//! is asked again on a fresh one.

use super::response;
use crate::config::ProbeKind;
use crate::origin_tls::{OriginStream, TlsClient};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// Why a probe failed; shown in the log line of an up→down transition.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("connect failed: {0}")]
    Connect(#[source] std::io::Error),
    #[error("i/o error: {0}")]
    Io(#[source] std::io::Error),
    #[error("unexpected status {0}")]
    Status(u16),
    #[error("not an HTTP response")]
    Malformed,
}

impl ProbeError {
    /// What an operator can do about this failure, when the failure says:
    /// the probe's defaults (`GET /health`, 200) fail a backend that is
    /// fine but has no such endpoint.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            ProbeError::Status(404) => Some(
                "the origin has no such path: set health.path to one it answers, \
                 or health.kind: tcp to probe by connecting only",
            ),
            ProbeError::Status(_) => {
                Some("health.expect_status lists the statuses that pass (default [200])")
            }
            ProbeError::Malformed => {
                Some("the answer is not HTTP: health.kind: tcp probes by connecting only")
            }
            _ => None,
        }
    }
}

/// What a probe of `address` does, for log lines: `GET http://a:p/path`
/// or `TCP connect to a:p`.
pub fn describe(kind: &ProbeKind, address: SocketAddr, tls: bool) -> String {
    match kind {
        ProbeKind::Http { path, .. } => {
            let scheme = if tls { "https" } else { "http" };
            format!("GET {scheme}://{address}{path}")
        }
        ProbeKind::Tcp => format!("TCP connect to {address}"),
    }
}

/// What one probe goes to: an origin's address, its TLS, the probe's kind
/// and timeout, and how many probes a connection carries.
pub struct Target<'a> {
    pub kind: &'a ProbeKind,
    pub address: SocketAddr,
    pub tls: Option<&'a Arc<TlsClient>>,
    pub timeout: Duration,
    /// `health.connect_every`: 1 = a fresh connection per probe.
    pub connect_every: u32,
}

/// An HTTP probe's keep-alive connection between probes, for the target it
/// was made to.
pub struct KeptConnection {
    stream: OriginStream,
    address: SocketAddr,
    tls: Option<Arc<TlsClient>>,
    /// Probes it may still carry before a fresh connect.
    probes_left: u32,
    /// The keep-alive request it carries, built once when it was made
    /// (formatting the address was a tenth of an idle pool's probe cost).
    request: Box<[u8]>,
}

/// Whether `request` asks for `path`: a reload may have changed it since a
/// kept connection's request was built.
fn asks_for(request: &[u8], path: &str) -> bool {
    let rest = request.strip_prefix(b"GET ".as_slice());
    rest.and_then(|r| r.strip_prefix(path.as_bytes()))
        .is_some_and(|r| r.starts_with(b" "))
}

/// The probe's GET of `path` on `address`.
fn request(path: &str, address: SocketAddr, keep_alive: bool) -> Box<[u8]> {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    format!(
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nUser-Agent: hothot-health\r\nConnection: {connection}\r\n\r\n"
    )
    .into_bytes()
    .into_boxed_slice()
}

/// Probes `target` once, all of it (connect, handshake, request, status
/// line) within its timeout, on `kept` when it was made to the same
/// target. Returns the verdict and the connection to keep for the next
/// probe, if any.
pub async fn probe(
    target: &Target<'_>,
    kept: Option<KeptConnection>,
) -> (Result<(), ProbeError>, Option<KeptConnection>) {
    let deadline = Instant::now() + target.timeout;
    let kept = kept.filter(|k| {
        k.address == target.address
            && matches!(target.kind, ProbeKind::Http { path, .. } if asks_for(&k.request, path))
            && match (&k.tls, target.tls) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
    });
    let answer = match tokio::time::timeout_at(deadline, ask(target, kept)).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => return (Err(e), None),
        Err(_) => return (Err(ProbeError::Timeout(target.timeout)), None),
    };
    let Some(Asked {
        status,
        head,
        mut connection,
    }) = answer
    else {
        return (Ok(()), None); // TCP: the connect was the probe
    };
    let verdict = match target.kind {
        ProbeKind::Http { expect_status, .. } if !expect_status.contains(&status) => {
            Err(ProbeError::Status(status))
        }
        _ => Ok(()),
    };
    // The verdict is in; what remains decides only whether the connection
    // carries the next probe, within what is left of the timeout.
    let kept = match connection.probes_left {
        0 => None,
        _ => match tokio::time::timeout_at(
            deadline,
            response::read_to_end(&mut connection.stream, &head),
        )
        .await
        {
            Ok(Some(())) => Some(connection),
            _ => None,
        },
    };
    (verdict, kept)
}

/// An HTTP probe's status line and the connection it came on.
struct Asked {
    status: u16,
    head: [u8; 12],
    connection: KeptConnection,
}

/// Connects (TCP: that is all) or, for HTTP, sends the probe's request and
/// reads the status line: on `kept` first, then on a fresh connection if
/// the kept one turned out closed by the origin while idle.
async fn ask(
    target: &Target<'_>,
    kept: Option<KeptConnection>,
) -> Result<Option<Asked>, ProbeError> {
    let ProbeKind::Http { path, .. } = target.kind else {
        OriginStream::connect(target.address, target.tls.map(|t| &**t))
            .await
            .map_err(ProbeError::Connect)?;
        return Ok(None);
    };
    if let Some(mut connection) = kept {
        connection.probes_left -= 1;
        match exchange(&mut connection.stream, &connection.request).await {
            Ok((status, head)) => {
                return Ok(Some(Asked {
                    status,
                    head,
                    connection,
                }))
            }
            // Closed while idle (the origin's keep-alive timeout, a
            // restart): not a verdict on the origin. Ask afresh.
            Err(Exchange::Stale(_)) => {}
            Err(Exchange::Failed(e)) => return Err(e),
        }
    }
    let stream = OriginStream::connect(target.address, target.tls.map(|t| &**t))
        .await
        .map_err(ProbeError::Connect)?;
    let probes_left = target.connect_every.saturating_sub(1);
    let mut connection = KeptConnection {
        stream,
        address: target.address,
        tls: target.tls.cloned(),
        probes_left,
        request: request(path, target.address, probes_left > 0),
    };
    match exchange(&mut connection.stream, &connection.request).await {
        Ok((status, head)) => Ok(Some(Asked {
            status,
            head,
            connection,
        })),
        // A fresh connection closed before any byte answered nothing.
        Err(Exchange::Stale(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(ProbeError::Malformed)
        }
        Err(Exchange::Stale(e)) => Err(ProbeError::Io(e)),
        Err(Exchange::Failed(e)) => Err(e),
    }
}

/// Why an exchange on a connection failed.
enum Exchange {
    /// Before any byte of an answer: on a kept connection, it was closed
    /// while idle.
    Stale(std::io::Error),
    Failed(ProbeError),
}

/// Sends the probe's `request` and reads the status line.
async fn exchange(stream: &mut OriginStream, request: &[u8]) -> Result<(u16, [u8; 12]), Exchange> {
    stream.write_all(request).await.map_err(Exchange::Stale)?;
    read_status(stream).await
}

/// Reads just enough of the response for its status line: `HTTP/1.x NNN`.
async fn read_status(stream: &mut OriginStream) -> Result<(u16, [u8; 12]), Exchange> {
    let mut head = [0u8; 12];
    let mut filled = 0;
    while filled < head.len() {
        let n = match stream.read(&mut head[filled..]).await {
            Ok(n) => n,
            Err(e) if filled == 0 => return Err(Exchange::Stale(e)),
            Err(e) => return Err(Exchange::Failed(ProbeError::Io(e))),
        };
        if n == 0 {
            return Err(match filled {
                0 => Exchange::Stale(std::io::ErrorKind::UnexpectedEof.into()),
                _ => Exchange::Failed(ProbeError::Malformed),
            });
        }
        filled += n;
    }
    let status = parse_status_line(&head).ok_or(Exchange::Failed(ProbeError::Malformed))?;
    Ok((status, head))
}

fn parse_status_line(head: &[u8; 12]) -> Option<u16> {
    if !head.starts_with(b"HTTP/1.") || head[8] != b' ' {
        return None;
    }
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_request_is_reused_only_for_its_own_path() {
        let address: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let kept = request("/health", address, true);
        assert!(kept.starts_with(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"));
        assert!(kept.ends_with(b"Connection: keep-alive\r\n\r\n"));
        assert!(asks_for(&kept, "/health"));
        assert!(!asks_for(&kept, "/healthz"));
        assert!(!asks_for(&kept, "/"));
        assert!(request("/", address, false).ends_with(b"Connection: close\r\n\r\n"));
    }

    #[test]
    fn failures_that_have_a_remedy_name_it() {
        let hint = ProbeError::Status(404).hint().unwrap();
        assert!(hint.contains("health.path") && hint.contains("health.kind: tcp"));
        assert!(ProbeError::Status(503)
            .hint()
            .unwrap()
            .contains("health.expect_status"));
        assert!(ProbeError::Timeout(Duration::from_secs(1)).hint().is_none());
        let kind = ProbeKind::Http {
            path: "/health".into(),
            expect_status: vec![200],
        };
        let address = "127.0.0.1:9002".parse().unwrap();
        assert_eq!(
            describe(&kind, address, true),
            "GET https://127.0.0.1:9002/health"
        );
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200"), Some(200));
        assert_eq!(parse_status_line(b"HTTP/1.0 503"), Some(503));
        assert_eq!(parse_status_line(b"SSH-2.0-Open"), None);
    }
}
