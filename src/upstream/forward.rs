//! The innermost service of the stack: forwarding headers (hop-by-hop, `Forwarded`, `Via`),
//! the pooled upstream call, its span and its outcome metrics.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use http::{HeaderValue, Request, Response, Version, header};
use ipnet::IpNet;
use tower::Service;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::{Upstreams, headers};
use crate::body::ProxyBody;
use crate::breaker::metrics::{UpstreamMetrics, UpstreamOutcome};
use crate::config::Config;
use crate::error::ProxyError;
use crate::http_util::conn::ConnInfo;
use crate::http_util::is_upgrade;
use crate::route::Route;

/// Time spent upstream, for the access log (response extension).
#[derive(Clone, Copy, Debug)]
pub(crate) struct UpstreamElapsed(pub std::time::Duration);

/// The innermost service: forwarding headers and the upstream call. One reference count to
/// clone: the stack is cloned a few times per request.
#[derive(Clone, Debug)]
pub struct Forward {
    shared: Arc<ForwardShared>,
}

#[derive(Debug)]
struct ForwardShared {
    upstreams: Arc<Upstreams>,
    metrics: Option<Arc<UpstreamMetrics>>,
    via_name: Arc<str>,
    via: HeaderValue,
    trusted: Arc<[IpNet]>,
    preserve_host: bool,
    trace: bool,
}

impl Forward {
    /// A forwarder for `cfg`'s upstreams.
    pub(crate) fn new(
        cfg: &Config,
        upstreams: Arc<Upstreams>,
        metrics: Option<Arc<UpstreamMetrics>>,
    ) -> Self {
        let shared = ForwardShared {
            upstreams,
            metrics,
            via_name: cfg.raw.server.via_name.as_str().into(),
            via: headers::via_value(&cfg.raw.server.via_name),
            trace: crate::telemetry::trace::wanted(&cfg.raw.telemetry),
            trusted: cfg.trusted_proxies.clone().into(),
            preserve_host: cfg.raw.server.preserve_host,
        };
        Self {
            shared: Arc::new(shared),
        }
    }
}

impl Service<Request<ProxyBody>> for Forward {
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<ProxyBody>) -> Self::Future {
        let this = self.shared.clone();
        Box::pin(async move {
            let route = req
                .extensions()
                .get::<Arc<Route>>()
                .cloned()
                .ok_or(ProxyError::NoRoute)?;
            let upstream = this
                .upstreams
                .get(route.upstream)
                .cloned()
                .ok_or(ProxyError::NoRoute)?;
            let upgrade = is_upgrade(&req);
            // The request's host (as `request_host`), as a value: shared, not copied.
            let host = match req.headers().get(header::HOST) {
                Some(v) if v.to_str().is_ok() => Some(v.clone()),
                _ => req
                    .uri()
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
            };
            let peer = req.extensions().get::<ConnInfo>().map(|c| {
                let proto = match c.tls {
                    Some(_) => headers::ClientProto::Https,
                    None => headers::ClientProto::Http,
                };
                (c.peer.ip(), c.peer_value.clone(), proto)
            });
            let version = req.version();
            let h = req.headers_mut();
            headers::strip_hop_by_hop(h, upgrade);
            if this.preserve_host {
                if let Some(host) = &host {
                    h.insert(header::HOST, host.clone());
                }
            } else {
                h.remove(header::HOST);
            }
            if let Some((peer, peer_value, proto)) = peer {
                headers::set_forwarded_with(h, peer, &peer_value, &this.trusted, host, proto);
            } else {
                headers::drop_client_forwarding(h);
            }
            headers::append_via_fast(h, version, &this.via_name, &this.via);
            // No span at all unless traces are exported: this runs on every miss.
            let span = if this.trace {
                tracing::info_span!(
                    "upstream",
                    otel.name = %format!("upstream {}", upstream.name),
                    otel.kind = "client",
                    seawall.upstream = %upstream.name,
                    http.response.status_code = tracing::field::Empty,
                )
            } else {
                tracing::Span::none()
            };
            if !span.is_none() {
                crate::telemetry::trace::inject(&span.context(), req.headers_mut());
            }
            let started = tokio::time::Instant::now();
            let result = upstream.forward(req).instrument(span.clone()).await;
            if let Ok(r) = &result {
                span.record("http.response.status_code", r.status().as_u16());
            }
            if let Some(m) = &this.metrics {
                let outcome = match &result {
                    Ok(r)
                        if upstream
                            .cfg
                            .breaker
                            .failure_statuses
                            .contains(&r.status().as_u16()) =>
                    {
                        UpstreamOutcome::ErrorStatus
                    }
                    Ok(_) => UpstreamOutcome::Ok,
                    Err(ProxyError::UpstreamConnect(_)) => UpstreamOutcome::ConnectError,
                    Err(ProxyError::UpstreamTimeout(_)) => UpstreamOutcome::Timeout,
                    Err(ProxyError::UpstreamOverloaded) => UpstreamOutcome::Overloaded,
                    Err(_) => UpstreamOutcome::Reset,
                };
                m.upstream(route.upstream, outcome, started.elapsed());
            }
            let mut res = result?;
            res.extensions_mut()
                .insert(UpstreamElapsed(started.elapsed()));
            let switching = res.status() == http::StatusCode::SWITCHING_PROTOCOLS;
            let h = res.headers_mut();
            headers::strip_hop_by_hop(h, switching);
            headers::append_via_fast(h, Version::HTTP_11, &this.via_name, &this.via);
            headers::ensure_date(h, SystemTime::now());
            Ok(res)
        })
    }
}
