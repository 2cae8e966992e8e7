//! A stored encoded body decoded while it streams to a client that does not accept its
//! coding: at most one frame of output per poll, so a large body never blocks a worker.

use std::io::{Cursor, Read};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

use super::{Coding, Transformed};
use crate::error::{BoxError, ProxyError};

/// Decoded bytes produced per poll at most.
const FRAME: usize = 32 * 1024;

enum Reader {
    Gzip(Box<flate2::read::GzDecoder<Cursor<Bytes>>>),
    Br(Box<brotli::Decompressor<Cursor<Bytes>>>),
}

impl Reader {
    fn new(coding: Coding, body: Bytes) -> Self {
        match coding {
            Coding::Gzip => Self::Gzip(Box::new(flate2::read::GzDecoder::new(Cursor::new(body)))),
            Coding::Br => Self::Br(Box::new(brotli::Decompressor::new(
                Cursor::new(body),
                16 * 1024,
            ))),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Gzip(r) => r.read(buf),
            Self::Br(r) => r.read(buf),
        }
    }

    /// Fills `buf` as far as the content goes; the count read.
    fn fill(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match self.read(&mut buf[n..])? {
                0 => break,
                k => n += k,
            }
        }
        Ok(n)
    }
}

/// The identity content of `len` bytes from `start`, decoded from a stored body.
pub(crate) struct DecodeBody {
    reader: Reader,
    /// Decoded bytes still to drop before the first one sent.
    skip: u64,
    /// Decoded bytes still to send.
    left: u64,
}

impl DecodeBody {
    /// Decodes `body` (stored as `t`) and sends bytes `start..start + len` of its content.
    pub(crate) fn new(t: Transformed, body: Bytes, start: u64, len: u64) -> Self {
        Self {
            reader: Reader::new(t.coding, body),
            skip: start,
            left: len,
        }
    }
}

impl Body for DecodeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.left == 0 {
            return Poll::Ready(None);
        }
        let want = if this.skip > 0 {
            FRAME
        } else {
            FRAME.min(usize::try_from(this.left).unwrap_or(FRAME))
        };
        let mut buf = BytesMut::zeroed(want);
        let n = match this.reader.fill(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                this.left = 0;
                return Poll::Ready(Some(Err(Box::new(ProxyError::Internal(
                    if e.kind() == std::io::ErrorKind::UnexpectedEof {
                        "stored body cut short"
                    } else {
                        "stored body does not decode"
                    },
                )))));
            }
        };
        if n == 0 {
            this.left = 0;
            return Poll::Ready(Some(Err(Box::new(ProxyError::Internal(
                "stored body shorter than its content length",
            )))));
        }
        buf.truncate(n);
        if this.skip > 0 {
            let skipped = this.skip.min(n as u64) as usize;
            this.skip -= skipped as u64;
            let _ = buf.split_to(skipped);
            if buf.is_empty() {
                // Bounded work per poll: come back for the next frame.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
        let take = (buf.len() as u64).min(this.left) as usize;
        buf.truncate(take);
        this.left -= take as u64;
        Poll::Ready(Some(Ok(Frame::data(buf.freeze()))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// The whole identity content (exports, admin views); `None` when it does not decode.
pub(crate) fn decode_all(t: Transformed, body: &Bytes) -> Option<Vec<u8>> {
    let mut r = Reader::new(t.coding, body.clone());
    let mut out = vec![0; usize::try_from(t.identity_len).ok()?];
    let n = r.fill(&mut out).ok()?;
    (n as u64 == t.identity_len).then_some(out)
}
