//! RFC 9111 shared-cache policy as pure functions of (request, stored response, `now`):
//! storability (§3), freshness lifetime (§4.2.1–4.2.2), age (§4.2.3), reuse decisions with the
//! request directives (§5.2.1), and stale serving (RFC 5861, §4.2.4). No clock is read here.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, Method, StatusCode, header};

use super::cache_control::{CacheControl, MaxStale};
use crate::route::RouteCache;

/// Heuristic freshness is capped so that an old `Last-Modified` cannot pin a response for months.
const HEURISTIC_CAP: Duration = Duration::from_secs(24 * 3600);

/// Why a response is not stored (also the `Cache-Status` detail).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotStorable {
    /// The request said `no-store`.
    RequestNoStore,
    /// The response said `no-store`.
    NoStore,
    /// `private` response.
    Private,
    /// Request carried `Authorization` and the response did not allow sharing.
    Authorization,
    /// `Set-Cookie` on a route that does not opt in.
    SetCookie,
    /// Status not final or partial (1xx, 206, 304).
    Status,
    /// `Vary: *`.
    VaryStar,
    /// Varies on a field outside the route's allowlist.
    VaryNotAllowed,
    /// No explicit freshness and not heuristically cacheable.
    NoFreshness,
    /// `must-understand` with a status we do not understand.
    MustUnderstand,
    /// Only an operator lifetime (`default_ttl`, `ttl_override`) would have made it fresh,
    /// and its status is neither heuristically cacheable nor in the route's `ttl_statuses`.
    OperatorTtlStatus,
    /// The request carried `Cookie` or `Authorization` and the origin gave no explicit
    /// freshness and no `public`: no lifetime is borrowed for personal traffic.
    Credentialed,
}

impl NotStorable {
    /// Whether the reason lies in the request (its own `no-store`, credentials, a status it
    /// provoked) rather than in what the origin says about the URL: such a response says
    /// nothing about other requests for the key, so it never marks the key hit-for-pass.
    pub fn caused_by_request(&self) -> bool {
        matches!(
            self,
            Self::RequestNoStore | Self::Credentialed | Self::OperatorTtlStatus
        )
    }

    /// Token for `Cache-Status: ...; detail=`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::RequestNoStore => "request-no-store",
            Self::NoStore => "no-store",
            Self::Private => "private",
            Self::Authorization => "authorization",
            Self::SetCookie => "set-cookie",
            Self::Status => "status",
            Self::VaryStar => "vary-star",
            Self::VaryNotAllowed => "vary-not-allowed",
            Self::NoFreshness => "no-freshness",
            Self::MustUnderstand => "must-understand",
            Self::OperatorTtlStatus => "operator-ttl-status",
            Self::Credentialed => "credentialed",
        }
    }
}

/// Statuses cacheable by default (RFC 9110 §15.1), minus 501: no heuristically cached 5xx.
fn heuristically_cacheable(s: StatusCode) -> bool {
    matches!(
        s.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414
    )
}

/// Statuses whose semantics we implement (for `must-understand`).
fn understood(s: StatusCode) -> bool {
    matches!(
        s.as_u16(),
        200 | 203
            | 204
            | 300
            | 301
            | 302
            | 303
            | 307
            | 308
            | 400
            | 403
            | 404
            | 405
            | 410
            | 414
            | 500
            | 501
            | 502
            | 503
            | 504
    )
}

/// The directives Seawall obeys: the first targeted field present that parses as a
/// Structured Field Dictionary and holds a valid directive (RFC 9213 §2.1-2.2), else
/// `Cache-Control`.
pub fn effective_cc(headers: &HeaderMap, targeted: &[HeaderName]) -> CacheControl {
    for name in targeted {
        if headers.contains_key(name)
            && let Some(cc) = CacheControl::parse_targeted(headers.get_all(name))
            && !cc.is_empty()
        {
            return cc;
        }
    }
    CacheControl::from_headers(headers, &header::CACHE_CONTROL)
}

/// Request directives, with `Pragma: no-cache` honoured when `Cache-Control` is absent.
pub fn request_cc(headers: &HeaderMap) -> CacheControl {
    let mut cc = CacheControl::from_headers(headers, &header::CACHE_CONTROL);
    if !headers.contains_key(header::CACHE_CONTROL)
        && headers
            .get_all(header::PRAGMA)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("no-cache"))
            })
    {
        cc.no_cache = true;
    }
    cc
}

