//! One active probe of one origin: can we connect, and (for HTTP) does the
//! health endpoint answer with an expected status within the timeout?

use crate::config::ProbeKind;
use crate::origin_tls::{OriginStream, TlsClient};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// Probes `address` once (over TLS with `tls`), all of it (connect,
/// handshake, request, status line) within `timeout`.
pub async fn probe(
    kind: &ProbeKind,
    address: SocketAddr,
    tls: Option<&TlsClient>,
    timeout: Duration,
) -> Result<(), ProbeError> {
    match tokio::time::timeout(timeout, probe_unbounded(kind, address, tls)).await {
        Ok(result) => result,
        Err(_) => Err(ProbeError::Timeout(timeout)),
    }
}

async fn probe_unbounded(
    kind: &ProbeKind,
    address: SocketAddr,
    tls: Option<&TlsClient>,
) -> Result<(), ProbeError> {
    let mut stream = OriginStream::connect(address, tls)
        .await
        .map_err(ProbeError::Connect)?;
    let ProbeKind::Http {
        path,
        expect_status,
    } = kind
    else {
        return Ok(());
    };
    // A fresh connection per probe (not a pooled one): a listener that stopped
    // accepting must fail the probe even while old keep-alive sockets live.
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nUser-Agent: hothot-health\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(ProbeError::Io)?;
    let status = read_status(&mut stream).await?;
    if expect_status.contains(&status) {
        Ok(())
    } else {
        Err(ProbeError::Status(status))
    }
}

/// Reads just enough of the response for its status line: `HTTP/1.x NNN`.
async fn read_status(stream: &mut OriginStream) -> Result<u16, ProbeError> {
    let mut head = [0u8; 12];
    let mut filled = 0;
    while filled < head.len() {
        let n = stream
            .read(&mut head[filled..])
            .await
            .map_err(ProbeError::Io)?;
        if n == 0 {
            return Err(ProbeError::Malformed);
        }
        filled += n;
    }
    parse_status_line(&head).ok_or(ProbeError::Malformed)
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
    fn status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200"), Some(200));
        assert_eq!(parse_status_line(b"HTTP/1.0 503"), Some(503));
        assert_eq!(parse_status_line(b"SSH-2.0-Open"), None);
    }
}
