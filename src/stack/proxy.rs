//! The outer service: strict request checks, routing, `PURGE` on the proxy listener, rescue of
//! every error into a status with `Cache-Status`, and the per-request observation.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use http::{HeaderValue, Method, Request, Response, Version, header};
use http_body::Body as _;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use ipnet::IpNet;
use tower::Service;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::RequestMetrics;
use super::{Runtime, observe, request_host};
use crate::body::ProxyBody;
use crate::config::Config;
use crate::error::{BoxError, ProxyError};
use crate::server::{ConnInfo, Lifecycle, Phase};
use crate::telemetry::metrics::{CacheClass, Served};
use crate::telemetry::window::Window;
use crate::upstream::{UpstreamElapsed, headers};

/// The entry service handed to the server.
#[derive(Clone, Debug)]
pub(crate) struct Proxy {
    rt: Arc<ArcSwap<Runtime>>,
    lifecycle: Arc<Lifecycle>,
    metrics: Option<Arc<RequestMetrics>>,
    window: Option<Arc<Window>>,
    trace: bool,
    /// The TLS listener's port, for `server.https_redirect`.
    https_port: Option<u16>,
}

use crate::http_util::ClientAddr;

/// The client address of a request from `peer` with `headers`, trusting `trusted` proxies.
pub(crate) fn client_addr(
    peer: std::net::IpAddr,
    headers: &http::HeaderMap,
    trusted: &[IpNet],
) -> std::net::IpAddr {
    let is_trusted = |ip: &std::net::IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    // Walk from the nearest hop back; the first address we do not trust is the client (an
    // unreadable hop ends the walk at the last address we could read).
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.trim().parse::<std::net::IpAddr>() else {
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

impl Proxy {
    /// A proxy over the swappable runtime.
    pub(crate) fn new(
        rt: Arc<ArcSwap<Runtime>>,
        lifecycle: Arc<Lifecycle>,
        metrics: Option<Arc<RequestMetrics>>,
        window: Option<Arc<Window>>,
    ) -> Self {
        Self {
            rt,
            lifecycle,
            metrics,
            window,
            trace: false,
            https_port: None,
        }
    }

    /// Where `server.https_redirect` sends cleartext requests: the TLS listener's bound port.
    pub(crate) fn with_https_port(mut self, port: Option<u16>) -> Self {
        self.https_port = port;
        self
    }

    /// Creates a span per request (exported when a tracer is installed).
    pub(crate) fn with_tracing(mut self, on: bool) -> Self {
        self.trace = on;
        self
    }
}

/// Request checks that hyper leaves to us (RFC 9112 §3.2, §6.3; RFC 9110 §7.6.3).
fn check_request(req: &Request<Incoming>, cfg: &Config) -> Result<(), ProxyError> {
    // A reverse proxy has no tunnels to offer (RFC 9110 §9.3.6); hyper would switch a 2xx
    // answer to one into a raw byte pipe.
    if req.method() == Method::CONNECT {
        return Err(ProxyError::NotImplemented("CONNECT"));
    }
    let h = req.headers();
    if let Some(info) = req.extensions().get::<ConnInfo>()
        && info
            .state
            .te_and_cl
            .load(std::sync::atomic::Ordering::Relaxed)
        && h.contains_key(header::TRANSFER_ENCODING)
    {
        return Err(ProxyError::BadRequest(
            "both Transfer-Encoding and Content-Length",
        ));
    }
    // Every authority the request carries, before anything routes or keys by it.
    if h.get_all(header::HOST)
        .iter()
        .any(|v| !crate::route::valid_authority(v.as_bytes()))
        || req
            .uri()
            .authority()
            .is_some_and(|a| !crate::route::valid_authority(a.as_str().as_bytes()))
    {
        return Err(ProxyError::InvalidHost);
    }
    if req.version() == Version::HTTP_11 || req.version() == Version::HTTP_10 {
        let hosts = h.get_all(header::HOST).iter().count();
        if hosts > 1 || (hosts == 0 && req.version() == Version::HTTP_11) {
            return Err(ProxyError::BadRequest("missing or repeated Host"));
        }
        if let (Some(auth), Some(host)) = (req.uri().authority(), h.get(header::HOST))
            && !host
                .as_bytes()
                .eq_ignore_ascii_case(auth.as_str().as_bytes())
        {
            return Err(ProxyError::BadRequest(
                "absolute-form target does not match Host",
            ));
        }
    }
    // Routing and cache keys follow Host / :authority, never SNI: a host the connection's
    // certificate does not cover was sent to the wrong connection (HTTP/2 coalescing, a
    // client reusing a connection across names).
    if let Some(tls) = req
        .extensions()
        .get::<ConnInfo>()
        .and_then(|c| c.tls.as_ref())
        && let Some(host) = crate::http_util::request_host(req)
        && let Ok(authority) = host.parse::<http::uri::Authority>()
        && !tls.covers(authority.host())
    {
        tracing::debug!(host = %authority.host(), sni = ?tls.sni, "Misdirected request.");
        return Err(ProxyError::Misdirected);
    }
    // Fetches this connection's clients left behind count against its stream limit: a client
    // cannot start more work than its streams by resetting them.
    if let Some(info) = req.extensions().get::<ConnInfo>() {
        let st = &info.state;
        let busy = st.requests.load(std::sync::atomic::Ordering::Relaxed)
            + st.detached.load(std::sync::atomic::Ordering::Relaxed);
        if st.detached.load(std::sync::atomic::Ordering::Relaxed) > 0
            && busy > st.stream_limit.load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(ProxyError::TooManyStreams);
        }
    }
    if headers::via_has(h, &cfg.raw.server.via_name) {
        return Err(ProxyError::Loop);
    }
    if let Some(len) = req.body().size_hint().exact()
        && len > cfg.raw.server.max_body_size
    {
        return Err(ProxyError::BodyTooLarge);
    }
    Ok(())
}

impl Service<Request<Incoming>> for Proxy {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let rt = self.rt.load_full();
        let draining = self.lifecycle.phase() != Phase::Serving;
        let metrics = self
            .metrics
            .clone()
            .filter(|_| rt.config.raw.telemetry.metrics);
        let window = self.window.clone();
        let access = rt.config.raw.log.access_log;
        let span = if self.trace {
            let span = tracing::info_span!(
                "request",
                otel.name = %format!("{} {}", req.method(), req.uri().path()),
                otel.kind = "server",
                http.request.method = %req.method(),
                url.path = %req.uri().path(),
                http.route = tracing::field::Empty,
                http.response.status_code = tracing::field::Empty,
                seawall.cache_status = tracing::field::Empty,
                seawall.upstream = tracing::field::Empty,
                seawall.coalesced = tracing::field::Empty,
                seawall.breaker_state = tracing::field::Empty,
            );
            let _ = span.set_parent(crate::telemetry::trace::extract(req.headers()));
            span
        } else {
            tracing::Span::none()
        };
        let https_port = self.https_port;
        let fut = async move {
            let started = tokio::time::Instant::now();
            let version = req.version();
            let head = req.method() == http::Method::HEAD;
            let tls = req
                .extensions()
                .get::<ConnInfo>()
                .and_then(|c| c.tls.clone());
            let access_req = access.then(|| {
                let log = &rt.config.raw.log;
                let r = crate::telemetry::access::Request::new(
                    crate::telemetry::access::Format::parse(&log.access_log_format),
                    req.method(),
                    req.uri(),
                    version,
                    req.headers(),
                    req.extensions().get::<ConnInfo>().map(|c| c.peer.ip()),
                    &rt.config.trusted_proxies,
                    &log.redact_query_params,
                );
                match &tls {
                    Some(t) => r.with_tls(t.version, t.cipher, t.sni.as_deref()),
                    None => r,
                }
            });
            let mut route_idx = None;
            let purge = req.method().as_str() == "PURGE";
            let redirect = match (&tls, https_port) {
                (None, Some(port)) => https_redirect(&rt, &req, port),
                _ => None,
            };
            let routed = match redirect {
                Some(r) => Ok(r),
                None => route_and_call(&rt, req, &mut route_idx).await,
            };
            let mut res = match routed {
                Ok(res) => res,
                Err(e) => {
                    let status = format!("{}; fwd=bypass; detail={}", rt.cache_name, e.reason());
                    e.to_response(&status)
                }
            };
            // HSTS only means something over TLS (RFC 6797 §7.2): never on cleartext.
            if tls.is_some()
                && let Some(v) = &rt.hsts
            {
                res.headers_mut()
                    .insert(header::STRICT_TRANSPORT_SECURITY, v.clone());
            }
            // While draining, HTTP/1 clients are told to reconnect elsewhere.
            if draining && version != Version::HTTP_2 {
                res.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            let served = res.extensions().get::<Served>().copied();
            let first_byte = started.elapsed();
            let status = res.status().as_u16();
            // An upgraded connection lives on as a tunnel: its lifetime is no request latency.
            let upgraded = status == 101;
            let duration = metrics
                .as_ref()
                .map(|m| m.request(route_idx, served, status, first_byte))
                .filter(|_| !upgraded);
            if purge
                && status == 200
                && let Some(m) = &metrics
            {
                m.purges.with_label_values(&["http"]).inc();
            }
            if let Some(w) = &window {
                let bytes = res.body().size_hint().exact().unwrap_or(0);
                w.record(
                    served.map_or(CacheClass::Uncacheable, |s| s.class),
                    status,
                    bytes,
                    first_byte,
                );
            }
            let span = tracing::Span::current();
            let mut record = None;
            if !span.is_none() || access {
                let route = route_idx.and_then(|i| rt.router.routes().get(i));
                let cache_status = res
                    .headers()
                    .get("cache-status")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if !span.is_none() {
                    span.record("http.response.status_code", status);
                    span.record("seawall.cache_status", cache_status);
                    span.record("seawall.coalesced", served.is_some_and(|s| s.collapsed));
                    if let Some(r) = route {
                        span.record("http.route", r.name.as_str());
                        span.record("seawall.upstream", r.upstream_name.as_str());
                        if let Some(b) = rt.breakers.get(r.upstream) {
                            span.record("seawall.breaker_state", b.state().as_str());
                        }
                    }
                }
                if let Some(req) = access_req {
                    use opentelemetry::trace::TraceContextExt as _;
                    let trace_id = span.context().span().span_context().trace_id();
                    record = Some(Box::new(crate::telemetry::access::Record {
                        req,
                        status,
                        cache_status: cache_status.to_string(),
                        first_byte,
                        upstream: res.extensions().get::<UpstreamElapsed>().map(|u| u.0),
                        // No all-zero id when the request is not traced.
                        trace_id: (trace_id != opentelemetry::trace::TraceId::INVALID)
                            .then(|| trace_id.to_string()),
                    }));
                }
            }
            if upgraded {
                if let Some(r) = record {
                    r.write(0, first_byte, crate::telemetry::access::End::Upgraded);
                }
            } else if duration.is_some() || record.is_some() {
                let obs = observe::Observation {
                    started,
                    duration,
                    access: record,
                    head,
                };
                // Stored bodies know their length; streamed ones declare it, if at all.
                let length = res.body().size_hint().exact().or_else(|| {
                    res.headers()
                        .get(header::CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok())
                });
                res = res.map(|b| observe::ObservedBody::wrap(b, length, obs));
            }
            Ok(res)
        };
        Box::pin(fut.instrument(span))
    }
}

/// `server.https_redirect`: a cleartext request for a path no exempt prefix covers gets
/// `308` to the same host, path and query over `https://` (`https_redirect_port`, else the
/// TLS listener's `port`; left out when 443). A
/// request that fails the checks, or a `PURGE`, is handled as usual.
fn https_redirect<B>(rt: &Runtime, req: &Request<B>, port: u16) -> Option<Response<ProxyBody>> {
    let server = &rt.config.raw.server;
    if !server.https_redirect
        || req.method().as_str() == "PURGE"
        || server
            .https_redirect_exempt
            .iter()
            .any(|p| req.uri().path().starts_with(p.as_str()))
    {
        return None;
    }
    let host = request_host(req)?;
    if !crate::route::valid_authority(host.as_bytes()) {
        return None;
    }
    let authority = host.parse::<http::uri::Authority>().ok()?;
    let port = server.https_redirect_port.unwrap_or(port);
    let mut location = format!("https://{}", authority.host());
    if port != 443 {
        location.push_str(&format!(":{port}"));
    }
    location.push_str(req.uri().path());
    if let Some(q) = req.uri().query() {
        location.push('?');
        location.push_str(q);
    }
    let location = HeaderValue::from_str(&location).ok()?;
    let mut res = Response::new(ProxyBody::empty());
    *res.status_mut() = http::StatusCode::PERMANENT_REDIRECT;
    let h = res.headers_mut();
    h.insert(header::LOCATION, location);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{}; fwd=bypass; detail=https-redirect",
        rt.cache_name
    )) {
        h.insert("cache-status", v);
    }
    Some(res)
}

