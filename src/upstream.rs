//! Upstream side: pooled HTTP/1.1 client (http and https), endpoint selection by least
//! outstanding requests with outlier ejection, deadlines, a concurrency cap and budgeted retries.
//! The pool is ours: one idle stack per endpoint, connections checked back in when their
//! response body has ended (hyper-util's legacy client spent a task, a channel and several
//! keyed map operations per request on the same).

mod forward;
pub mod headers;

pub use forward::{Forward, UpstreamElapsed};

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri, Version, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt as _;
use tower::retry::budget::{Budget, TpsBudget};

use crate::body::ProxyBody;
use crate::config::Config;
use crate::config::file::UpstreamSection;
use crate::error::{BoxError, ProxyError, TimeoutPhase, has_io_kind};

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
type Conn = http1::SendRequest<ProxyBody>;

/// A pooled connection and when it went idle.
#[derive(Debug)]
struct IdleConn {
    tx: Conn,
    since: Instant,
}

/// One endpoint of an upstream, with the counters selection and ejection use.
#[derive(Debug)]
pub struct Endpoint {
    /// `scheme://authority`.
    pub base: Uri,
    outstanding: AtomicUsize,
    consecutive_failures: AtomicU32,
    /// Milliseconds since the upstream's epoch until which the endpoint is skipped (0: not).
    ejected_until_ms: AtomicU64,
    /// Requests sent to this endpoint (for operators and tests).
    pub attempts: AtomicU64,
    /// Idle connections, most recently used last.
    idle: Mutex<VecDeque<IdleConn>>,
}

/// A named backend.
pub struct Upstream {
    /// Name from config.
    pub name: String,
    /// Settings.
    pub cfg: UpstreamSection,
    /// Endpoints.
    pub endpoints: Vec<Endpoint>,
    connector: Connector,
    limit: Arc<Semaphore>,
    rr: AtomicUsize,
    budget: TpsBudget,
    epoch: Instant,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Where a request should go; put in request extensions by routing.
#[derive(Clone, Copy, Debug)]
pub struct UpstreamIdx(pub usize);

/// All upstreams, indexed like `Config::raw.upstreams`.
#[derive(Debug)]
pub struct Upstreams {
    /// The upstreams.
    pub list: Vec<Arc<Upstream>>,
}

impl Upstreams {
    /// Builds clients for every upstream in `cfg`.
    pub fn new(cfg: &Config) -> Result<Self, BoxError> {
        let mut list = Vec::new();
        for (u, eps) in cfg.raw.upstreams.iter().zip(&cfg.endpoints) {
            list.push(Arc::new(Upstream::new(u, eps)?));
        }
        Ok(Self { list })
    }

