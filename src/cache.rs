//! The HTTP cache layer (RFC 9111 shared cache, RFC 9211 `Cache-Status`). Hits are answered
//! here from memory; misses and revalidations go below with a `FetchPlan` that the coalescing
//! layer uses to share the fetch and to store the complete response.

pub mod cache_control;
pub mod coalesce;
pub mod date;
pub mod entry;
pub mod fill;
pub mod key;
pub(crate) mod metrics;
pub mod ops;
pub mod plan;
pub mod policy;
pub mod store;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Body as _;
use tower::{Layer, Service, ServiceExt};
use tracing::Instrument as _;

use crate::body::ProxyBody;
use crate::config::Config;
use crate::error::ProxyError;
use crate::route::Route;
use crate::telemetry::metrics::{CacheClass, Served, StaleReason};
use cache_control::CacheControl;
use entry::Entry;
use plan::{Collapsed, FetchPlan, Share, SharedHit};
use policy::{Decision, Revalidate};
use store::redis::SharedTier;
use store::{Lookup, Store};

/// Wall clock for freshness, with an offset tests can advance (production never does).
#[derive(Debug, Default)]
pub struct Clock {
    offset_ms: AtomicI64,
}

impl Clock {
    /// Now, plus the offset.
    pub fn now(&self) -> SystemTime {
        let off = self.offset_ms.load(Ordering::Relaxed);
        let now = SystemTime::now();
        if off >= 0 {
            now + Duration::from_millis(off as u64)
        } else {
            now - Duration::from_millis(off.unsigned_abs())
        }
    }

    /// Moves the clock forward (tests).
    pub fn advance(&self, d: Duration) {
        self.offset_ms
            .fetch_add(d.as_millis() as i64, Ordering::Relaxed);
    }
}

/// Counters for metrics and the admin API.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Fresh hits.
    pub hits: AtomicU64,
    /// Misses (nothing usable stored).
    pub misses: AtomicU64,
    /// Stale responses served (SWR, stale-if-error, max-stale, circuit open).
    pub stale: AtomicU64,
    /// Revalidated with 304.
    pub revalidated: AtomicU64,
    /// Requests that bypassed the cache.
    pub bypass: AtomicU64,
    /// Responses stored.
    pub stored: AtomicU64,
}

/// Cache state shared by every request and kept across reloads.
pub struct CacheShared {
    /// The store.
    pub store: Store,
    /// Kill switch (false: plain proxy).
    pub enabled: AtomicBool,
    /// Name in `Cache-Status`.
    pub name: Arc<str>,
    max_object_size: u64,
    pub(crate) targeted: Vec<HeaderName>,
    strip_downstream: Vec<HeaderName>,
    /// Request fields shared fetches drop: the built-in list plus the configured ones.
    unkeyed: Vec<HeaderName>,
    x_cache: bool,
    /// The freshness clock.
    pub clock: Clock,
    refreshing: Mutex<HashSet<Arc<str>>>,
    /// Counters.
    pub stats: CacheStats,
    tier: std::sync::OnceLock<Arc<SharedTier>>,
}

impl std::fmt::Debug for CacheShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheShared")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Request headers that origins commonly honour without naming them in `Vary`; they are not
/// forwarded on fetches whose response is shared, so nobody can poison an entry with them.
/// `[cache] unkeyed_request_headers` adds to this list; nothing removes from it.
pub const BUILTIN_UNKEYED_REQUEST_HEADERS: [&str; 15] = [
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-forwarded-scheme",
    "x-forwarded-port",
    "x-forwarded-server",
    "x-host",
    "x-forwarded-prefix",
    "x-forwarded-ssl",
    "front-end-https",
    "x-url-scheme",
    "x-forwarded-path",
    "x-original-host",
];

impl CacheShared {
    /// From `[cache]`.
    pub fn new(cfg: &Config) -> Self {
        let c = &cfg.raw.cache;
        let targeted: Vec<HeaderName> = c
            .targeted_fields
            .iter()
            .filter_map(|f| HeaderName::from_bytes(f.as_bytes()).ok())
            .collect();
        // Seawall's own targeted fields stop here; CDN-Cache-Control is for the next CDN.
        let mut strip_downstream: Vec<HeaderName> = targeted
            .iter()
            .filter(|n| n.as_str() != "cdn-cache-control")
            .cloned()
            .collect();
        let mut unkeyed: Vec<HeaderName> = BUILTIN_UNKEYED_REQUEST_HEADERS
            .iter()
            .map(|n| HeaderName::from_static(n))
            .collect();
        for n in &c.unkeyed_request_headers {
            if let Ok(n) = HeaderName::from_bytes(n.as_bytes())
                && !unkeyed.contains(&n)
            {
                unkeyed.push(n);
            }
        }
        if c.strip_tag_headers {
            strip_downstream.push(HeaderName::from_static("surrogate-key"));
            strip_downstream.push(HeaderName::from_static("cache-tag"));
        }
        Self {
            store: Store::new(c.max_size, c.max_variants),
            enabled: AtomicBool::new(c.enabled),
            name: c.name.as_str().into(),
            max_object_size: c.max_object_size,
            targeted,
            strip_downstream,
            unkeyed,
            x_cache: c.x_cache_header,
            clock: Clock::default(),
            refreshing: Mutex::new(HashSet::new()),
            stats: CacheStats::default(),
            tier: std::sync::OnceLock::new(),
        }
    }

