//! A request with both `Content-Length` and `Transfer-Encoding` is how requests are smuggled
//! past a proxy that frames them the other way. hyper quietly drops the Content-Length and
//! reads the body as chunked, so the handler can no longer see the conflict; this reader
//! sits under hyper, watches each request head go by and, when both headers are there,
//! appends a marker header the router refuses with a 400.
//!
//! It follows the framing it can follow cheaply: after a Content-Length body it watches the
//! next head; after a chunked body it stops watching and appends `connection: close`, so no
//! further request on that connection goes unwatched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The header the router looks for.
pub const CONFLICT_HEADER: &str = "x-cdrmunch-framing-conflict";

/// A head line longer than this is passed on as is (hyper refuses it as too large).
const MAX_LINE: usize = 64 * 1024;

enum State {
    /// Reading a request head: `line` holds the incomplete line.
    Head { line: Vec<u8>, started: bool, length: Option<u64>, chunked: bool, te: bool },
    /// Passing `remaining` body bytes before the next head.
    Body(u64),
    /// No longer inspecting (after a chunked body, HTTP/2, an overlong line).
    Pass,
}

impl State {
    fn head() -> State {
        State::Head { line: Vec::new(), started: false, length: None, chunked: false, te: false }
    }
}

pub struct FramingGuard<IO> {
    inner: IO,
    state: State,
    /// Bytes ready for hyper, from `out[pos..]`.
    out: Vec<u8>,
    pos: usize,
}

impl<IO> FramingGuard<IO> {
    pub fn new(inner: IO) -> Self {
        FramingGuard { inner, state: State::head(), out: Vec::new(), pos: 0 }
    }

    /// Moves `input` into `out`, rewriting request heads as needed.
    fn process(&mut self, mut input: &[u8]) {
        while !input.is_empty() {
            match &mut self.state {
                State::Pass => {
                    self.out.extend_from_slice(input);
                    return;
                }
                State::Body(remaining) => {
                    let n = (*remaining).min(input.len() as u64) as usize;
                    self.out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    *remaining -= n as u64;
                    if *remaining == 0 {
                        self.state = State::head();
                    }
                }
                State::Head { line, .. } => {
                    let Some(nl) = input.iter().position(|&b| b == b'\n') else {
                        line.extend_from_slice(input);
                        if line.len() > MAX_LINE {
                            self.out.append(line);
                            self.state = State::Pass;
                        }
                        return;
                    };
                    line.extend_from_slice(&input[..=nl]);
                    input = &input[nl + 1..];
                    let line = std::mem::take(line);
                    self.head_line(line);
                }
            }
        }
    }

    fn head_line(&mut self, line: Vec<u8>) {
        let State::Head { started, length, chunked, te, .. } = &mut self.state else { return };
        let text = line.trim_ascii();
        if !*started {
            // empty lines before a request line are allowed and skipped by hyper
            if !text.is_empty() {
                *started = true;
                if text.starts_with(b"PRI * HTTP/2") {
                    self.out.extend_from_slice(&line);
                    self.state = State::Pass;
                    return;
                }
            }
            self.out.extend_from_slice(&line);
            return;
        }
        if !text.is_empty() {
            if let Some(value) = header_value(text, b"content-length") {
                *length = std::str::from_utf8(value).ok().and_then(|v| v.trim().parse().ok()).or(Some(0));
            } else if let Some(value) = header_value(text, b"transfer-encoding") {
                *te = true;
                *chunked |= value.to_ascii_lowercase().windows(7).any(|w| w == b"chunked");
            }
            self.out.extend_from_slice(&line);
            return;
        }
        // the blank line that ends the head
        let (length, chunked, te) = (*length, *chunked, *te);
        if length.is_some() && te {
            self.out.extend_from_slice(format!("{CONFLICT_HEADER}: 1\r\n").as_bytes());
        }
        self.state = if te || chunked {
            self.out.extend_from_slice(b"connection: close\r\n");
            State::Pass
        } else {
            match length {
                Some(n) if n > 0 => State::Body(n),
                _ => State::head(),
            }
        };
        self.out.extend_from_slice(&line);
    }
}

