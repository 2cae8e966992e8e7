//! The HTTP cache layer (RFC 9111 shared cache, RFC 9211 `Cache-Status`). Hits are answered
//! here from memory; misses and revalidations go below with a `FetchPlan` that the coalescing
//! phase (`coalesce`) uses to share the fetch and to store the complete response. This file is
//! the service and its decision tree; `shared` holds the state and clock, `outcome` the
//! `Cache-Status` vocabulary, `respond` the RFC 9110 responders, `plan` the miss contract.

pub mod cache_control;
pub mod coalesce;
pub mod compress;
pub mod date;
pub mod entry;
pub mod fill;
pub mod governor;
pub mod key;
pub(crate) mod metrics;
pub mod ops;
mod outcome;
pub mod plan;
pub mod policy;
mod respond;
mod shared;
pub mod store;
#[cfg(test)]
pub(crate) mod tests;
mod view;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Body as _;
use tower::{Layer, Service, ServiceExt};
use tracing::Instrument as _;

use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::route::Route;
use crate::telemetry::metrics::CacheClass;
use cache_control::CacheControl;
use entry::Entry;
use plan::{Collapsed, FetchPlan, Share, SharedHit};
use policy::{Decision, Revalidate};
use store::Lookup;

use outcome::{CACHE_STATUS, Detail, Outcome};
use respond::{answer_body, answer_conditional, answer_conditional_to};
pub use shared::{BUILTIN_UNKEYED_REQUEST_HEADERS, CacheShared, CacheStats, Clock};