    /// The shared tier, when `[cache.redis]` is configured.
    pub fn tier(&self) -> Option<&Arc<SharedTier>> {
        self.tier.get()
    }

    /// Attaches the shared tier (once, at start).
    pub fn set_tier(&self, tier: Arc<SharedTier>) {
        let _ = self.tier.set(tier);
    }

    /// Configured targeted Cache-Control fields.
    pub fn targeted(&self) -> &[HeaderName] {
        &self.targeted
    }

    /// Builds the stored entry for a complete response.
    fn make_entry(
        &self,
        plan: &FetchPlan,
        status: StatusCode,
        res: &HeaderMap,
        body: Bytes,
        response_time: SystemTime,
    ) -> (Arc<Entry>, Duration) {
        let cc = policy::effective_cc(res, &self.targeted);
        let fresh = policy::freshness(
            status,
            &plan.req_headers,
            res,
            cc,
            plan.request_time,
            response_time,
            &plan.route.cache,
        );
        // Seawall-only fields stay stored (export and refresh need them) and are stripped
        // from every response in `decorate`.
        // Header values parsed by hyper are slices of its read buffer: copy them, or every
        // stored entry would keep a whole connection buffer alive (and the weigher would lie).
        let mut headers = HeaderMap::with_capacity(res.len());
        for (k, v) in res {
            if k == header::AGE {
                continue;
            }
            let owned = HeaderValue::from_bytes(v.as_bytes()).unwrap_or_else(|_| v.clone());
            headers.append(k.clone(), owned);
        }
        let ae = plan.route.cache.normalize_accept_encoding;
        let fields = key::vary_fields(res).unwrap_or_default();
        let mut vary = key::vary_key(&plan.req_headers, &fields, ae);
        if plan.route.cache.vary_language == crate::route::VaryLanguage::ContentLanguage
            && let Some(v) = key::content_language_variant(res)
        {
            for (name, value) in &mut vary {
                if *name == header::ACCEPT_LANGUAGE {
                    *value = Some(v.clone());
                }
            }
        }
        let e = Entry {
            key: plan.primary.clone(),
            status,
            vary,
            normalise_ae: ae,
            tags: entry::tags_of(res),
            headers,
            body,
            fresh,
            stored_at: response_time,
            hits: AtomicU64::new(0),
        };
        let has_validators = e.etag().is_some() || e.last_modified().is_some();
        let keep = policy::keep_for(
            &e.fresh,
            has_validators,
            plan.route.cache.stale_if_unreachable,
        );
        (Arc::new(e), keep)
    }

    /// RFC 9111 §4.3.4: a 304 updates the stored headers (except Content-Length) and freshness.
    fn refresh(
        &self,
        old: &Arc<Entry>,
        plan: &FetchPlan,
        res: &HeaderMap,
        response_time: SystemTime,
    ) -> Arc<Entry> {
        let mut headers = old.headers.clone();
        for name in res.keys() {
            // A cookie on a 304 is for the client that revalidated, not for everyone.
            if name == header::CONTENT_LENGTH
                || (name == header::SET_COOKIE && !plan.route.cache.cache_set_cookie)
            {
                continue;
            }
            headers.remove(name);
            for v in res.get_all(name) {
                headers.append(name.clone(), v.clone());
            }
        }
        let (new, keep) =
            self.make_entry(plan, old.status, &headers, old.body.clone(), response_time);
        // The variant stays the one the stored response was selected by.
        let new = Arc::new(Entry {
            key: new.key.clone(),
            status: new.status,
            headers: new.headers.clone(),
            body: new.body.clone(),
            fresh: new.fresh.clone(),
            vary: old.vary.clone(),
            normalise_ae: old.normalise_ae,
            tags: new.tags.clone(),
            stored_at: new.stored_at,
            hits: AtomicU64::new(old.hits.load(Ordering::Relaxed)),
        });
        self.store.replace(old, new.clone(), keep);
        new
    }
}

/// The layer.
#[derive(Clone, Debug)]
pub struct CacheLayer {
    shared: Arc<CacheShared>,
}

