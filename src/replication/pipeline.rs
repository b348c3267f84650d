//! A pipelined HTTP/1.1 connection to one peer: copies are written back to
//! back, and the answers, which HTTP/1.1 returns in request order, are read
//! one by one. It is deliberately small: it writes requests with a
//! `Content-Length` and reads answers framed by `Content-Length`, chunked
//! encoding, the end of the connection, or no body. Interim (1xx) answers are
//! skipped. Most answers are only needed for their status; the ones a client
//! waits for are kept whole ([`Answer::raw`]) and [`decode`]d for relaying.

use crate::origin_tls::{OriginStream, TlsClient};
use bytes::{Buf, Bytes, BytesMut};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("connect failed: {0}")]
    Connect(#[source] std::io::Error),
    #[error("i/o error: {0}")]
    Io(#[source] std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the peer closed the connection")]
    Closed,
    #[error("malformed answer from the peer")]
    Malformed,
}

/// One answer: its status, and whether the peer keeps the connection open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub keep_alive: bool,
    /// The whole answer as received (head and framed body), when asked for.
    pub raw: Option<Bytes>,
}

/// An answer taken apart for relaying: its body unframed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Bytes,
}

pub struct PeerConnection {
    stream: OriginStream,
    buffer: BytesMut,
}

const MAX_HEADERS: usize = 64;

impl PeerConnection {
    /// Connects to `address` (over TLS with `tls`), the handshake included
    /// in `timeout`.
    pub async fn connect(
        address: SocketAddr,
        tls: Option<&TlsClient>,
        timeout: Duration,
    ) -> Result<Self, PipelineError> {
        let stream = tokio::time::timeout(timeout, OriginStream::connect(address, tls))
            .await
            .map_err(|_| PipelineError::Timeout(timeout))?
            .map_err(PipelineError::Connect)?;
        let _ = stream.tcp().set_nodelay(true);
        quick_ack(stream.tcp());
        Ok(PeerConnection {
            stream,
            buffer: BytesMut::with_capacity(16 * 1024),
        })
    }

    pub async fn send(&mut self, bytes: &[u8], timeout: Duration) -> Result<(), PipelineError> {
        tokio::time::timeout(timeout, self.stream.write_all(bytes))
            .await
            .map_err(|_| PipelineError::Timeout(timeout))?
            .map_err(PipelineError::Io)
    }

    /// Reads the next final answer in full; keeps its bytes when `capture`
    /// (otherwise its body is discarded as it arrives).
    pub async fn read_answer(
        &mut self,
        timeout: Duration,
        capture: bool,
    ) -> Result<Answer, PipelineError> {
        tokio::time::timeout(timeout, self.read_answer_unbounded(capture))
            .await
            .map_err(|_| PipelineError::Timeout(timeout))?
    }

    async fn read_answer_unbounded(&mut self, capture: bool) -> Result<Answer, PipelineError> {
        let head = loop {
            let head = loop {
                if let Some(head) = parse_head(&self.buffer)? {
                    break head;
                }
                self.fill().await?;
            };
            if !head.interim {
                break head;
            }
            self.buffer.advance(head.len); // 100 Continue and the like
        };
        // Bytes of this answer kept at the front of the buffer.
        let mut kept = 0;
        self.consume(head.len, capture, &mut kept);
        match head.framing {
            Framing::Empty => {}
            Framing::Length(mut left) => {
                while left > 0 {
                    if self.buffer.len() == kept {
                        self.fill().await?;
                    }
                    let take = left.min(self.buffer.len() - kept);
                    self.consume(take, capture, &mut kept);
                    left -= take;
                }
            }
            Framing::Chunked => loop {
                match chunk_len(&self.buffer[kept..])? {
                    Some((len, last)) => {
                        self.consume(len, capture, &mut kept);
                        if last {
                            break;
                        }
                    }
                    None => self.fill().await?,
                }
            },
            Framing::UntilClose => loop {
                match self.fill().await {
                    Ok(()) => {}
                    Err(PipelineError::Closed) => break,
                    Err(e) => return Err(e),
                }
                let arrived = self.buffer.len() - kept;
                self.consume(arrived, capture, &mut kept);
            },
        }
        Ok(Answer {
            status: head.status,
            keep_alive: head.keep_alive,
            raw: capture.then(|| self.buffer.split_to(kept).freeze()),
        })
    }

