//! A pipelined HTTP/1.1 connection to one peer: copies are written back to
//! back, and the answers, which HTTP/1.1 returns in request order, are read
//! one by one. Replication needs only the status of each answer, so this is
//! deliberately small: it writes requests with a `Content-Length` and reads
//! answers framed by `Content-Length`, chunked encoding, or no body.

use bytes::{Buf, BytesMut};
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub keep_alive: bool,
}

pub struct PeerConnection {
    stream: TcpStream,
    buffer: BytesMut,
}

const MAX_HEADERS: usize = 64;

impl PeerConnection {
    pub async fn connect(address: SocketAddr, timeout: Duration) -> Result<Self, PipelineError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(address))
            .await
            .map_err(|_| PipelineError::Timeout(timeout))?
            .map_err(PipelineError::Connect)?;
        let _ = stream.set_nodelay(true);
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

    /// Reads the next answer in full (its body is discarded).
    pub async fn read_answer(&mut self, timeout: Duration) -> Result<Answer, PipelineError> {
        tokio::time::timeout(timeout, self.read_answer_unbounded())
            .await
            .map_err(|_| PipelineError::Timeout(timeout))?
    }

    async fn read_answer_unbounded(&mut self) -> Result<Answer, PipelineError> {
        let (status, keep_alive, framing) = loop {
            if let Some(head) = parse_head(&mut self.buffer)? {
                break head;
            }
            self.fill().await?;
        };
        match framing {
            Framing::Empty => {}
            Framing::Length(mut left) => {
                while left > 0 {
                    if self.buffer.is_empty() {
                        self.fill().await?;
                    }
                    let take = left.min(self.buffer.len());
                    self.buffer.advance(take);
                    left -= take;
                }
            }
            Framing::Chunked => loop {
                match skip_chunk(&mut self.buffer)? {
                    Some(true) => break,
                    Some(false) => continue,
                    None => self.fill().await?,
                }
            },
        }
        Ok(Answer { status, keep_alive })
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
        Ok(())
    }
}

enum Framing {
    Empty,
    Length(usize),
    Chunked,
}

/// Parses and consumes an answer's head once it is complete; `None` until then.
fn parse_head(buffer: &mut BytesMut) -> Result<Option<(u16, bool, Framing)>, PipelineError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let length = match response.parse(buffer) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(PipelineError::Malformed),
    };
    let status = response.code.ok_or(PipelineError::Malformed)?;
    let mut keep_alive = response.version == Some(1);
    let mut framing = if status == 204 || status == 304 || (100..200).contains(&status) {
        Framing::Empty
    } else {
        Framing::Length(0)
    };
    let mut has_length = false;
    for h in response.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| PipelineError::Malformed)?
            .trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = value.parse().map_err(|_| PipelineError::Malformed)?;
            if !matches!(framing, Framing::Empty) {
                framing = Framing::Length(n);
            }
            has_length = true;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding")
            && value.eq_ignore_ascii_case("chunked")
        {
            framing = Framing::Chunked;
        } else if h.name.eq_ignore_ascii_case("connection") {
            if value.eq_ignore_ascii_case("close") {
                keep_alive = false;
            } else if value.eq_ignore_ascii_case("keep-alive") {
                keep_alive = true;
            }
        }
    }
    if !has_length && matches!(framing, Framing::Length(0)) {
        // No framing: the body runs to the end of the connection, which can't be reused.
        keep_alive = false;
    }
    buffer.advance(length);
    Ok(Some((status, keep_alive, framing)))
}

/// Consumes one chunk if it is complete: `Some(true)` for the last one,
/// `Some(false)` for another, `None` when more bytes are needed.
fn skip_chunk(buffer: &mut BytesMut) -> Result<Option<bool>, PipelineError> {
    let Some(line_end) = buffer.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let size_text =
        std::str::from_utf8(&buffer[..line_end]).map_err(|_| PipelineError::Malformed)?;
    let size_text = size_text.split(';').next().unwrap_or("").trim();
    let size = usize::from_str_radix(size_text, 16).map_err(|_| PipelineError::Malformed)?;
    if size == 0 {
        // The last chunk, then optional trailers, then an empty line.
        let rest = &buffer[line_end + 2..];
        let end = if rest.starts_with(b"\r\n") {
            Some(2)
        } else {
            rest.windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|p| p + 4)
        };
        let Some(end) = end else {
            return Ok(None);
        };
        buffer.advance(line_end + 2 + end);
        return Ok(Some(true));
    }
    let needed = line_end + 2 + size + 2;
    if buffer.len() < needed {
        return Ok(None);
    }
    buffer.advance(needed);
    Ok(Some(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(bytes: &[u8]) -> Vec<u16> {
        let mut buffer = BytesMut::from(bytes);
        let mut statuses = Vec::new();
        while let Some((status, _, framing)) = parse_head(&mut buffer).unwrap() {
            match framing {
                Framing::Empty => {}
                Framing::Length(n) => buffer.advance(n),
                Framing::Chunked => while skip_chunk(&mut buffer).unwrap() == Some(false) {},
            }
            statuses.push(status);
        }
        statuses
    }

    #[test]
    fn pipelined_answers_of_every_framing() {
        let answers = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhelloHTTP/1.1 204 No Content\r\n\r\n\
HTTP/1.1 503 Busy\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(parse_all(answers), vec![200, 204, 503, 201]);
    }

    #[test]
    fn partial_heads_wait_for_more() {
        let mut buffer = BytesMut::from(&b"HTTP/1.1 200 OK\r\ncontent-le"[..]);
        assert!(parse_head(&mut buffer).unwrap().is_none());
        let mut chunk = BytesMut::from(&b"5\r\nab"[..]);
        assert_eq!(skip_chunk(&mut chunk).unwrap(), None);
    }

    #[test]
    fn connection_close_and_unframed_bodies_end_reuse() {
        let mut buffer = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"[..],
        );
        assert!(!parse_head(&mut buffer).unwrap().unwrap().1);
        let mut buffer = BytesMut::from(&b"HTTP/1.1 200 OK\r\n\r\n"[..]);
        assert!(!parse_head(&mut buffer).unwrap().unwrap().1);
    }
}
