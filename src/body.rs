//! The one body type of the proxy: a stored `Bytes` (no allocation on hits) or a boxed stream.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use pin_project_lite::pin_project;

use crate::error::BoxError;

pin_project! {
    /// Response and request body used throughout the stack.
    #[project = ProxyBodyProj]
    pub enum ProxyBody {
        /// A complete body held in memory (cache hits, errors).
        Full { data: Option<Bytes> },
        /// Anything streamed.
        Stream { #[pin] inner: UnsyncBoxBody<Bytes, BoxError> },
    }
}

impl ProxyBody {
    /// An in-memory body.
    pub fn full(data: impl Into<Bytes>) -> Self {
        let data: Bytes = data.into();
        Self::Full {
            data: (!data.is_empty()).then_some(data),
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self::Full { data: None }
    }

    /// Wraps any body whose error converts to `BoxError`.
    pub fn stream<B>(body: B) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Self::Stream {
            inner: body.map_err(Into::into).boxed_unsync(),
        }
    }
}

impl Default for ProxyBody {
    fn default() -> Self {
        Self::empty()
    }
}

impl std::fmt::Debug for ProxyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Full { data } => write!(
                f,
                "ProxyBody::Full({:?} bytes)",
                data.as_ref().map(Bytes::len)
            ),
            Self::Stream { .. } => f.write_str("ProxyBody::Stream"),
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            ProxyBodyProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ProxyBodyProj::Stream { inner } => inner.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full { data } => data.is_none(),
            Self::Stream { inner } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Self::Stream { inner } => inner.size_hint(),
        }
    }
}
