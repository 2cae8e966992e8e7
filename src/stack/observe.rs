//! The per-request observation: the request metrics (recorded at the response head), and a
//! response body that times its request to the last byte: when the body ends, fails, or is
//! dropped early (the client went away), it observes `seawall_request_duration_seconds` and
//! writes the access log line with the bytes actually sent. Only wrapped when something
//! observes it.
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, Registry};
use tokio::time::Instant;

use crate::body::ProxyBody;
use crate::error::BoxError;
use crate::telemetry::access::{End, Record};
use crate::telemetry::metrics::{CacheClass, Served, StaleReason, counter_vec, latency_vec};

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

const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Pre-resolved handles of one route.
#[derive(Debug)]
struct RouteHandles {
    requests: Vec<[IntCounter; 5]>,
    duration: Vec<Histogram>,
    first_byte: Vec<Histogram>,
    coalesced: IntCounter,
    stale: Vec<IntCounter>,
}

/// The request metrics. Per-route label handles are resolved once (at start and on reload),
/// so the hot path only bumps atomics.
pub(crate) struct RequestMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    first_byte: HistogramVec,
    coalesced: IntCounterVec,
    stale_served: IntCounterVec,
    /// The cache's purge counter, for `PURGE` requests that succeed.
    pub(crate) purges: IntCounterVec,
    routes: ArcSwap<Vec<RouteHandles>>,
    no_route: RouteHandles,
}

impl std::fmt::Debug for RequestMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestMetrics").finish_non_exhaustive()
    }
}

impl RequestMetrics {
    /// Registers the request metrics on `r`; `purges` counts HTTP `PURGE`s.
    pub(crate) fn new(r: &Registry, purges: IntCounterVec) -> prometheus::Result<Self> {
        let requests = counter_vec(
            r,
            "seawall_requests_total",
            "Requests by route, cache status and status class.",
            &["route", "cache_status", "code_class"],
        )?;
        let duration = latency_vec(
            r,
            "seawall_request_duration_seconds",
            "Time to the last byte sent (or the client going away), by route and cache status.",
            &["route", "cache_status"],
        )?;
        let first_byte = latency_vec(
            r,
            "seawall_response_first_byte_seconds",
            "Time to the response head, by route and cache status.",
            &["route", "cache_status"],
        )?;
        let coalesced = counter_vec(
            r,
            "seawall_coalesced_requests_total",
            "Requests served from another request's upstream fetch.",
            &["route"],
        )?;
        let stale_served = counter_vec(
            r,
            "seawall_stale_served_total",
            "Stale responses served, by reason.",
            &["route", "reason"],
        )?;
        let no_route = route_handles(
            &requests,
            &duration,
            &first_byte,
            &coalesced,
            &stale_served,
            "_none",
        );
        Ok(Self {
            requests,
            duration,
            first_byte,
            coalesced,
            stale_served,
            purges,
            routes: ArcSwap::from_pointee(Vec::new()),
            no_route,
        })
    }

    /// Resolves handles for the current routes (at start and on reload).
    pub(crate) fn bind(&self, routes: &[String]) {
        let r = routes
            .iter()
            .map(|name| {
                route_handles(
                    &self.requests,
                    &self.duration,
                    &self.first_byte,
                    &self.coalesced,
                    &self.stale_served,
                    name,
                )
            })
            .collect();
        self.routes.store(Arc::new(r));
    }

    /// Records one request at its response head (`first_byte` after it started); returns the
    /// histogram that times it to its last byte, observed when the body ends.
    pub(crate) fn request(
        &self,
        route: Option<usize>,
        served: Option<Served>,
        status: u16,
        first_byte: Duration,
    ) -> Histogram {
        let routes = self.routes.load();
        let h = route.and_then(|i| routes.get(i)).unwrap_or(&self.no_route);
        let served = served.unwrap_or(Served {
            class: CacheClass::Uncacheable,
            stale: None,
            collapsed: false,
        });
        let class = ((status / 100) as usize).clamp(1, 5) - 1;
        let c = served.class as usize;
        h.requests[c][class].inc();
        h.first_byte[c].observe(first_byte.as_secs_f64());
        if served.collapsed {
            h.coalesced.inc();
        }
        if let Some(s) = served.stale {
            h.stale[s as usize].inc();
        }
        h.duration[c].clone()
    }
}

fn route_handles(
    requests: &IntCounterVec,
    duration: &HistogramVec,
    first_byte: &HistogramVec,
    coalesced: &IntCounterVec,
    stale: &IntCounterVec,
    name: &str,
) -> RouteHandles {
    RouteHandles {
        requests: CacheClass::ALL
            .iter()
            .map(|c| {
                let h = |i: usize| requests.with_label_values(&[name, c.as_str(), CODE_CLASSES[i]]);
                [h(0), h(1), h(2), h(3), h(4)]
            })
            .collect(),
        duration: CacheClass::ALL
            .iter()
            .map(|c| duration.with_label_values(&[name, c.as_str()]))
            .collect(),
        first_byte: CacheClass::ALL
            .iter()
            .map(|c| first_byte.with_label_values(&[name, c.as_str()]))
            .collect(),
        coalesced: coalesced.with_label_values(&[name]),
        stale: StaleReason::ALL
            .iter()
            .map(|s| stale.with_label_values(&[name, s.as_str()]))
            .collect(),
    }
}