async fn route_and_call(
    rt: &Runtime,
    req: Request<Incoming>,
    route_idx: &mut Option<usize>,
) -> Result<Response<ProxyBody>, ProxyError> {
    check_request(&req, &rt.config)?;
    if req.method().as_str() == "PURGE" {
        // Answered here: never routed, never forwarded to an origin.
        // Boxed: its state (the shared tier's purge) would otherwise sit in every request's
        // future and be moved with it.
        return Ok(Box::pin(http_purge(rt, &req)).await);
    }
    let route = rt
        .router
        .route(request_host(&req), req.uri().path())
        .ok_or(ProxyError::NoRoute)?
        .clone();
    *route_idx = Some(route.idx);
    let limit = rt.config.raw.server.max_body_size as usize;
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(route);
    // Only a certificate the handshake verified names the client: whatever a client sends in
    // this header is dropped first, on either listener.
    if let Some(name) = &rt.client_subject_header {
        parts.headers.remove(name);
        let subject = parts
            .extensions
            .get::<ConnInfo>()
            .and_then(|c| c.tls.as_ref())
            .and_then(|t| t.client_subject.as_deref())
            .and_then(|s| HeaderValue::from_str(s).ok());
        if let Some(v) = subject {
            parts.headers.insert(name.clone(), v);
        }
    }
    if let Some(info) = parts.extensions.get::<ConnInfo>() {
        let ip = client_addr(
            info.peer.ip().to_canonical(),
            &parts.headers,
            &rt.config.trusted_proxies,
        );
        parts.extensions.insert(ClientAddr(ip));
    }
    let body = if body.is_end_stream() {
        ProxyBody::empty()
    } else {
        ProxyBody::stream(Limited::new(body, limit).map_err(map_client_body_error))
    };
    let mut inner = rt.inner.clone();
    std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
    inner.call(Request::from_parts(parts, body)).await
}