    /// Moves past `n` bytes of the answer: kept when capturing, else dropped.
    fn consume(&mut self, n: usize, capture: bool, kept: &mut usize) {
        if capture {
            *kept += n;
        } else {
            self.buffer.advance(n);
        }
    }

    /// Has (part of) the next answer already arrived? Whole answers are
    /// consumed as they are read, so buffered bytes belong to the next one.
    pub fn answer_arrived(&self) -> bool {
        !self.buffer.is_empty()
    }

    async fn fill(&mut self) -> Result<(), PipelineError> {
        let n = self
            .stream
            .read_buf(&mut self.buffer)
            .await
            .map_err(PipelineError::Io)?;
        if n == 0 {
            return Err(PipelineError::Closed);
        }
        quick_ack(self.stream.tcp());
        Ok(())
    }
}

/// Acknowledges what arrives at once instead of after Linux's delayed-ACK
/// pause (up to 40 ms). An origin whose socket keeps Nagle's algorithm on
/// holds each pipelined answer until the previous one is acknowledged, so
/// without this every answer but the first waited for that pause (measured:
/// 40 ms per read behind a hyper origin with defaults). The kernel leaves
/// quick-ack mode on its own, so it is set again after every read.
fn quick_ack(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live local;
    // the descriptor belongs to `stream`, which outlives the call. Failing
    // only costs speed.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(usize),
    Chunked,
    /// No framing: the body runs to the end of the connection.
    UntilClose,
}

struct Head {
    /// Bytes of the status line and headers.
    len: usize,
    status: u16,
    /// A 1xx answer other than 101: another answer follows.
    interim: bool,
    keep_alive: bool,
    framing: Framing,
}

/// Parses an answer's head once it is complete; `None` until then.
fn parse_head(buffer: &[u8]) -> Result<Option<Head>, PipelineError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buffer) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(PipelineError::Malformed),
    };
    let status = response.code.ok_or(PipelineError::Malformed)?;
    let mut keep_alive = response.version == Some(1);
    let no_body = status == 204 || status == 304 || (100..200).contains(&status);
    let mut length = None;
    let mut chunked = false;
    for h in response.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| PipelineError::Malformed)?
            .trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse().map_err(|_| PipelineError::Malformed)?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            if value.eq_ignore_ascii_case("close") {
                keep_alive = false;
            } else if value.eq_ignore_ascii_case("keep-alive") {
                keep_alive = true;
            }
        }
    }
    let framing = match (no_body, chunked, length) {
        (true, _, _) => Framing::Empty,
        (false, true, _) => Framing::Chunked,
        (false, false, Some(n)) => Framing::Length(n),
        (false, false, None) => Framing::UntilClose,
    };
    if framing == Framing::UntilClose || status == 101 {
        keep_alive = false; // the connection can't be reused
    }
    Ok(Some(Head {
        len,
        status,
        interim: (100..200).contains(&status) && status != 101,
        keep_alive,
        framing,
    }))
}