fn has_explicit_freshness(cc: &CacheControl, headers: &HeaderMap) -> bool {
    cc.s_maxage.is_some() || cc.max_age.is_some() || headers.contains_key(header::EXPIRES)
}

/// A request that may carry personal state: it never gets a borrowed (heuristic or operator)
/// lifetime, so a deceived URL cannot put a personal page in front of everyone.
fn credentialed(req: &HeaderMap) -> bool {
    req.contains_key(header::COOKIE) || req.contains_key(header::AUTHORIZATION)
}

/// Statuses an operator lifetime may apply to: the heuristically cacheable ones plus those the
/// route lists, so an error one client provokes (400, 403, 413, 431, ...) never sticks.
fn operator_ttl_status(status: StatusCode, rules: &RouteCache) -> bool {
    heuristically_cacheable(status) || rules.ttl_statuses.contains(&status.as_u16())
}

/// Whether route-level TTL defaults and overrides may apply (never to personal traffic:
/// no cache deception through `default_ttl`/`ttl_override`).
fn operator_ttl_allowed(
    req: &HeaderMap,
    res: &HeaderMap,
    status: StatusCode,
    rules: &RouteCache,
) -> bool {
    !credentialed(req)
        && !res.contains_key(header::SET_COOKIE)
        && operator_ttl_status(status, rules)
}

/// RFC 9111 §3 for a shared cache, plus Seawall's own rules.
pub fn storable(
    method: &Method,
    req: &HeaderMap,
    req_cc: &CacheControl,
    status: StatusCode,
    res: &HeaderMap,
    cc: &CacheControl,
    rules: &RouteCache,
) -> Result<(), NotStorable> {
    if *method != Method::GET {
        return Err(NotStorable::Status);
    }
    if req_cc.no_store {
        return Err(NotStorable::RequestNoStore);
    }
    if status.is_informational()
        || status == StatusCode::PARTIAL_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Err(NotStorable::Status);
    }
    if cc.must_understand {
        if !understood(status) {
            return Err(NotStorable::MustUnderstand);
        }
    } else if cc.no_store {
        return Err(NotStorable::NoStore);
    }
    if cc.private {
        return Err(NotStorable::Private);
    }
    if req.contains_key(header::AUTHORIZATION)
        && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate)
    {
        return Err(NotStorable::Authorization);
    }
    if res.contains_key(header::SET_COOKIE) && !rules.cache_set_cookie {
        return Err(NotStorable::SetCookie);
    }
    match super::key::vary_fields(res) {
        None => return Err(NotStorable::VaryStar),
        Some(fields) => {
            if let Some(allow) = &rules.vary_allowlist
                && fields.iter().any(|f| !allow.contains(f))
            {
                return Err(NotStorable::VaryNotAllowed);
            }
        }
    }
    if has_explicit_freshness(cc, res) {
        return Ok(());
    }
    let public = cc.public && !status.is_server_error();
    if credentialed(req) {
        // RFC 9111 §4.2.2: heuristics are optional; a personal request gets none.
        return if public {
            Ok(())
        } else {
            Err(NotStorable::Credentialed)
        };
    }
    if heuristically_cacheable(status) || public {
        return Ok(());
    }
    let operator = rules.default_ttl.is_some() || rules.ttl_override.is_some();
    if operator && !res.contains_key(header::SET_COOKIE) {
        if operator_ttl_status(status, rules) {
            return Ok(());
        }
        return Err(NotStorable::OperatorTtlStatus);
    }
    Err(NotStorable::NoFreshness)
}

/// What is fixed about a stored response's freshness when it is stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Freshness {
    /// The effective response directives.
    pub cc: CacheControl,
    /// Freshness lifetime after route rules.
    pub lifetime: Duration,
    /// Age when received (§4.2.3 `corrected_initial_age`).
    pub initial_age: Duration,
    /// When the response was received.
    pub response_time: SystemTime,
    /// Lifetime came from the heuristic.
    pub heuristic: bool,
    /// The response carried `Set-Cookie` (stored only on opted-in routes; never served stale
    /// through a client's `max-stale`).
    pub set_cookie: bool,
    /// Route-level stale-if-error window.
    pub route_stale_if_error: Option<Duration>,
}

fn http_date(headers: &HeaderMap, name: HeaderName) -> Option<Result<SystemTime, ()>> {
    let v = headers.get(name)?;
    Some(
        v.to_str()
            .ok()
            .and_then(super::date::parse_http_date)
            .ok_or(()),
    )
}