/// What the decision tree knows about a cacheable request once it has looked it up; each
/// branch (miss, revalidation, background refresh) takes it whole and it becomes the plan.
#[derive(Clone)]
struct LookupCtx {
    route: Arc<Route>,
    /// The primary key (the entry's key before variants).
    primary: Arc<str>,
    req_cc: CacheControl,
    now: SystemTime,
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
                detail: None | Some(Detail::Shared),
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
            ProxyError::CircuitOpen { .. } => Outcome::Bypass(Detail::CircuitOpen),
            _ => Outcome::Miss {
                fwd,
                stored: false,
                detail: Some(Detail::Error(e.reason())),
            },
        };
        let res = e.to_response(&outcome.render(&self.shared.name, false));
        self.decorate(res, &outcome)
    }

    async fn pass(&self, req: Request<ProxyBody>, reason: Detail) -> Response<ProxyBody> {
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
            return self.pass(req, Detail::NoRoute).await;
        };
        if !self.shared.enabled.load(Ordering::Relaxed) {
            return self.pass(req, Detail::CacheDisabled).await;
        }
        if !route.cache.enabled {
            return self.pass(req, Detail::RouteDisabled).await;
        }
        match *req.method() {
            Method::GET | Method::HEAD => {}
            // RFC 9110 §9.2.1: only these are known to be safe. CONNECT names no resource.
            Method::OPTIONS | Method::TRACE | Method::CONNECT => {
                return self.pass(req, Detail::Method).await;
            }
            // RFC 9111 §4.4: any other method, extension methods included, may change the
            // target.
            // Boxed, as revalidation below: the rarer paths' state would otherwise sit in
            // every request's future and be moved with it.
            _ => return Box::pin(self.unsafe_method(req, &route)).await,
        }
        if crate::http_util::is_upgrade(&req) {
            return self.pass(req, Detail::Upgrade).await;
        }
        if !req.body().is_end_stream() {
            return self.pass(req, Detail::RequestBody).await;
        }
        // Dropped parameters that could hide others: the key would not say what the origin
        // answered, so the request is neither stored nor collapsed with others.
        if let Some(q) = req.uri().query()
            && key::ambiguous_query(q, &route.cache.ignore_query_params)
        {
            return self.pass(req, Detail::AmbiguousQuery).await;
        }
        let now = self.shared.clock.now();
        let cx = LookupCtx {
            req_cc: policy::request_cc(req.headers()),
            primary: key::primary_key(&req, &route.cache),
            route,
            now,
        };
        match self.shared.store.lookup(&cx.primary, req.headers()) {
            Lookup::Hit(entry) => match policy::evaluate(&entry.fresh, &cx.req_cc, now) {
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
                            detail: Some(Detail::MaxStale),
                        },
                    )
                }
                Decision::StaleWhileRevalidate => {
                    self.refresh_in_background(&req, &cx, &entry);
                    let ttl = policy::ttl_secs(&entry.fresh, now);
                    self.serve(
                        &req,
                        &entry,
                        now,
                        Outcome::Hit {
                            ttl,
                            detail: Some(Detail::StaleWhileRevalidate),
                        },
                    )
                }
                Decision::Revalidate(why) => {
                    if cx.req_cc.only_if_cached {
                        return self.error(ProxyError::OnlyIfCached, "stale");
                    }
                    Box::pin(self.revalidate(req, cx, entry, why)).await
                }
            },
            lookup => {
                if cx.req_cc.only_if_cached {
                    return self.error(ProxyError::OnlyIfCached, "uri-miss");
                }
                let fwd = if matches!(lookup, Lookup::VaryMiss) {
                    "vary-miss"
                } else {
                    "uri-miss"
                };
                self.miss(req, cx, fwd).await
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
        // Removals hash; find the few that apply in one pass over the names, and allocate
        // the list only when there is one (most requests carry none).
        let dropped = |n: &HeaderName| {
            *n == header::IF_NONE_MATCH
                || *n == header::IF_MODIFIED_SINCE
                || *n == header::IF_RANGE
                || *n == header::RANGE
                || self.shared.unkeyed.contains(n)
        };
        if h.keys().any(dropped) {
            let drop: Vec<HeaderName> = h.keys().filter(|n| dropped(n)).cloned().collect();
            for n in drop {
                h.remove(n);
            }
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

    fn plan(
        &self,
        req_headers: HeaderMap,
        cx: LookupCtx,
        key: Arc<str>,
        conditional: bool,
    ) -> Arc<FetchPlan> {
        Arc::new(FetchPlan {
            key,
            primary: cx.primary,
            route: cx.route,
            req_headers,
            req_cc: cx.req_cc,
            request_time: cx.now,
            conditional,
            shared: self.shared.clone(),
        })
    }

    async fn miss(
        &self,
        req: Request<ProxyBody>,
        cx: LookupCtx,
        fwd: &'static str,
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
        let key = cx.primary.clone();
        let plan = self.plan(parts.headers, cx, key, false);
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
                    Some(Share::Personal(r)) => Some(Detail::NotStorable(r)),
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

    async fn revalidate(
        &self,
        req: Request<ProxyBody>,
        cx: LookupCtx,
        entry: Arc<Entry>,
        why: Revalidate,
    ) -> Response<ProxyBody> {
        let fwd = if why == Revalidate::Request {
            "request"
        } else {
            "stale"
        };
        let (up, plan) = self.conditional_request(&req, cx, &entry);
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
                        detail: Detail::StaleIfError,
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
            detail: Some(Detail::Shared),
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
            Some(Detail::StaleIfError)
        } else if unreachable && policy::stale_if_unreachable_ok(&entry.fresh, window, now) {
            Some(Detail::StaleIfUnreachable)
        } else {
            None
        };
        if let Some(detail) = stale {
            let outcome = match e {
                ProxyError::CircuitOpen { .. } => Outcome::Hit {
                    ttl: policy::ttl_secs(&entry.fresh, now),
                    detail: Some(Detail::CircuitOpen),
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
        cx: LookupCtx,
        entry: &Arc<Entry>,
    ) -> (Request<ProxyBody>, Arc<FetchPlan>) {
        let mut up = self.fetch_request(req);
        let mut key = String::from(&*cx.primary);
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
        let plan = self.plan(req.headers().clone(), cx, key.into(), conditional);
        up.extensions_mut().insert(plan.clone());
        (up, plan)
    }

    fn refresh_in_background(&self, req: &Request<ProxyBody>, cx: &LookupCtx, entry: &Arc<Entry>) {
        // Memory is short: the stale copy is served, the refresh waits for a later request.
        if self.shared.memory.skip_background() {
            return;
        }
        let primary = cx.primary.clone();
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
        let (up, plan) = self.conditional_request(req, cx.clone(), entry);
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
                    let mut keys = vec![primary];
                    for h in [header::LOCATION, header::CONTENT_LOCATION] {
                        if let Some(k) = res
                            .headers()
                            .get(&h)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|loc| same_origin_key(loc, host.as_deref(), route))
                        {
                            keys.push(k);
                        }
                    }
                    // Keyed by scheme, the URI names an entry under each scheme.
                    if route.cache.key_scheme {
                        keys = keys
                            .into_iter()
                            .flat_map(|k| {
                                let http = k
                                    .strip_prefix("https://")
                                    .map_or_else(|| k.clone(), |r| format!("http://{r}").into());
                                key::both_schemes(http)
                            })
                            .collect();
                    }
                    for k in keys {
                        self.shared.store.remove(&k);
                        // The shared copy goes too, or this replica's next miss would read it
                        // back.
                        if let Some(t) = self.shared.tier().cloned() {
                            tokio::spawn(async move { t.invalidate(&k).await });
                        }
                    }
                }
                self.decorate(res, &Outcome::Bypass(Detail::Method))
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
        // The representation this client gets (HEAD reports the one a GET would get).
        let repr = compress::Repr::choose(req.headers(), entry);
        let mut res = Response::new(ProxyBody::empty());
        *res.status_mut() = entry.status;
        *res.headers_mut() = entry.headers.clone();
        repr.head(res.headers_mut(), entry.body.len());
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
        // HEAD and 304s go without a body; ranges are answered on 200s only (and only 200s
        // are ever encoded).
        let mut res = res;
        if !head && res.status() == StatusCode::OK {
            let decoded = &self.shared.compressor.stats.decoded;
            res = answer_body(req, res, entry, repr, decoded);
        } else if !head && res.status() == entry.status {
            *res.body_mut() = ProxyBody::full(entry.body.clone());
        }
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