/// The length of the chunk at the start of `bytes` if it is complete, and
/// whether it is the last one (with its trailers); `None` when more bytes are needed.
fn chunk_len(bytes: &[u8]) -> Result<Option<(usize, bool)>, PipelineError> {
    let Some(line_end) = bytes.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let size_text =
        std::str::from_utf8(&bytes[..line_end]).map_err(|_| PipelineError::Malformed)?;
    let size_text = size_text.split(';').next().unwrap_or("").trim();
    let size = usize::from_str_radix(size_text, 16).map_err(|_| PipelineError::Malformed)?;
    if size == 0 {
        // The last chunk, then optional trailers, then an empty line.
        let rest = &bytes[line_end + 2..];
        let end = if rest.starts_with(b"\r\n") {
            Some(2)
        } else {
            rest.windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|p| p + 4)
        };
        return Ok(end.map(|end| (line_end + 2 + end, true)));
    }
    let needed = line_end + 2 + size + 2;
    Ok((bytes.len() >= needed).then_some((needed, false)))
}

/// Takes apart an answer kept by [`PeerConnection::read_answer`].
pub fn decode(raw: &Bytes) -> Result<Decoded, PipelineError> {
    let head = parse_head(raw)?.ok_or(PipelineError::Malformed)?;
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    response.parse(raw).map_err(|_| PipelineError::Malformed)?;
    let headers = response
        .headers
        .iter()
        .map(|h| (h.name.to_owned(), h.value.to_vec()))
        .collect();
    let framed = raw.slice(head.len..);
    let body = match head.framing {
        Framing::Empty => Bytes::new(),
        Framing::Length(n) => framed.slice(..n.min(framed.len())),
        Framing::UntilClose => framed,
        Framing::Chunked => {
            let mut body = BytesMut::new();
            let mut rest = &framed[..];
            while let Some((len, last)) = chunk_len(rest)? {
                if last {
                    break;
                }
                let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap_or(0);
                body.extend_from_slice(&rest[line_end + 2..len - 2]);
                rest = &rest[len..];
            }
            body.freeze()
        }
    };
    Ok(Decoded {
        status: head.status,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(bytes: &[u8]) -> Vec<(u16, Bytes)> {
        let mut rest = Bytes::copy_from_slice(bytes);
        let mut answers = Vec::new();
        while let Some(head) = parse_head(&rest).unwrap() {
            let body_len = match head.framing {
                Framing::Empty => 0,
                Framing::Length(n) => n,
                Framing::UntilClose => rest.len() - head.len,
                Framing::Chunked => {
                    let mut at = head.len;
                    loop {
                        let (len, last) = chunk_len(&rest[at..]).unwrap().unwrap();
                        at += len;
                        if last {
                            break at - head.len;
                        }
                    }
                }
            };
            let answer = rest.split_to(head.len + body_len);
            if !head.interim {
                answers.push((head.status, decode(&answer).unwrap().body));
            }
        }
        answers
    }

    #[test]
    fn pipelined_answers_of_every_framing() {
        let answers = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhelloHTTP/1.1 204 No Content\r\n\r\n\
HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Busy\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n\
HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\nHTTP/1.0 200 OK\r\n\r\nuntil the end";
        let parsed = parse_all(answers);
        let expected: Vec<(u16, &[u8])> = vec![
            (200, b"hello"),
            (204, b""),
            (503, b"abcde"),
            (201, b""),
            (200, b"until the end"),
        ];
        assert_eq!(parsed.len(), expected.len());
        for ((status, body), (want_status, want_body)) in parsed.iter().zip(expected) {
            assert_eq!((*status, &body[..]), (want_status, want_body));
        }
    }

    #[test]
    fn partial_heads_wait_for_more() {
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-le")
            .unwrap()
            .is_none());
        assert_eq!(chunk_len(b"5\r\nab").unwrap(), None);
        assert_eq!(chunk_len(b"0\r\nx: y\r\n").unwrap(), None);
    }

    #[test]
    fn connection_close_and_unframed_bodies_end_reuse() {
        let close =
            parse_head(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n");
        assert!(!close.unwrap().unwrap().keep_alive);
        let unframed = parse_head(b"HTTP/1.1 200 OK\r\n\r\n").unwrap().unwrap();
        assert!(!unframed.keep_alive);
        assert_eq!(unframed.framing, Framing::UntilClose);
    }
}