/// RFC 9111 §5.1: `Age` as a list uses its first member; an invalid value (not digits only:
/// negative, fractional, trailing junk, not text) is ignored as if absent.
pub fn age_value(headers: &HeaderMap) -> Option<u64> {
    let first = headers
        .get_all(header::AGE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&c| c == b','))
        .map(<[u8]>::trim_ascii)
        .find(|m| !m.is_empty())?;
    super::cache_control::parse_delta_seconds(std::str::from_utf8(first).ok()?)
}

/// §4.2.1 (with §4.2.2 heuristics and route rules) and §4.2.3 at receipt.
pub fn freshness(
    status: StatusCode,
    req: &HeaderMap,
    res: &HeaderMap,
    cc: CacheControl,
    request_time: SystemTime,
    response_time: SystemTime,
    rules: &RouteCache,
) -> Freshness {
    let date = match http_date(res, header::DATE) {
        Some(Ok(d)) => d,
        _ => response_time,
    };
    let operator_ok = operator_ttl_allowed(req, res, status, rules);
    let mut heuristic = false;
    let mut lifetime = if let (Some(t), true) = (rules.ttl_override, operator_ok) {
        t
    } else if let Some(s) = cc.s_maxage {
        Duration::from_secs(s)
    } else if let Some(m) = cc.max_age {
        Duration::from_secs(m)
    } else if let Some(exp) = http_date(res, header::EXPIRES) {
        // An invalid Expires (e.g. "0") means already expired (§5.3).
        exp.ok()
            .and_then(|e| e.duration_since(date).ok())
            .unwrap_or(Duration::ZERO)
    } else if let (Some(t), true) = (rules.default_ttl, operator_ok) {
        t
    } else if let Some(Ok(lm)) = http_date(res, header::LAST_MODIFIED)
        && !credentialed(req)
        && (heuristically_cacheable(status) || cc.public)
        && !status.is_server_error()
    {
        heuristic = true;
        (date.duration_since(lm).unwrap_or(Duration::ZERO) / 10).min(HEURISTIC_CAP)
    } else {
        Duration::ZERO
    };
    if let Some(max) = rules.max_ttl {
        lifetime = lifetime.min(max);
    }
    // §4.2.3: corrected_initial_age = max(apparent_age, age_value + response_delay).
    let age_value = Duration::from_secs(age_value(res).unwrap_or(0));
    let apparent_age = response_time.duration_since(date).unwrap_or(Duration::ZERO);
    let response_delay = response_time
        .duration_since(request_time)
        .unwrap_or(Duration::ZERO);
    let initial_age = apparent_age.max(age_value + response_delay);
    Freshness {
        cc,
        lifetime,
        initial_age,
        response_time,
        heuristic,
        set_cookie: res.contains_key(header::SET_COOKIE),
        route_stale_if_error: rules.stale_if_error,
    }
}

/// §4.2.3 `current_age`.
pub fn current_age(f: &Freshness, now: SystemTime) -> Duration {
    f.initial_age
        + now
            .duration_since(f.response_time)
            .unwrap_or(Duration::ZERO)
}

/// Remaining freshness in whole seconds; negative when stale (the `ttl` of `Cache-Status`).
pub fn ttl_secs(f: &Freshness, now: SystemTime) -> i64 {
    let age = current_age(f, now).as_secs() as i64;
    f.lifetime.as_secs() as i64 - age
}

/// RFC 9111 §4.2.4 when the origin cannot be reached at all (refused, reset or closed before
/// a response head, breaker open): a stale response may stand in for `window` past its
/// freshness, never past `must-revalidate`, `proxy-revalidate`, `no-cache` or `s-maxage`
/// (which implies proxy-revalidate, §5.2.2.10).
pub fn stale_if_unreachable_ok(f: &Freshness, window: Duration, now: SystemTime) -> bool {
    if !stale_permitted(f) || f.cc.s_maxage.is_some() {
        return false;
    }
    let age = current_age(f, now);
    f.lifetime > age || age - f.lifetime <= window
}

/// Whether any stale serving is allowed at all (§4.2.4): not after `must-revalidate`,
/// `proxy-revalidate` or an unqualified `no-cache`.
pub fn stale_permitted(f: &Freshness) -> bool {
    !(f.cc.must_revalidate
        || f.cc.proxy_revalidate
        || (f.cc.no_cache && f.cc.no_cache_fields.is_empty()))
}

