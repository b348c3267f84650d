//! Can a probe's connection carry the next probe? Reads the rest of an
//! answer (header and body) after its status line, so that the connection
//! is left at the start of the next answer, as a keep-alive client must.
//!
//! Only what a health endpoint plausibly sends is followed to its end: a
//! `Content-Length` or chunked body of at most [`MAX_BODY`] bytes, after a
//! header of at most [`MAX_HEAD`]. Anything else (a body delimited by the
//! close, `Connection: close`, HTTP/1.0 without keep-alive, a larger answer)
//! says "do not reuse": the next probe connects afresh, as every probe did
//! before connections were kept. The probe's verdict never depends on this.

use tokio::io::{AsyncRead, AsyncReadExt};

/// The longest header followed to its end (bytes, status line included).
pub const MAX_HEAD: usize = 16 * 1024;
/// The longest body read through to keep the connection.
pub const MAX_BODY: usize = 64 * 1024;

/// Reads the answer whose first bytes are `start` (at least the status
/// line's 12) to its end. `Some(())` when the connection can carry the next
/// request: the answer was followed to its end and nothing came after it
/// (bytes nobody asked for mean do not reuse).
pub async fn read_to_end<S: AsyncRead + Unpin>(stream: &mut S, start: &[u8]) -> Option<()> {
    let mut buf = start.to_vec();
    let (head_len, body) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => break (len, framing(&response)?),
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {
                read_more(stream, &mut buf).await?
            }
            // Too many headers, too long a header or not HTTP: close.
            _ => return None,
        }
    };
    let rest = buf.split_off(head_len);
    let leftover = match body {
        Body::Empty => rest,
        Body::Length(length) => skip_exactly(stream, rest, length).await?,
        Body::Chunked => skip_chunks(stream, rest).await?,
    };
    leftover.is_empty().then_some(())
}

/// How the body after a header ends.
enum Body {
    Empty,
    Length(usize),
    Chunked,
}

/// The body's framing, or `None` when the connection cannot be reused.
fn framing(response: &httparse::Response) -> Option<Body> {
    let mut length = None;
    let mut chunked = false;
    let mut keep_alive = response.version == Some(1);
    for header in response.headers.iter() {
        let value = std::str::from_utf8(header.value).ok()?.trim();
        if header.name.eq_ignore_ascii_case("content-length") {
            // Two different lengths: a malformed answer.
            let parsed: usize = value.parse().ok()?;
            if length.replace(parsed).is_some_and(|l| l != parsed) {
                return None;
            }
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
            if !chunked {
                return None;
            }
        } else if header.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    return None;
                }
                if token.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        }
    }
    let status = response.code?;
    match (keep_alive, chunked, length) {
        (false, _, _) => None,
        _ if status == 204 || status == 304 => Some(Body::Empty),
        (true, true, None) => Some(Body::Chunked),
        (true, false, Some(length)) if length <= MAX_BODY => Some(Body::Length(length)),
        // Delimited by the close, both framings, or too long.
        _ => None,
    }
}

/// Reads once more onto `buf`; `None` at the end of the stream or an error.
/// Reads into `buf`'s own spare room: a buffer on the stack would sit in
/// every probe task's future.
async fn read_more<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> Option<()> {
    buf.reserve(1024);
    match stream.read_buf(buf).await {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(()),
    }
}

/// Skips `length` bytes, of which `buf` holds the first; returns what was
/// read beyond them.
async fn skip_exactly<S: AsyncRead + Unpin>(
    stream: &mut S,
    mut buf: Vec<u8>,
    length: usize,
) -> Option<Vec<u8>> {
    while buf.len() < length {
        read_more(stream, &mut buf).await?;
    }
    Some(buf.split_off(length))
}

/// Skips a chunked body (at most [`MAX_BODY`] bytes of chunks), trailers
/// included, of which `buf` holds the first bytes.
async fn skip_chunks<S: AsyncRead + Unpin>(stream: &mut S, mut buf: Vec<u8>) -> Option<Vec<u8>> {
    let mut total = 0usize;
    loop {
        let (line, size) = loop {
            match httparse::parse_chunk_size(&buf) {
                Ok(httparse::Status::Complete((line, size))) => break (line, size),
                Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {
                    read_more(stream, &mut buf).await?
                }
                _ => return None,
            }
        };
        let size = usize::try_from(size).ok()?;
        total = total.checked_add(size)?;
        if total > MAX_BODY {
            return None;
        }
        buf = buf.split_off(line);
        if size == 0 {
            return skip_trailers(stream, buf).await;
        }
        // The chunk and the CRLF after it.
        buf = skip_exactly(stream, buf, size + 2).await?;
    }
}

/// Skips the trailer fields after the last chunk, up to the empty line.
async fn skip_trailers<S: AsyncRead + Unpin>(stream: &mut S, mut buf: Vec<u8>) -> Option<Vec<u8>> {
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            let rest = buf.split_off(end + 2);
            if end == 0 {
                return Some(rest);
            }
            buf = rest; // a trailer field: skipped
        } else if buf.len() < MAX_HEAD {
            read_more(stream, &mut buf).await?;
        } else {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn reusable(answer: &[u8]) -> bool {
        let (start, rest) = answer.split_at(12);
        let mut rest = rest;
        read_to_end(&mut rest, start).await.is_some()
    }

    #[tokio::test]
    async fn answers_a_keep_alive_connection_can_follow() {
        assert!(reusable(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await);
        assert!(reusable(b"HTTP/1.1 204 No Content\r\n\r\n").await);
        assert!(reusable(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await);
        assert!(
            reusable(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
                .await
        );
        assert!(
            reusable(b"HTTP/1.1 503 x\r\ntransfer-encoding: chunked\r\n\r\n1;a=b\r\nx\r\n0\r\nT: 1\r\n\r\n")
                .await
        );
        assert!(
            reusable(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok")
                .await
        );
    }

    #[tokio::test]
    async fn answers_that_end_the_connection() {
        // Delimited by the close, asked to close, HTTP/1.0, cut short.
        assert!(!reusable(b"HTTP/1.1 200 OK\r\n\r\nok").await);
        assert!(
            !reusable(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok").await
        );
        assert!(!reusable(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok").await);
        assert!(!reusable(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok").await);
        assert!(!reusable(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1").await);
        assert!(!reusable(b"HTTP/1.1 200 OK\r\nContent-Length: 999999\r\n\r\n").await);
        assert!(
            !reusable(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok").await
        );
        assert!(!reusable(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nok").await);
    }
}