    /// The upstream by index.
    pub fn get(&self, idx: usize) -> Option<&Arc<Upstream>> {
        self.list.get(idx)
    }
}

fn tls_config(ca_file: Option<&str>) -> Result<rustls::ClientConfig, BoxError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in
                CertificateDer::pem_file_iter(path).map_err(|e| format!("ca_file {path}: {e}"))?
            {
                roots.add(cert.map_err(|e| format!("ca_file {path}: {e}"))?)?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl Upstream {
    fn new(cfg: &UpstreamSection, endpoints: &[Uri]) -> Result<Self, BoxError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(cfg.ca_file.as_deref())?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let endpoints = endpoints
            .iter()
            .map(|u| Endpoint {
                base: u.clone(),
                outstanding: AtomicUsize::new(0),
                consecutive_failures: AtomicU32::new(0),
                ejected_until_ms: AtomicU64::new(0),
                attempts: AtomicU64::new(0),
                idle: Mutex::new(VecDeque::new()),
            })
            .collect();
        Ok(Self {
            name: cfg.name.clone(),
            cfg: cfg.clone(),
            endpoints,
            connector: https,
            limit: Arc::new(Semaphore::new(cfg.max_concurrent_requests)),
            rr: AtomicUsize::new(0),
            budget: TpsBudget::new(
                Duration::from_secs(10),
                cfg.retry.budget_min_per_sec,
                cfg.retry.budget_ratio as f32,
            ),
            epoch: Instant::now(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Whether the endpoint is currently ejected.
    pub fn is_ejected(&self, idx: usize) -> bool {
        self.endpoints
            .get(idx)
            .is_some_and(|e| e.ejected_until_ms.load(Ordering::Relaxed) > self.now_ms())
    }

    /// Least outstanding requests among endpoints not ejected and not in `skip`; round robin
    /// breaks ties. When every endpoint is ejected, ejection is ignored (better a chance than none).
    fn pick(&self, skip: &[usize]) -> usize {
        let n = self.endpoints.len();
        let start = self.rr.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        let mut best: Option<(usize, usize)> = None;
        for pass in 0..2 {
            for k in 0..n {
                let i = (start + k) % n;
                let e = &self.endpoints[i];
                if skip.contains(&i) && skip.len() < n {
                    continue;
                }
                if pass == 0 && e.ejected_until_ms.load(Ordering::Relaxed) > now {
                    continue;
                }
                let load = e.outstanding.load(Ordering::Relaxed);
                if best.is_none_or(|(_, l)| load < l) {
                    best = Some((i, load));
                }
            }
            if best.is_some() {
                break;
            }
        }
        best.map_or(start % n, |(i, _)| i)
    }

    /// Records an endpoint outcome for outlier ejection.
    pub fn record_endpoint(&self, idx: usize, ok: bool) {
        let Some(e) = self.endpoints.get(idx) else {
            return;
        };
        if ok {
            e.consecutive_failures.store(0, Ordering::Relaxed);
            return;
        }
        let fails = e.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let limit = self.cfg.outlier.consecutive_failures;
        if limit > 0 && fails >= limit && self.endpoints.len() > 1 {
            let until = self.now_ms() + self.cfg.outlier.ejection_time.as_millis() as u64;
            e.ejected_until_ms.store(until, Ordering::Relaxed);
            e.consecutive_failures.store(0, Ordering::Relaxed);
            tracing::warn!(upstream = %self.name, endpoint = %e.base, "Endpoint ejected after consecutive failures.");
        }
    }

    /// Marks an endpoint healthy again (active health check).
    pub fn readmit(&self, idx: usize) {
        if let Some(e) = self.endpoints.get(idx) {
            e.ejected_until_ms.store(0, Ordering::Relaxed);
            e.consecutive_failures.store(0, Ordering::Relaxed);
        }
    }

    /// Starts the active health check when `health_check.path` is set: a failing endpoint is
    /// ejected, a passing one is brought back.
    pub fn spawn_health_checks(self: &Arc<Self>) {
        let Some(path) = self.cfg.health_check.path.clone() else {
            return;
        };
        let weak = Arc::downgrade(self);
        let interval = self.cfg.health_check.interval;
        let timeout = self.cfg.health_check.timeout;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(up) = weak.upgrade() else { return };
                for (i, ep) in up.endpoints.iter().enumerate() {
                    let mut req = Request::get(path.as_str()).body(ProxyBody::empty());
                    if let (Ok(r), Some(a)) = (&mut req, ep.base.authority())
                        && let Ok(host) = HeaderValue::from_str(a.as_str())
                    {
                        r.headers_mut().insert(header::HOST, host);
                    }
                    let Ok(req) = req else {
                        continue;
                    };
                    // The connection is not pooled again: the body is never read.
                    let ok = matches!(
                        tokio::time::timeout(timeout, up.send(i, req)).await,
                        Ok(Ok((r, _))) if r.status().is_success()
                    );
                    if ok {
                        if up.is_ejected(i) {
                            tracing::info!(upstream = %up.name, endpoint = %ep.base, "Health check passed; endpoint back in rotation.");
                        }
                        up.readmit(i);
                    } else if !up.is_ejected(i) && up.endpoints.len() > 1 {
                        let until = up.now_ms() + up.cfg.outlier.ejection_time.as_millis() as u64;
                        ep.ejected_until_ms.store(until, Ordering::Relaxed);
                        tracing::warn!(upstream = %up.name, endpoint = %ep.base, "Health check failed; endpoint ejected.");
                    }
                }
            }
        });
    }

    /// Sends `req` (already routed; headers prepared by the caller) and returns the response
    /// with its body under the body deadlines. Retries per the retry policy.
    pub async fn forward(
        self: &Arc<Self>,
        req: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let permit = self
            .limit
            .clone()
            .try_acquire_owned()
            .map_err(|_| ProxyError::UpstreamOverloaded)?;
        let started = Instant::now();
        let deadline = started + self.cfg.total_timeout;
        let (mut parts, body) = req.into_parts();
        let client_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();

        // Keep small bodies for replay; larger or unknown-length bodies stream once.
        let max_replay = self.cfg.retry.max_replay_body;
        let (replay, mut body) = match body.size_hint().exact() {
            Some(0) => (Some(Bytes::new()), None),
            Some(n) if n <= max_replay && client_upgrade.is_none() => {
                let bytes = body
                    .collect()
                    .await
                    .map_err(|e| client_body_error(&*e))?
                    .to_bytes();
                (Some(bytes), None)
            }
            _ => (None, Some(body)),
        };
        self.budget.deposit();

        let idempotent = matches!(
            parts.method,
            http::Method::GET
                | http::Method::HEAD
                | http::Method::OPTIONS
                | http::Method::PUT
                | http::Method::DELETE
        );
        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let mut tried: Vec<usize> = Vec::new();
        loop {
            let ep_idx = self.pick(&tried);
            tried.push(ep_idx);
            let ep = &self.endpoints[ep_idx];
            // Origin-form: the connection already goes to the endpoint.
            let uri = Uri::from(path_and_query.clone());
            let mut out = Request::builder()
                .method(parts.method.clone())
                .uri(uri)
                .version(Version::HTTP_11)
                .body(match (&replay, body.take()) {
                    (Some(b), _) => ProxyBody::full(b.clone()),
                    (None, Some(b)) => b,
                    (None, None) => ProxyBody::empty(),
                })
                .map_err(|_| ProxyError::BadRequest("target cannot be forwarded"))?;
            *out.headers_mut() = parts.headers.clone();
            if out.headers().get(header::HOST).is_none()
                && let Some(a) = ep.base.authority()
                && let Ok(v) = HeaderValue::from_str(a.as_str())
            {
                out.headers_mut().insert(header::HOST, v);
            }
            ep.attempts.fetch_add(1, Ordering::Relaxed);
            ep.outstanding.fetch_add(1, Ordering::Relaxed);
            let guard = Outstanding(self.clone(), ep_idx);
            let ttfb = self
                .cfg
                .ttfb_timeout
                .min(deadline.saturating_duration_since(Instant::now()));
            let result = tokio::time::timeout(ttfb, self.send(ep_idx, out)).await;
            let err = match result {
                Ok(Ok((mut res, conn))) => {
                    self.record_endpoint(ep_idx, true);
                    if res.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                        if let Some(client_up) = client_upgrade {
                            let upstream_up = hyper::upgrade::on(&mut res);
                            spawn_tunnel(client_up, upstream_up);
                        }
                        let (p, _) = res.into_parts();
                        return Ok(Response::from_parts(p, ProxyBody::empty()));
                    }
                    let (p, b) = res.into_parts();
                    let ended = b.is_end_stream();
                    let body = UpstreamBody {
                        checkin: Checkin {
                            up: self.clone(),
                            ep: ep_idx,
                            conn: Some(conn),
                            ended,
                        },
                        inner: b,
                        idle_timeout: self.cfg.body_idle_timeout,
                        idle: None,
                        deadline,
                        _permit: permit,
                        _outstanding: guard,
                    };
                    return Ok(Response::from_parts(p, ProxyBody::stream(body)));
                }
                Ok(Err(e)) => e,
                Err(_) if Instant::now() >= deadline => {
                    ProxyError::UpstreamTimeout(TimeoutPhase::Total)
                }
                Err(_) => ProxyError::UpstreamTimeout(TimeoutPhase::FirstByte),
            };
            drop(guard);
            if !matches!(err, ProxyError::ClientBody | ProxyError::BodyTooLarge) {
                self.record_endpoint(ep_idx, false);
            }
            // Never-sent requests may be retried whatever the method; a reset before any
            // response byte only for idempotent requests. Only replayable bodies.
            let retryable = replay.is_some()
                && match &err {
                    ProxyError::UpstreamConnect(_) => true,
                    ProxyError::UpstreamReset(_) => idempotent,
                    _ => false,
                };
            if !retryable
                || tried.len() > self.cfg.retry.max_retries as usize
                || Instant::now() >= deadline
                || !self.budget.withdraw()
            {
                tracing::warn!(upstream = %self.name, reason = err.reason(), error = %err, attempts = tried.len(), "Upstream request failed.");
                return Err(err);
            }
            tracing::debug!(upstream = %self.name, error = %err, "Retrying upstream request.");
            parts.extensions = http::Extensions::new();
        }
    }
}

impl Upstream {
    /// Sends `req` (origin-form) to endpoint `ep_idx` on an idle pooled connection, else on a
    /// new one. A request that a pooled connection could not take (closed while idle) goes
    /// on the next one: it was never sent.
    async fn send(
        &self,
        ep_idx: usize,
        mut req: Request<ProxyBody>,
    ) -> Result<(Response<Incoming>, Conn), ProxyError> {
        let ep = &self.endpoints[ep_idx];
        loop {
            let (mut tx, reused) = match self.checkout(ep) {
                Some(tx) => (tx, true),
                // Boxed: the connect and TLS handshake state would otherwise make every
                // request's future (moved by value a few times) several times larger.
                None => (Box::pin(self.connect(ep)).await?, false),
            };
            if tx.ready().await.is_err() {
                if reused {
                    continue;
                }
                return Err(ProxyError::UpstreamReset(
                    "connection closed before the request".into(),
                ));
            }
            match tx.try_send_request(req).await {
                Ok(res) => return Ok((res, tx)),
                Err(mut e) => match e.take_message() {
                    Some(r) if reused => req = r,
                    _ => return Err(classify(&e.into_error())),
                },
            }
        }
    }