/// Why a stored response needs the origin before use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revalidate {
    /// It is stale.
    Stale,
    /// The response said `no-cache`.
    ResponseNoCache,
    /// The request's directives rule out the stored response (`no-cache`, `max-age`, `min-fresh`).
    Request,
}

/// What to do with a stored response for this request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Serve it.
    Fresh,
    /// Stale, but the client's `max-stale` accepts it.
    StaleAccepted,
    /// Stale within `stale-while-revalidate`: serve, and refresh in the background.
    StaleWhileRevalidate,
    /// Ask the origin (conditionally when validators exist).
    Revalidate(Revalidate),
}

/// §4 reuse decision for a stored response, given the request's directives.
pub fn evaluate(f: &Freshness, req_cc: &CacheControl, now: SystemTime) -> Decision {
    let age = current_age(f, now);
    if f.cc.no_cache && f.cc.no_cache_fields.is_empty() {
        return Decision::Revalidate(Revalidate::ResponseNoCache);
    }
    if req_cc.no_cache {
        return Decision::Revalidate(Revalidate::Request);
    }
    if let Some(ma) = req_cc.max_age
        && age > Duration::from_secs(ma)
    {
        return Decision::Revalidate(Revalidate::Request);
    }
    let fresh = f.lifetime > age;
    if let Some(mf) = req_cc.min_fresh
        && f.lifetime.saturating_sub(age) < Duration::from_secs(mf)
    {
        return Decision::Revalidate(Revalidate::Request);
    }
    if fresh {
        return Decision::Fresh;
    }
    let stale_by = age - f.lifetime;
    if stale_permitted(f) {
        // A client's max-stale never unlocks s-maxage (implies proxy-revalidate) or a stored
        // Set-Cookie response (http-cache-semantics issue #22).
        if let Some(ms) = req_cc.max_stale
            && f.cc.s_maxage.is_none()
            && !f.set_cookie
            && match ms {
                MaxStale::Any => true,
                MaxStale::Seconds(s) => stale_by <= Duration::from_secs(s),
            }
        {
            return Decision::StaleAccepted;
        }
        if let Some(swr) = f.cc.stale_while_revalidate
            && stale_by <= Duration::from_secs(swr)
        {
            return Decision::StaleWhileRevalidate;
        }
    }
    Decision::Revalidate(Revalidate::Stale)
}

/// Whether a stored response may stand in for a failed forward (RFC 5861 `stale-if-error`,
/// or the route's window), never past `must-revalidate`/`proxy-revalidate`/`no-cache`.
pub fn stale_if_error_ok(f: &Freshness, now: SystemTime) -> bool {
    if !stale_permitted(f) {
        return false;
    }
    let age = current_age(f, now);
    if f.lifetime > age {
        return true;
    }
    let window =
        f.cc.stale_if_error
            .map(Duration::from_secs)
            .or(f.route_stale_if_error);
    window.is_some_and(|w| age - f.lifetime <= w)
}

/// Statuses that let `stale-if-error` apply (RFC 5861 §4: 500, 502, 503, 504).
pub fn is_error_status(s: StatusCode) -> bool {
    matches!(s.as_u16(), 500 | 502 | 503 | 504)
}

/// How long the store should keep a response before it is useless (fresh, stale windows
/// including the route's `stale_if_unreachable`, plus time to be revalidated when it has
/// validators).
pub fn keep_for(f: &Freshness, has_validators: bool, unreachable: Duration) -> Duration {
    let mut extra = Duration::ZERO;
    if stale_permitted(f) && f.cc.s_maxage.is_none() {
        extra = unreachable;
    }
    if let Some(s) = f.cc.stale_while_revalidate {
        extra = extra.max(Duration::from_secs(s));
    }
    if let Some(s) = f.cc.stale_if_error {
        extra = extra.max(Duration::from_secs(s));
    }
    if let Some(s) = f.route_stale_if_error {
        extra = extra.max(s);
    }
    if has_validators {
        extra = extra.max(f.lifetime.max(Duration::from_secs(600)));
    }
    (f.lifetime.saturating_sub(f.initial_age) + extra).max(Duration::from_secs(1))
}

/// RFC 9110 §13.1.2 weak comparison of an `If-None-Match` list against an entity tag.
pub fn none_match(if_none_match: &str, etag: &str) -> bool {
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_string();
    let etag = strip(etag);
    if_none_match
        .split(',')
        .any(|t| t.trim() == "*" || strip(t) == etag)
}

#[cfg(test)]
mod tests;
