//! The per-request observation: a response body that times its request to the last byte: when the body ends, fails, or is
//! dropped early (the client went away), it observes `seawall_request_duration_seconds` and
//! writes the access log line with the bytes actually sent. Only wrapped when something
//! observes it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use prometheus::Histogram;
use tokio::time::Instant;

use crate::body::ProxyBody;
use crate::error::BoxError;
use crate::telemetry::access::{End, Record};

/// What to do when the body ends.
#[derive(Debug)]
pub(super) struct Observation {
    /// When the request arrived.
    pub started: Instant,
    /// The last-byte histogram of the request's route and cache status.
    pub duration: Option<Histogram>,
    /// The access log line.
    pub access: Option<Box<Record>>,
    /// A HEAD request: hyper sends no body and drops it, which is no abort.
    pub head: bool,
}

/// The wrapper (boxed inside `ProxyBody::Stream`).
#[derive(Debug)]
pub(super) struct ObservedBody {
    body: ProxyBody,
    sent: u64,
    /// The declared length: hyper stops at it without asking the body whether it is over.
    length: Option<u64>,
    obs: Option<Observation>,
}

impl ObservedBody {
    /// `body` of `length` bytes (when known), observed as `obs` says.
    pub(super) fn wrap(body: ProxyBody, length: Option<u64>, obs: Observation) -> ProxyBody {
        ProxyBody::stream(Self {
            body,
            sent: 0,
            length,
            obs: Some(obs),
        })
    }

    fn finish(&mut self, end: End) {
        let Some(o) = self.obs.take() else {
            return;
        };
        let total = o.started.elapsed();
        if let Some(h) = o.duration {
            h.observe(total.as_secs_f64());
        }
        if let Some(a) = o.access {
            a.write(self.sent, total, end);
        }
    }
}

impl Body for ObservedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }

    /// Polls the wrapped body, counting bytes and finishing at its end.
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        this.poll_counted(cx)
    }
}

impl ObservedBody {
    fn poll_counted(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let r = Pin::new(&mut self.body).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    self.sent += d.len() as u64;
                }
                // hyper stops polling once the body says it is over, or its length is sent.
                if self.body.is_end_stream() || self.length.is_some_and(|n| self.sent >= n) {
                    self.finish(End::Complete);
                }
            }
            Poll::Ready(Some(Err(_))) => self.finish(End::Error),
            Poll::Ready(None) => self.finish(End::Complete),
            Poll::Pending => {}
        }
        r
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        if self.obs.is_some() {
            let head = self.obs.as_ref().is_some_and(|o| o.head);
            let end =
                if head || self.body.is_end_stream() || self.length.is_some_and(|n| self.sent >= n)
                {
                    End::Complete
                } else {
                    End::ClientAbort
                };
            self.finish(end);
        }
    }
}