impl CacheLayer {
    /// A layer over shared state.
    pub fn new(shared: Arc<CacheShared>) -> Self {
        Self { shared }
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = Cache<S>;
    fn layer(&self, inner: S) -> Cache<S> {
        Cache {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service.
#[derive(Clone, Debug)]
pub struct Cache<S> {
    inner: S,
    shared: Arc<CacheShared>,
}

/// How a response was produced, rendered as `Cache-Status` and `X-Cache`.
#[derive(Clone, Debug)]
enum Outcome {
    Hit {
        ttl: i64,
        detail: Option<&'static str>,
    },
    Miss {
        fwd: &'static str,
        stored: bool,
        detail: Option<&'static str>,
    },
    Revalidated {
        fwd: &'static str,
        status: u16,
        stored: bool,
    },
    StaleOnError {
        status: Option<u16>,
        detail: &'static str,
    },
    Bypass(&'static str),
}

impl Outcome {
    fn render(&self, name: &str, collapsed: bool) -> String {
        use std::fmt::Write as _;
        let mut s = String::with_capacity(64);
        s.push_str(name);
        match self {
            Self::Hit { ttl, detail } => {
                let _ = write!(s, "; hit; ttl={ttl}");
                if let Some(d) = detail {
                    let _ = write!(s, "; detail={d}");
                }
            }
            Self::Miss {
                fwd,
                stored,
                detail,
            } => {
                s.push_str("; fwd=");
                s.push_str(fwd);
                if *stored {
                    s.push_str("; stored");
                }
                if let Some(d) = detail {
                    s.push_str("; detail=");
                    s.push_str(d);
                }
            }
            Self::Revalidated {
                fwd,
                status,
                stored,
            } => {
                let _ = write!(s, "; fwd={fwd}; fwd-status={status}");
                if *stored {
                    s.push_str("; stored");
                }
            }
            Self::StaleOnError { status, detail } => {
                s.push_str("; fwd=stale");
                if let Some(st) = status {
                    let _ = write!(s, "; fwd-status={st}");
                }
                s.push_str("; detail=");
                s.push_str(detail);
            }
            Self::Bypass(reason) => {
                s.push_str("; fwd=bypass; detail=");
                s.push_str(reason);
            }
        }
        if collapsed {
            s.push_str("; collapsed");
        }
        s
    }

    fn served(&self, collapsed: bool) -> Served {
        let (class, stale) = match self {
            Self::Hit {
                detail: None | Some("shared"),
                ..
            } => (CacheClass::Hit, None),
            Self::Hit {
                detail: Some("max-stale"),
                ..
            } => (CacheClass::Stale, Some(StaleReason::MaxStale)),
            Self::Hit {
                detail: Some("circuit-open"),
                ..
            } => (CacheClass::Stale, Some(StaleReason::CircuitOpen)),
            Self::Hit { .. } => (CacheClass::Stale, Some(StaleReason::StaleWhileRevalidate)),
            Self::StaleOnError { .. } => (CacheClass::Stale, Some(StaleReason::StaleIfError)),
            Self::Revalidated { status: 304, .. } => (CacheClass::Revalidated, None),
            Self::Miss { .. } | Self::Revalidated { .. } => (CacheClass::Miss, None),
            // A cacheable request the open breaker kept from the origin is still a miss.
            Self::Bypass("circuit-open") => (CacheClass::Miss, None),
            Self::Bypass(_) => (CacheClass::Uncacheable, None),
        };
        Served {
            class,
            stale,
            collapsed,
        }
    }

    fn x_cache(&self) -> &'static str {
        match self {
            Self::Hit {
                detail: None | Some("shared"),
                ..
            } => "HIT",
            Self::Hit { .. } | Self::StaleOnError { .. } => "STALE",
            Self::Revalidated { status: 304, .. } => "REVALIDATED",
            Self::Miss { .. } | Self::Revalidated { .. } => "MISS",
            Self::Bypass(_) => "BYPASS",
        }
    }
}

const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

type BoxFut = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send>>;

impl<S> Service<Request<ProxyBody>> for Cache<S>
where
    S: Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error = ProxyError>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = BoxFut;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ProxyBody>) -> BoxFut {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(req).await) })
    }
}