/// A JSON answer for `PURGE`.
fn purge_answer(status: http::StatusCode, body: serde_json::Value) -> Response<ProxyBody> {
    let mut res = Response::new(ProxyBody::full(format!("{body}\n")));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// Whether a `PURGE` may purge: its TCP peer (never a forwarded address) is in
/// `[admin] purge_allow`, or it carries the purge token as its one `Authorization` field.
fn purge_allowed<B>(rt: &Runtime, req: &Request<B>) -> bool {
    let peer_ok = req.extensions().get::<ConnInfo>().is_some_and(|c| {
        rt.config
            .purge_allow
            .iter()
            .any(|n| n.contains(&c.peer.ip().to_canonical()))
    });
    let mut auth = req.headers().get_all(header::AUTHORIZATION).iter();
    let token_ok = match (&rt.purge_token, auth.next(), auth.next()) {
        (Some(secret), Some(v), None) => v
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .is_some_and(|(_, t)| secret.matches(t.trim())),
        _ => false,
    };
    peer_ok || token_ok
}

/// `PURGE /path?query` on the proxy listener: removes (or with `Soft: 1` marks stale) every
/// variant stored for that Host's key (aliases through `cache_host`), here and in the shared
/// tier. Anyone not allowed gets 403 and nothing changes.
async fn http_purge<B>(rt: &Runtime, req: &Request<B>) -> Response<ProxyBody> {
    use serde_json::json;
    if !purge_allowed(rt, req) {
        return purge_answer(
            http::StatusCode::FORBIDDEN,
            json!({"error": "PURGE is allowed only from [admin] purge_allow peers or with the purge token"}),
        );
    }
    let Some(host) = request_host(req) else {
        return purge_answer(
            http::StatusCode::BAD_REQUEST,
            json!({"error": "PURGE needs a Host"}),
        );
    };
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    // A PURGE over TLS names the https entry where the route keys on the scheme, as a GET there
    // would.
    let scheme = if req
        .extensions()
        .get::<ConnInfo>()
        .is_some_and(|c| c.tls.is_some())
    {
        "https"
    } else {
        "http"
    };
    let url = format!("{scheme}://{host}{pq}");
    let Some(key) = crate::cache::ops::key_of_url(&rt.router, &url) else {
        return purge_answer(
            http::StatusCode::BAD_REQUEST,
            json!({"error": "PURGE needs a valid Host and path"}),
        );
    };
    let soft = req
        .headers()
        .get("soft")
        .is_some_and(|v| v.as_bytes() == b"1" || v.as_bytes().eq_ignore_ascii_case(b"true"));
    let sel = crate::cache::ops::Selector::Key(key.clone());
    let r = rt.cache.purge(&sel, soft, false);
    tracing::info!(key = %key, soft, entries = r.entries, "Purged through PURGE.");
    let mut out = json!({"purged": r.entries, "keys": r.keys, "key": &*key, "soft": soft});
    if let Some(t) = rt.cache.tier() {
        let shared = t.purge(&[sel], soft).await;
        if let Some(e) = &shared.error
            && !shared.queued
        {
            tracing::warn!(error = %e, "PURGE applied here but not fully announced through the shared tier.");
        }
        out["shared"] = serde_json::to_value(shared).unwrap_or(serde_json::Value::Null);
    }
    purge_answer(http::StatusCode::OK, out)
}

/// Client body errors become `ProxyError`s so the upstream side can tell them apart.
fn map_client_body_error(e: BoxError) -> BoxError {
    if e.is::<http_body_util::LengthLimitError>() {
        Box::new(ProxyError::BodyTooLarge)
    } else {
        Box::new(ProxyError::ClientBody)
    }
}