    fn checkout(&self, ep: &Endpoint) -> Option<Conn> {
        let mut idle = ep.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(c) = idle.pop_back() {
            if !c.tx.is_closed() && c.since.elapsed() < self.cfg.pool_idle_timeout {
                return Some(c.tx);
            }
        }
        None
    }

    /// Pools a connection whose exchange ended cleanly; closes those idle too long.
    fn checkin(&self, ep_idx: usize, tx: Conn) {
        let Some(ep) = self.endpoints.get(ep_idx) else {
            return;
        };
        if tx.is_closed() || self.cfg.pool_max_idle == 0 {
            return;
        }
        let now = Instant::now();
        let mut idle = ep.idle.lock().unwrap_or_else(|e| e.into_inner());
        while idle
            .front()
            .is_some_and(|c| now.saturating_duration_since(c.since) >= self.cfg.pool_idle_timeout)
        {
            idle.pop_front();
        }
        if idle.len() >= self.cfg.pool_max_idle {
            idle.pop_front();
        }
        idle.push_back(IdleConn { tx, since: now });
    }

    async fn connect(&self, ep: &Endpoint) -> Result<Conn, ProxyError> {
        let io = self
            .connector
            .clone()
            .oneshot(ep.base.clone())
            .await
            .map_err(|e| {
                // hyper-util reports its connect timeout, and the OS its own, as
                // `io::ErrorKind::TimedOut` in the source chain: a typed check, not the message.
                if has_io_kind(&*e, std::io::ErrorKind::TimedOut) {
                    ProxyError::UpstreamTimeout(TimeoutPhase::Connect)
                } else {
                    ProxyError::UpstreamConnect(source_text(&*e))
                }
            })?;
        let (tx, conn) = http1::handshake(io)
            .await
            .map_err(|e| ProxyError::UpstreamConnect(source_text(&e)))?;
        let name = self.name.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(upstream = %name, error = %e, "Upstream connection ended with an error.");
            }
        });
        Ok(tx)
    }
}

