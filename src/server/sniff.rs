//! A read-side wrapper that notices what hyper hides from services: a request head carrying
//! both `Transfer-Encoding` and `Content-Length` (a smuggling attempt), and the HTTP/2 preface.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub(crate) use crate::http_util::conn::ConnState;

/// Line scanner state, carried across reads.
#[derive(Debug, Default)]
struct Scan {
    started: bool,
    done: bool,
    line: [u8; 20],
    line_len: usize,
    /// Length of the current line so far (beyond the prefix kept in `line`).
    line_total: usize,
    te: bool,
    cl: bool,
}

impl Scan {
    fn feed(&mut self, data: &[u8], state: &ConnState) {
        if self.done {
            return;
        }
        if !self.started && !data.is_empty() {
            self.started = true;
            if data.starts_with(b"PRI * HTTP/2") {
                state.h2.store(true, Ordering::Relaxed);
                self.done = true;
                return;
            }
        }
        // Line ends are found with memchr (SIMD), and only a line's first bytes are kept:
        // the field names that matter fit in them.
        let mut rest = data;
        while !rest.is_empty() {
            let (seg, end) = match memchr::memchr(b'\n', rest) {
                Some(i) => (&rest[..i], Some(i)),
                None => (rest, None),
            };
            let room = (self.line.len() - self.line_len).min(seg.len());
            for (dst, src) in self.line[self.line_len..self.line_len + room]
                .iter_mut()
                .zip(seg)
            {
                *dst = src.to_ascii_lowercase();
            }
            self.line_len += room;
            self.line_total += seg.len();
            let Some(i) = end else { break };
            self.end_line(state);
            rest = &rest[i + 1..];
        }
    }

    fn end_line(&mut self, state: &ConnState) {
        let blank = self.line_total == 0 || (self.line_total == 1 && self.line[0] == b'\r');
        if blank {
            if self.te && self.cl {
                state.te_and_cl.store(true, Ordering::Relaxed);
            }
            self.te = false;
            self.cl = false;
        } else {
            let l = &self.line[..self.line_len];
            if l.starts_with(b"transfer-encoding:") || l.starts_with(b"transfer-encoding ") {
                self.te = true;
            } else if l.starts_with(b"content-length:") || l.starts_with(b"content-length ") {
                self.cl = true;
            }
        }
        self.line_len = 0;
        self.line_total = 0;
    }
}

pin_project_lite::pin_project! {
    /// The IO wrapper.
    pub struct Sniff<T> {
        #[pin]
        io: T,
        scan: Scan,
        state: Arc<ConnState>,
    }
}

impl<T> Sniff<T> {
    /// Wraps `io`, reporting into `state`.
    pub(crate) fn new(io: T, state: Arc<ConnState>) -> Self {
        Self {
            io,
            scan: Scan::default(),
            state,
        }
    }
}

impl<T: AsyncRead> AsyncRead for Sniff<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let r = this.io.poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let new = &buf.filled()[before..];
            if !new.is_empty() {
                this.state.touch();
                this.scan.feed(new, this.state);
            }
        }
        r
    }
}

impl<T: AsyncWrite> AsyncWrite for Sniff<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let r = this.io.poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r
            && n > 0
        {
            this.state.touch();
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let r = this.io.poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r
            && n > 0
        {
            this.state.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(chunks: &[&[u8]]) -> ConnState {
        let st = ConnState::new();
        let mut s = Scan::default();
        for c in chunks {
            s.feed(c, &st);
        }
        st
    }

    #[test]
    fn te_and_cl_in_one_head_is_flagged_even_split_across_reads() {
        let st = scan(&[
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Enc",
            b"oding: chunked\r\nContent-Length: 4\r\n\r\n",
        ]);
        assert!(st.te_and_cl.load(Ordering::Relaxed));
    }

    #[test]
    fn separate_heads_are_not_confused() {
        let st = scan(&[
            b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ]);
        assert!(!st.te_and_cl.load(Ordering::Relaxed));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Arbitrary bytes in arbitrary reads never panic.
        #[test]
        fn arbitrary_bytes_never_panic(
            chunks in proptest::collection::vec(
                proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), 0..8)
        ) {
            let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
            let _ = scan(&refs);
        }

        /// Both framing fields in one head are flagged wherever the reads split it, in any
        /// case and order.
        #[test]
        fn te_and_cl_are_flagged_at_any_split(
            split in 0usize..80, upper in proptest::prelude::any::<bool>(),
            cl_first in proptest::prelude::any::<bool>(), junk in "[a-z]{0,12}",
        ) {
            let (te, cl) = ("Transfer-Encoding: chunked\r\n", "Content-Length: 4\r\n");
            let (a, b) = if cl_first { (cl, te) } else { (te, cl) };
            let mut head = format!("POST / HTTP/1.1\r\nX-J: {junk}\r\n{a}{b}\r\n");
            if upper {
                head = head.to_uppercase();
            }
            let bytes = head.as_bytes();
            let at = split.min(bytes.len());
            let st = scan(&[&bytes[..at], &bytes[at..]]);
            proptest::prop_assert!(st.te_and_cl.load(Ordering::Relaxed));
        }
    }

    #[test]
    fn h2_preface_is_detected() {
        let st = scan(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]);
        assert!(st.h2.load(Ordering::Relaxed));
    }
}