impl<S> Cache<S>
where
    S: Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error = ProxyError>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    /// Finishes a response: strips Seawall-only fields, adds `Cache-Status` and `X-Cache`.
    fn decorate(&self, mut res: Response<ProxyBody>, outcome: &Outcome) -> Response<ProxyBody> {
        let collapsed = res.extensions().get::<Collapsed>().is_some();
        let h = res.headers_mut();
        // Every removal hashes; most responses carry none of these, so look first.
        if h.keys().any(|k| self.shared.strip_downstream.contains(k)) {
            for n in &self.shared.strip_downstream {
                h.remove(n);
            }
        }
        let rendered = outcome.render(&self.shared.name, collapsed);
        if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(rendered)) {
            h.insert(CACHE_STATUS, v);
        }
        if self.shared.x_cache {
            h.insert(
                HeaderName::from_static("x-cache"),
                HeaderValue::from_static(outcome.x_cache()),
            );
        }
        let mut served = outcome.served(collapsed);
        // A forwarded response the cache may not keep (no-store, private, hit-for-pass, ...)
        // could never have been a hit: it stays out of the hit ratio. `X-Cache` still says MISS.
        if served.class == CacheClass::Miss
            && matches!(res.extensions().get::<Share>(), Some(Share::Personal(_)))
        {
            served.class = CacheClass::Uncacheable;
        }
        res.extensions_mut().insert(served);
        let s = &self.shared.stats;
        match outcome {
            Outcome::Hit {
                detail: None | Some("shared"),
                ..
            } => &s.hits,
            Outcome::Hit { .. } | Outcome::StaleOnError { .. } => &s.stale,
            Outcome::Revalidated { status: 304, .. } => &s.revalidated,
            Outcome::Miss { .. } | Outcome::Revalidated { .. } => &s.misses,
            Outcome::Bypass(_) => &s.bypass,
        }
        .fetch_add(1, Ordering::Relaxed);
        res
    }

    fn error(&self, e: ProxyError, fwd: &'static str) -> Response<ProxyBody> {
        if let ProxyError::Internal(what) = e {
            // A bug of ours: the client reads only `detail=internal`, the log says which.
            tracing::error!(invariant = what, "Internal invariant failed.");
        }
        let outcome = match e {
            ProxyError::CircuitOpen { .. } => Outcome::Bypass("circuit-open"),
            _ => Outcome::Miss {
                fwd,
                stored: false,
                detail: Some(e.reason()),
            },
        };
        let res = e.to_response(&outcome.render(&self.shared.name, false));
        self.decorate(res, &outcome)
    }

    async fn pass(&self, req: Request<ProxyBody>, reason: &'static str) -> Response<ProxyBody> {
        match self.inner.clone().oneshot(req).await {
            Ok(res) => self.decorate(res, &Outcome::Bypass(reason)),
            Err(e) => {
                let status = format!("{}; fwd=bypass; detail={}", self.shared.name, e.reason());
                e.to_response(&status)
            }
        }
    }

    async fn handle(&self, req: Request<ProxyBody>) -> Response<ProxyBody> {
        let Some(route) = req.extensions().get::<Arc<Route>>().cloned() else {
            return self.pass(req, "no-route").await;
        };
        if !self.shared.enabled.load(Ordering::Relaxed) {
            return self.pass(req, "cache-disabled").await;
        }
        if !route.cache.enabled {
            return self.pass(req, "route-disabled").await;
        }
        match *req.method() {
            Method::GET | Method::HEAD => {}
            // RFC 9110 §9.2.1: only these are known to be safe. CONNECT names no resource.
            Method::OPTIONS | Method::TRACE | Method::CONNECT => {
                return self.pass(req, "method").await;
            }
            // RFC 9111 §4.4: any other method, extension methods included, may change the
            // target.
            _ => return self.unsafe_method(req, &route).await,
        }
        if crate::http_util::is_upgrade(&req) {
            return self.pass(req, "upgrade").await;
        }
        if !req.body().is_end_stream() {
            return self.pass(req, "request-body").await;
        }
        // Dropped parameters that could hide others: the key would not say what the origin
        // answered, so the request is neither stored nor collapsed with others.
        if let Some(q) = req.uri().query()
            && key::ambiguous_query(q, &route.cache.ignore_query_params)
        {
            return self.pass(req, "ambiguous-query").await;
        }
        let now = self.shared.clock.now();
        let req_cc = policy::request_cc(req.headers());
        let primary = key::primary_key(&req, &route.cache);
        match self.shared.store.lookup(&primary, req.headers()) {
            Lookup::Hit(entry) => match policy::evaluate(&entry.fresh, &req_cc, now) {
                Decision::Fresh => {
                    let ttl = policy::ttl_secs(&entry.fresh, now);
                    self.serve(&req, &entry, now, Outcome::Hit { ttl, detail: None })
                }
                Decision::StaleAccepted => {
                    let ttl = policy::ttl_secs(&entry.fresh, now);
                    self.serve(
                        &req,
                        &entry,
                        now,
                        Outcome::Hit {
                            ttl,
                            detail: Some("max-stale"),
                        },
                    )
                }
                Decision::StaleWhileRevalidate => {
                    self.refresh_in_background(
                        &req,
                        &route,
                        &entry,
                        primary.clone(),
                        req_cc.clone(),
                        now,
                    );
                    let ttl = policy::ttl_secs(&entry.fresh, now);
                    self.serve(
                        &req,
                        &entry,
                        now,
                        Outcome::Hit {
                            ttl,
                            detail: Some("stale-while-revalidate"),
                        },
                    )
                }
                Decision::Revalidate(why) => {
                    if req_cc.only_if_cached {
                        return self.error(ProxyError::OnlyIfCached, "stale");
                    }
                    self.revalidate(req, route, entry, primary, req_cc, why, now)
                        .await
                }
            },
            lookup => {
                if req_cc.only_if_cached {
                    return self.error(ProxyError::OnlyIfCached, "uri-miss");
                }
                let fwd = if matches!(lookup, Lookup::VaryMiss) {
                    "vary-miss"
                } else {
                    "uri-miss"
                };
                self.miss(req, route, primary, req_cc, fwd, now).await
            }
        }
    }

    /// A request prepared for a shared fetch: client conditionals and unkeyed overrides removed.
    fn fetch_request(&self, req: &Request<ProxyBody>) -> Request<ProxyBody> {
        self.fetch_request_with(req.uri(), req.version(), req.extensions(), req.headers())
    }

    /// [`Self::fetch_request`] from a request's parts, with `headers` in place of theirs.
    fn fetch_request_from(
        &self,
        parts: &http::request::Parts,
        headers: &HeaderMap,
    ) -> Request<ProxyBody> {
        self.fetch_request_with(&parts.uri, parts.version, &parts.extensions, headers)
    }

    fn fetch_request_with(
        &self,
        uri: &http::Uri,
        version: http::Version,
        extensions: &http::Extensions,
        headers: &HeaderMap,
    ) -> Request<ProxyBody> {
        let mut out = Request::new(ProxyBody::empty());
        *out.method_mut() = Method::GET;
        *out.uri_mut() = uri.clone();
        *out.version_mut() = version;
        let mut h = headers.clone();
        // Removals hash; find the few that apply in one pass over the names.
        let drop: Vec<HeaderName> = h
            .keys()
            .filter(|n| {
                *n == header::IF_NONE_MATCH
                    || *n == header::IF_MODIFIED_SINCE
                    || *n == header::IF_RANGE
                    || *n == header::RANGE
                    || self.shared.unkeyed.contains(n)
            })
            .cloned()
            .collect();
        for n in drop {
            h.remove(n);
        }
        *out.headers_mut() = h;
        if let Some(r) = extensions.get::<Arc<Route>>() {
            out.extensions_mut().insert(r.clone());
        }
        if let Some(c) = extensions.get::<crate::http_util::conn::ConnInfo>() {
            out.extensions_mut().insert(c.clone());
        }
        // The breaker counts a failure against the client whose request caused it.
        if let Some(c) = extensions.get::<crate::http_util::ClientAddr>() {
            out.extensions_mut().insert(*c);
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn plan(
        &self,
        req_headers: HeaderMap,
        route: &Arc<Route>,
        key: Arc<str>,
        primary: Arc<str>,
        req_cc: CacheControl,
        conditional: bool,
        now: SystemTime,
    ) -> Arc<FetchPlan> {
        Arc::new(FetchPlan {
            key,
            primary,
            route: route.clone(),
            req_headers,
            req_cc,
            request_time: now,
            conditional,
            shared: self.shared.clone(),
        })
    }

    async fn miss(
        &self,
        req: Request<ProxyBody>,
        route: Arc<Route>,
        primary: Arc<str>,
        req_cc: CacheControl,
        fwd: &'static str,
        now: SystemTime,
    ) -> Response<ProxyBody> {
        // HEAD and Range misses pass through as they are (the stored GET serves them later).
        if req.method() == Method::HEAD || req.headers().contains_key(header::RANGE) {
            return match self.inner.clone().oneshot(req).await {
                Ok(res) => self.decorate(
                    res,
                    &Outcome::Miss {
                        fwd,
                        stored: false,
                        detail: None,
                    },
                ),
                Err(e) => self.error(e, fwd),
            };
        }
        // The plan keeps the client's headers (moved); the fetch gets the one copy.
        let (parts, _) = req.into_parts();
        let mut up = self.fetch_request_from(&parts, &parts.headers);
        let plan = self.plan(
            parts.headers,
            &route,
            primary.clone(),
            primary,
            req_cc,
            false,
            now,
        );
        up.extensions_mut().insert(plan.clone());
        match self.inner.clone().oneshot(up).await {
            Ok(res) if res.extensions().get::<SharedHit>().is_some() => {
                // The client's request head again (its headers went into the plan).
                let mut req = Request::new(ProxyBody::empty());
                *req.method_mut() = parts.method.clone();
                *req.headers_mut() = plan.req_headers.clone();
                self.serve_shared(&req, &res)
            }
            Ok(res) => {
                let share = res.extensions().get::<Share>().copied();
                let detail = match share {
                    Some(Share::Personal(r)) => Some(r.as_str()),
                    _ => None,
                };
                let declared = res
                    .headers()
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                // Only what is known at the head: a body of unknown length may still run
                // past max_object_size and be dropped, so it is not announced as stored.
                let stored = share.is_some_and(|s| s.storable())
                    && declared.is_some_and(|n| n <= self.shared.max_object_size);
                let res = answer_conditional_to(&parts.method, &plan.req_headers, res);
                self.decorate(
                    res,
                    &Outcome::Miss {
                        fwd,
                        stored,
                        detail,
                    },
                )
            }
            Err(e) => self.error(e, fwd),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn revalidate(
        &self,
        req: Request<ProxyBody>,
        route: Arc<Route>,
        entry: Arc<Entry>,
        primary: Arc<str>,
        req_cc: CacheControl,
        why: Revalidate,
        now: SystemTime,
    ) -> Response<ProxyBody> {
        let fwd = if why == Revalidate::Request {
            "request"
        } else {
            "stale"
        };
        let (up, plan) = self.conditional_request(&req, &route, &entry, primary, req_cc, now);
        match self.inner.clone().oneshot(up).await {
            // Another replica refreshed it: its copy is in memory now too.
            Ok(res) if res.extensions().get::<SharedHit>().is_some() => {
                self.serve_shared(&req, &res)
            }
            Ok(res) if res.status() == StatusCode::NOT_MODIFIED && plan.conditional => {
                let refreshed =
                    self.shared
                        .refresh(&entry, &plan, res.headers(), self.shared.clock.now());
                let collapsed = res.extensions().get::<Collapsed>().is_some();
                let mut out = self.serve(
                    &req,
                    &refreshed,
                    self.shared.clock.now(),
                    Outcome::Revalidated {
                        fwd,
                        status: 304,
                        stored: true,
                    },
                );
                // A cookie on a 304 belongs to the client whose request revalidated; the
                // requests that shared its revalidation never receive it.
                if !plan.route.cache.cache_set_cookie && !collapsed {
                    for c in res.headers().get_all(header::SET_COOKIE) {
                        out.headers_mut().append(header::SET_COOKIE, c.clone());
                    }
                }
                if collapsed {
                    out = self.decorate_collapsed(
                        out,
                        &Outcome::Revalidated {
                            fwd,
                            status: 304,
                            stored: true,
                        },
                    );
                }
                out
            }
            Ok(res)
                if policy::is_error_status(res.status())
                    && policy::stale_if_error_ok(&entry.fresh, self.shared.clock.now()) =>
            {
                let status = res.status().as_u16();
                drop(res);
                self.serve(
                    &req,
                    &entry,
                    self.shared.clock.now(),
                    Outcome::StaleOnError {
                        status: Some(status),
                        detail: "stale-if-error",
                    },
                )
            }
            Ok(res) => {
                let declared = res
                    .headers()
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                let stored = res
                    .extensions()
                    .get::<Share>()
                    .is_some_and(|s| s.storable())
                    && declared.is_some_and(|n| n <= self.shared.max_object_size);
                let status = res.status().as_u16();
                let res = answer_conditional(&req, res);
                self.decorate(
                    res,
                    &Outcome::Revalidated {
                        fwd,
                        status,
                        stored,
                    },
                )
            }
            Err(e) => self.stale_or_error(&req, &entry, e, fwd),
        }
    }

    /// Answers from the shared tier's copy that `res` carries.
    fn serve_shared(
        &self,
        req: &Request<ProxyBody>,
        res: &Response<ProxyBody>,
    ) -> Response<ProxyBody> {
        let Some(SharedHit(entry)) = res.extensions().get::<SharedHit>() else {
            return self.error(ProxyError::Internal("shared copy lost"), "uri-miss");
        };
        let now = self.shared.clock.now();
        let ttl = policy::ttl_secs(&entry.fresh, now);
        let outcome = Outcome::Hit {
            ttl,
            detail: Some("shared"),
        };
        self.serve(req, entry, now, outcome)
    }

    fn decorate_collapsed(
        &self,
        mut res: Response<ProxyBody>,
        outcome: &Outcome,
    ) -> Response<ProxyBody> {
        if let Ok(v) = HeaderValue::from_str(&outcome.render(&self.shared.name, true)) {
            res.headers_mut()
                .insert(HeaderName::from_static("cache-status"), v);
        }
        res
    }

    /// After a failed forward: the stored copy if the rules allow it, else the error.
    fn stale_or_error(
        &self,
        req: &Request<ProxyBody>,
        entry: &Arc<Entry>,
        e: ProxyError,
        fwd: &'static str,
    ) -> Response<ProxyBody> {
        let now = self.shared.clock.now();
        let failure = e.is_upstream_failure()
            || matches!(
                e,
                ProxyError::CircuitOpen { .. }
                    | ProxyError::TooManyWaiters
                    | ProxyError::WaitTimeout
                    | ProxyError::UpstreamOverloaded
            );
        // RFC 9111 §4.2.4: an origin that cannot be reached at all (nothing answered) may be
        // stood in for a while, even without stale-if-error.
        let unreachable = matches!(
            e,
            ProxyError::UpstreamConnect(_)
                | ProxyError::UpstreamReset(_)
                | ProxyError::CircuitOpen { .. }
        );
        let window = req
            .extensions()
            .get::<Arc<Route>>()
            .map_or(Duration::ZERO, |r| r.cache.stale_if_unreachable);
        let stale = if failure && policy::stale_if_error_ok(&entry.fresh, now) {
            Some("stale-if-error")
        } else if unreachable && policy::stale_if_unreachable_ok(&entry.fresh, window, now) {
            Some("stale-if-unreachable")
        } else {
            None
        };
        if let Some(detail) = stale {
            let outcome = match e {
                ProxyError::CircuitOpen { .. } => Outcome::Hit {
                    ttl: policy::ttl_secs(&entry.fresh, now),
                    detail: Some("circuit-open"),
                },
                _ => Outcome::StaleOnError {
                    status: None,
                    detail,
                },
            };
            return self.serve(req, entry, now, outcome);
        }
        // A stored copy existed but could not be used: the error says so.
        match e {
            ProxyError::CircuitOpen { .. } => self.error(e, fwd),
            _ => self.error(e, "stale"),
        }
    }

    fn conditional_request(
        &self,
        req: &Request<ProxyBody>,
        route: &Arc<Route>,
        entry: &Arc<Entry>,
        primary: Arc<str>,
        req_cc: CacheControl,
        now: SystemTime,
    ) -> (Request<ProxyBody>, Arc<FetchPlan>) {
        let mut up = self.fetch_request(req);
        let mut key = String::from(&*primary);
        let mut conditional = false;
        if let Some(etag) = entry.etag() {
            up.headers_mut().insert(header::IF_NONE_MATCH, etag.clone());
            key.push_str("\u{1}e:");
            key.push_str(etag.to_str().unwrap_or(""));
            conditional = true;
        }
        if let Some(lm) = entry.last_modified() {
            up.headers_mut()
                .insert(header::IF_MODIFIED_SINCE, lm.clone());
            key.push_str("\u{1}m:");
            key.push_str(lm.to_str().unwrap_or(""));
            conditional = true;
        }
        let plan = self.plan(
            req.headers().clone(),
            route,
            key.into(),
            primary,
            req_cc,
            conditional,
            now,
        );
        up.extensions_mut().insert(plan.clone());
        (up, plan)
    }

    fn refresh_in_background(
        &self,
        req: &Request<ProxyBody>,
        route: &Arc<Route>,
        entry: &Arc<Entry>,
        primary: Arc<str>,
        req_cc: CacheControl,
        now: SystemTime,
    ) {
        {
            let mut r = self
                .shared
                .refreshing
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if !r.insert(primary.clone()) {
                return;
            }
        }
        let (up, plan) = self.conditional_request(req, route, entry, primary.clone(), req_cc, now);
        let inner = self.inner.clone();
        let shared = self.shared.clone();
        let entry = entry.clone();
        let span = tracing::info_span!("revalidate", seawall.key = %primary);
        tokio::spawn(async move {
            if let Ok(res) = inner.oneshot(up).instrument(span).await
                && res.status() == StatusCode::NOT_MODIFIED
                && plan.conditional
            {
                shared.refresh(&entry, &plan, res.headers(), shared.clock.now());
            }
            // A 200 is stored by its fill; errors leave the stale entry for stale-if-error.
            shared
                .refreshing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&primary);
        });
    }

    async fn unsafe_method(
        &self,
        req: Request<ProxyBody>,
        route: &Arc<Route>,
    ) -> Response<ProxyBody> {
        let primary = key::primary_key(&req, &route.cache);
        let host = crate::http_util::request_host(&req).map(str::to_string);
        match self.inner.clone().oneshot(req).await {
            Ok(res) => {
                // RFC 9111 §4.4: a non-error response invalidates the target and same-origin
                // Location / Content-Location.
                if route.cache.invalidate_on_unsafe
                    && (res.status().is_success() || res.status().is_redirection())
                {
                    self.shared.store.remove(&primary);
                    // The shared copy goes too, or this replica's next miss would read it back.
                    if let Some(t) = self.shared.tier().cloned() {
                        let k = primary.clone();
                        tokio::spawn(async move { t.invalidate(&k).await });
                    }
                    for h in [header::LOCATION, header::CONTENT_LOCATION] {
                        if let Some(k) = res
                            .headers()
                            .get(&h)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|loc| same_origin_key(loc, host.as_deref(), route))
                        {
                            self.shared.store.remove(&k);
                            if let Some(t) = self.shared.tier().cloned() {
                                tokio::spawn(async move { t.invalidate(&k).await });
                            }
                        }
                    }
                }
                self.decorate(res, &Outcome::Bypass("method"))
            }
            Err(e) => {
                let status = format!("{}; fwd=bypass; detail={}", self.shared.name, e.reason());
                e.to_response(&status)
            }
        }
    }

    /// A response from a stored entry: Age, conditional (304) and Range (206) handling.
    fn serve(
        &self,
        req: &Request<ProxyBody>,
        entry: &Arc<Entry>,
        now: SystemTime,
        outcome: Outcome,
    ) -> Response<ProxyBody> {
        entry.hit();
        let head = req.method() == Method::HEAD;
        let mut res = Response::new(if head {
            ProxyBody::empty()
        } else {
            ProxyBody::full(entry.body.clone())
        });
        *res.status_mut() = entry.status;
        *res.headers_mut() = entry.headers.clone();
        let age = policy::current_age(&entry.fresh, now).as_secs();
        res.headers_mut()
            .insert(header::AGE, HeaderValue::from(age));
        if !entry.fresh.cc.no_cache_fields.is_empty() && matches!(outcome, Outcome::Hit { .. }) {
            // Qualified no-cache: those fields are not reused without revalidation.
            for f in &entry.fresh.cc.no_cache_fields {
                res.headers_mut().remove(f.as_str());
            }
        }
        let res = answer_conditional(req, res);
        let res = if res.status() == StatusCode::OK && !head {
            answer_range(req, res, &entry.body)
        } else {
            res
        };
        self.decorate(res, &outcome)
    }
}

/// The key of a same-origin `Location`/`Content-Location`.
fn same_origin_key(loc: &str, host: Option<&str>, route: &Route) -> Option<Arc<str>> {
    let uri: http::Uri = loc.parse().ok()?;
    let target_host = match uri.authority() {
        Some(a) => {
            if host.is_none_or(|h| key::normalise_host(h) != key::normalise_host(a.as_str())) {
                return None;
            }
            a.as_str().to_string()
        }
        None => host?.to_string(),
    };
    let host = route.cache.cache_host.as_deref().unwrap_or(&target_host);
    Some(key::build_key(
        host,
        uri.path(),
        uri.query(),
        &route.cache.ignore_query_params,
    ))
}

/// RFC 9110 §13.1–13.2: answers a client's `If-None-Match` / `If-Modified-Since` on a 200.
fn answer_conditional(req: &Request<ProxyBody>, res: Response<ProxyBody>) -> Response<ProxyBody> {
    answer_conditional_to(req.method(), req.headers(), res)
}

/// [`answer_conditional`] for a request given by its method and header fields.
fn answer_conditional_to(
    method: &Method,
    h: &HeaderMap,
    mut res: Response<ProxyBody>,
) -> Response<ProxyBody> {
    if res.status() != StatusCode::OK || !(method == Method::GET || method == Method::HEAD) {
        return res;
    }
    let not_modified = if let Some(inm) = h.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok())
    {
        res.headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|etag| policy::none_match(inm, etag))
    } else if let Some(ims) = h
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(date::parse_http_date)
    {
        res.headers()
            .get(header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(date::parse_http_date)
            .is_some_and(|lm| lm <= ims)
    } else {
        false
    };
    if not_modified {
        *res.status_mut() = StatusCode::NOT_MODIFIED;
        *res.body_mut() = ProxyBody::empty();
        for n in [
            header::CONTENT_LENGTH,
            header::CONTENT_TYPE,
            header::CONTENT_ENCODING,
            header::CONTENT_LANGUAGE,
            header::CONTENT_RANGE,
            header::TRANSFER_ENCODING,
        ] {
            res.headers_mut().remove(n);
        }
    }
    res
}