fn header_value<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let colon = line.iter().position(|&b| b == b':')?;
    line[..colon].trim_ascii().eq_ignore_ascii_case(name).then(|| &line[colon + 1..])
}

impl<IO: AsyncRead + Unpin> AsyncRead for FramingGuard<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.pos < this.out.len() {
                let n = (this.out.len() - this.pos).min(buf.remaining());
                buf.put_slice(&this.out[this.pos..this.pos + n]);
                this.pos += n;
                if this.pos == this.out.len() {
                    this.out.clear();
                    this.pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            match &mut this.state {
                // nothing to rewrite any more: read straight into hyper's buffer
                State::Pass => return Pin::new(&mut this.inner).poll_read(cx, buf),
                // a body: straight into hyper's buffer too, up to its end
                State::Body(remaining) => {
                    let limit = (*remaining).min(buf.remaining() as u64) as usize;
                    let mut part = buf.take(limit);
                    match Pin::new(&mut this.inner).poll_read(cx, &mut part) {
                        Poll::Ready(Ok(())) => {}
                        other => return other,
                    }
                    let n = part.filled().len();
                    // SAFETY: the inner reader initialised and filled these `n` bytes of
                    // `buf`'s unfilled part (what `take` lent it), as tokio's own `Take` does.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    *remaining -= n as u64;
                    if *remaining == 0 {
                        this.state = State::head();
                    }
                    return Poll::Ready(Ok(()));
                }
                State::Head { .. } => {}
            }
            let mut scratch = [0u8; 16 * 1024];
            let mut read = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                    // end of stream: hand on a partial line as it is
                    if let State::Head { line, .. } = &mut this.state {
                        if !line.is_empty() {
                            this.out.append(line);
                            continue;
                        }
                    }
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Ok(())) => {
                    let filled = read.filled().to_vec();
                    this.process(&filled);
                }
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for FramingGuard<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> String {
        let mut g = FramingGuard::new(tokio::io::empty());
        for c in chunks {
            g.process(c);
        }
        String::from_utf8(g.out).unwrap()
    }

    #[test]
    fn both_headers_get_the_marker_and_close() {
        let out = run(&[
            b"POST /api/v2/cdr HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ]);
        assert!(out.contains("x-cdrmunch-framing-conflict: 1\r\nconnection: close\r\n\r\n0\r\n"), "{out}");
    }

    #[test]
    fn heads_after_fixed_length_bodies_are_watched_split_anywhere() {
        let req = b"POST / HTTP/1.1\r\ncontent-length: 4\r\n\r\nabcdPOST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n";
        for split in 1..req.len() {
            let out = run(&[&req[..split], &req[split..]]);
            assert_eq!(out.matches(CONFLICT_HEADER).count(), 1, "split at {split}: {out}");
            assert!(out.starts_with("POST / HTTP/1.1\r\ncontent-length: 4\r\n\r\nabcdPOST"), "{out}");
        }
    }

    #[tokio::test]
    async fn read_through_bodies_go_straight_and_heads_are_still_watched() {
        use tokio::io::AsyncReadExt;
        let wire: &[u8] = b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcdPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let mut out = Vec::new();
        FramingGuard::new(wire).read_to_end(&mut out).await.unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcdPOST"), "{out}");
        assert_eq!(out.matches(CONFLICT_HEADER).count(), 1, "{out}");
        assert!(out.ends_with("connection: close\r\n\r\n0\r\n\r\n"), "{out}");
    }

    #[test]
    fn plain_requests_pass_unchanged() {
        let req = "GET /health HTTP/1.1\r\nHost: a\r\n\r\nPOST /x HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi";
        assert_eq!(run(&[req.as_bytes()]), req);
        let chunked = "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n";
        assert_eq!(run(&[chunked.as_bytes()]), chunked.replacen("\r\n\r\n", "\r\nconnection: close\r\n\r\n", 1));
    }
}