/// A client body error as the proxy error it carries (413 or 400).
fn client_body_error(e: &(dyn std::error::Error + 'static)) -> ProxyError {
    match crate::error::find_proxy_error(e) {
        Some(ProxyError::BodyTooLarge) => ProxyError::BodyTooLarge,
        _ => ProxyError::ClientBody,
    }
}

/// Maps an exchange error to a proxy error: reset vs client body trouble (connect errors are
/// mapped where the connection is made).
fn classify(e: &hyper::Error) -> ProxyError {
    if e.is_user() {
        return client_body_error(e);
    }
    ProxyError::UpstreamReset(source_text(e))
}

fn source_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn spawn_tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    tokio::spawn(async move {
        let (Ok(c), Ok(u)) = tokio::join!(client, upstream) else {
            tracing::debug!("Upgrade handshake did not complete.");
            return;
        };
        let mut c = hyper_util::rt::TokioIo::new(c);
        let mut u = hyper_util::rt::TokioIo::new(u);
        let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
    });
}

/// Decrements an endpoint's outstanding count when the exchange ends.
struct Outstanding(Arc<Upstream>, usize);

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.endpoints[self.1]
            .outstanding
            .fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// Upstream response body under the total deadline and the idle timeout; holds the
    /// concurrency permit until the body ends.
    struct UpstreamBody {
        #[pin]
        inner: Incoming,
        idle_timeout: Duration,
        // Timers exist only once the body has to wait: most bodies arrive with their head.
        idle: Option<Pin<Box<Sleep>>>,
        deadline: Instant,
        checkin: Checkin,
        _permit: OwnedSemaphorePermit,
        _outstanding: Outstanding,
    }
}

/// Returns the connection to the pool when the body is dropped, if it ended: a body dropped
/// part-way leaves its connection to close.
struct Checkin {
    up: Arc<Upstream>,
    ep: usize,
    conn: Option<Conn>,
    ended: bool,
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