/// Single byte ranges from a stored 200 (RFC 9110 §14); anything else gets the full 200.
fn answer_range(
    req: &Request<ProxyBody>,
    mut res: Response<ProxyBody>,
    body: &Bytes,
) -> Response<ProxyBody> {
    let Some(range) = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
    else {
        return res;
    };
    if let Some(ir) = req
        .headers()
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
    {
        let etag = res
            .headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok());
        let lm = res
            .headers()
            .get(header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok());
        // If-Range needs a strong match.
        let matches = if ir.starts_with('"') {
            etag == Some(ir)
        } else {
            lm == Some(ir)
        };
        if !matches {
            return res;
        }
    }
    let len = body.len() as u64;
    let Some(spec) = range.trim().strip_prefix("bytes=") else {
        return res;
    };
    if spec.contains(',') {
        return res;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return res;
    };
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => match n.parse::<u64>() {
            Ok(n) if n > 0 => (len.saturating_sub(n), len.saturating_sub(1)),
            _ => return res,
        },
        (s, "") => match s.parse::<u64>() {
            Ok(s) => (s, len.saturating_sub(1)),
            _ => return res,
        },
        (s, e) => match (s.parse::<u64>(), e.parse::<u64>()) {
            (Ok(s), Ok(e)) if s <= e => (s, e.min(len.saturating_sub(1))),
            _ => return res,
        },
    };
    if start >= len || len == 0 {
        *res.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
        *res.body_mut() = ProxyBody::empty();
        res.headers_mut().remove(header::CONTENT_LENGTH);
        if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
            res.headers_mut().insert(header::CONTENT_RANGE, v);
        }
        return res;
    }
    *res.status_mut() = StatusCode::PARTIAL_CONTENT;
    *res.body_mut() = ProxyBody::full(body.slice(start as usize..=end as usize));
    res.headers_mut().remove(header::CONTENT_LENGTH);
    if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
        res.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    res
}
