//! The upstream response body: under the total deadline and the idle timeout, holding the
//! concurrency permit and the endpoint's outstanding count until it ends.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

use super::balance::Outstanding;
use super::{Conn, Upstream};
use crate::error::{BoxError, ProxyError, TimeoutPhase};

pin_project_lite::pin_project! {
    /// Upstream response body under the total deadline and the idle timeout; holds the
    /// concurrency permit until the body ends.
    pub(super) struct UpstreamBody {
        #[pin]
        pub(super) inner: Incoming,
        pub(super) idle_timeout: Duration,
        // Timers exist only once the body has to wait: most bodies arrive with their head.
        pub(super) idle: Option<Pin<Box<Sleep>>>,
        pub(super) deadline: Instant,
        pub(super) checkin: Checkin,
        pub(super) _permit: OwnedSemaphorePermit,
        pub(super) _outstanding: Outstanding,
    }
}

/// Returns the connection to the pool when the body is dropped, if it ended: a body dropped
/// part-way leaves its connection to close.
pub(super) struct Checkin {
    pub(super) up: Arc<Upstream>,
    pub(super) ep: usize,
    pub(super) conn: Option<Conn>,
    pub(super) ended: bool,
}

impl Drop for Checkin {
    fn drop(&mut self) {
        if self.ended
            && let Some(tx) = self.conn.take()
        {
            self.up.checkin(self.ep, tx);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => {
                this.checkin.ended = this.inner.is_end_stream();
                if let Some(idle) = this.idle.as_mut() {
                    let next = (Instant::now() + *this.idle_timeout).min(*this.deadline);
                    idle.as_mut().reset(next);
                }
                Poll::Ready(Some(Ok(f)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(
                ProxyError::UpstreamReset(e.to_string()),
            )))),
            Poll::Ready(None) => {
                this.checkin.ended = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                // One timer for both limits: the idle pause, capped by the total deadline.
                let deadline = *this.deadline;
                let idle_timeout = *this.idle_timeout;
                let timer = this.idle.get_or_insert_with(|| {
                    Box::pin(tokio::time::sleep_until(
                        (Instant::now() + idle_timeout).min(deadline),
                    ))
                });
                if timer.as_mut().poll(cx).is_ready() {
                    let phase = if Instant::now() >= deadline {
                        TimeoutPhase::Total
                    } else {
                        TimeoutPhase::BodyIdle
                    };
                    return Poll::Ready(Some(Err(Box::new(ProxyError::UpstreamTimeout(phase)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
