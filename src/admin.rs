//! Admin listener (JSON, curl-first). Open endpoints:
//! - `GET /healthz` liveness; `GET /readyz` readiness; `GET /metrics` Prometheus text.
//!
//! Under `/admin/`, always with `Authorization: Bearer <token>` (generated at start when none is
//! configured; a read-only token may `GET` everything but the export):
//! - `GET /admin/status` summary, recent window and since start, with alerts
//! - `GET /admin/cache/stats`; `GET /admin/cache/entries?top=N&sort=hits|size|age[&format=csv]`
//! - `GET /admin/cache/entry?url=…` one URL in full (absolute, or a path on every host)
//! - `POST /admin/cache/purge` `{url|urls|prefix[,host]|tag, soft, dry_run}` (everything needs
//!   `confirm: CLEAR-ALL`)
//! - `POST /admin/cache/clear` `{"confirm":"CLEAR-ALL", soft}`; `POST /admin/cache/disable|enable`
//! - `GET /admin/cache/export?top=N` (NDJSON); `POST /admin/cache/warm` `{from, top}|{urls}`;
//!   `GET /admin/cache/warm/{id}`
//! - `GET /admin/breakers`; `POST /admin/breakers/{upstream}/open|close|reset`
//! - `GET /admin/config`; `POST /admin/reload`; `POST /admin/drain`; `POST /admin/drain/cancel`
//!
//! Any answer is indented with `?pretty`.

pub mod auth;
pub mod warm;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::cache::ops::{self, Selector};
use crate::server::Phase;

/// A JSON error with its status.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

/// The admin router.
pub fn router(state: Arc<AppState>) -> Router {
    let admin = Router::new()
        .route("/admin/status", get(status))
        .route("/admin/cache/stats", get(cache_stats))
        .route("/admin/cache/entries", get(entries))
        .route("/admin/cache/entry", get(entry))
        .route("/admin/cache/purge", post(purge))
        .route("/admin/cache/clear", post(clear))
        .route("/admin/cache/disable", post(disable))
        .route("/admin/cache/enable", post(enable))
        .route("/admin/cache/export", get(warm::export))
        .route("/admin/cache/warm", post(warm::start))
        .route("/admin/cache/warm/{id}", get(warm::progress))
        .route("/admin/breakers", get(breakers))
        .route("/admin/breakers/{upstream}/{action}", post(breaker_action))
        .route("/admin/config", get(config))
        .route("/admin/reload", post(reload))
        .route("/admin/drain", post(drain))
        .route("/admin/drain/cancel", post(drain_cancel))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(admin)
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError(StatusCode::METHOD_NOT_ALLOWED, "method not allowed".into())
        })
        .layer(middleware::from_fn(pretty))
        .with_state(state)
}

/// Bearer-token check: missing or wrong → 401; the read-only token on a `POST` or the export →
/// 403; two `Authorization` fields → 400. Tokens are compared as digests in constant time.
async fn auth(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let mut fields = req.headers().get_all(header::AUTHORIZATION).iter();
    let first = fields.next();
    if fields.next().is_some() {
        return bad("two Authorization fields").into_response();
    }
    let given = first
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    let role = given.and_then(|g| s.admin_auth.role(g));
    let read_only_ok =
        req.method() == axum::http::Method::GET && req.uri().path() != "/admin/cache/export";
    match role {
        Some(auth::Role::Full) => next.run(req).await,
        Some(auth::Role::Read) if read_only_ok => next.run(req).await,
        Some(auth::Role::Read) => ApiError(
            StatusCode::FORBIDDEN,
            "the read-only token may only GET (and not the export)".into(),
        )
        .into_response(),
        None => {
            let msg = if given.is_some() {
                "wrong bearer token"
            } else {
                "missing bearer token"
            };
            let mut r = ApiError(StatusCode::UNAUTHORIZED, msg.into()).into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
    }
}

/// `?pretty` re-indents JSON answers.
async fn pretty(req: Request, next: Next) -> Response {
    let wants = req.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|kv| kv == "pretty" || kv.starts_with("pretty="))
    });
    let res = next.run(req).await;
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !wants || !is_json {
        return res;
    }
    let (parts, body) = res.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 << 20).await else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "body too large to indent",
        )
            .into_response();
    };
    let text = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .map(|s| s + "\n");
    let mut res = Response::from_parts(parts, Body::from(text.unwrap_or_default()));
    res.headers_mut().remove(header::CONTENT_LENGTH);
    res
}

async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    let phase = s.lifecycle.phase();
    let reason = if phase != Phase::Serving {
        "draining"
    } else if !s.serving.load(Ordering::Relaxed) {
        "starting"
    } else if !s.warm.load(Ordering::Relaxed) {
        "warming"
    } else {
        "ready"
    };
    let ready = s.ready();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    // Upstream health is reported, never gating: serving stale is the point at the edge.
    let rt = s.rt.load();
    let open: Vec<&str> = rt
        .breakers
        .all()
        .filter(|b| b.state() != crate::breaker::state::StateKind::Closed)
        .map(|b| b.upstream.as_str())
        .collect();
    // The shared tier is reported, never gating: without it we serve from memory and origin.
    let shared = s.cache.tier().map_or("disabled", |t| t.status());
    (
        code,
        Json(
            json!({"ready": ready, "status": reason, "breakers_not_closed": open, "shared_tier": shared}),
        ),
    )
}

async fn metrics(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    // Components read their own atomics while the registry is gathered.
    let text = crate::telemetry::metrics::render(&s.metrics.registry);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

async fn status(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    let rt = s.rt.load();
    let a = &rt.config.raw.admin;
    let mut recent = s.window.recent(a.status_window);
    let total = s.window.total();
    // A cold or quiet slot has no hit ratio worth judging (the rollout gate reads `null`).
    if recent.cacheable_requests < a.alert_min_requests {
        recent.hit_ratio = None;
    }
    let mut alerts = Vec::new();
    if let Some(r) = recent.hit_ratio
        && r < a.alert_hit_ratio_below
    {
        alerts.push(json!({"name": "hit_ratio_low", "severity": "warning", "message": format!("hit ratio {:.2} below {}", r, a.alert_hit_ratio_below)}));
    }
    if recent.requests >= a.alert_min_requests && recent.error_rate > a.alert_error_rate_above {
        alerts.push(json!({"name": "error_rate_high", "severity": "critical", "message": format!("5xx rate {:.3} above {}", recent.error_rate, a.alert_error_rate_above)}));
    }
    let breakers: Vec<Value> = rt
        .breakers
        .all()
        .map(|b| {
            let st = b.state();
            if st != crate::breaker::state::StateKind::Closed {
                alerts.push(json!({"name": "breaker_open", "severity": "warning", "message": format!("breaker of upstream {} is {}", b.upstream, st.as_str())}));
            }
            json!({"upstream": b.upstream, "state": st.as_str()})
        })
        .collect();
    let cs = &s.coalesce.stats;
    let cache_on = s.cache.enabled.load(Ordering::Relaxed);
    if !cache_on {
        alerts.push(json!({"name": "cache_disabled", "severity": "warning", "message": "the cache is disabled (kill switch): every request goes to the origin"}));
    }
    let healthy = cache_on && !alerts.iter().any(|a| a["severity"] == "critical");
    Json(json!({
        "healthy": healthy,
        "ready": s.ready(),
        "phase": format!("{:?}", s.lifecycle.phase()).to_lowercase(),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": SystemTime::now().duration_since(s.started_at).map_or(0, |d| d.as_secs()),
        "window_secs": a.status_window.as_secs(),
        "hit_ratio": recent.hit_ratio,
        "cacheable_requests": recent.cacheable_requests,
        "uncacheable_share": recent.uncacheable_share,
        "error_rate": recent.error_rate,
        "error_ratio": recent.error_rate,
        "latency_p95_ms": recent.latency_p95_ms,
        "recent": recent,
        "since_start": total,
        "coalesced": {
            "requests": cs.coalesced.load(Ordering::Relaxed),
            "leaders": cs.leaders.load(Ordering::Relaxed),
            "waiter_limit": cs.waiter_cap.load(Ordering::Relaxed),
            "wait_timeouts": cs.wait_timeouts.load(Ordering::Relaxed),
            "hit_for_pass": cs.hit_for_pass.load(Ordering::Relaxed),
        },
        "breakers": breakers,
        "components": {
            "cache": if cache_on { "ok" } else { "disabled" },
            "shared_tier": s.cache.tier().map_or("disabled", |t| t.status()),
            "trace_exporter": "not configured",
        },
        "alerts": alerts,
    }))
}

async fn cache_stats(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    let c = &s.cache;
    c.store.run_pending_tasks();
    let st = &c.stats;
    let ev = &c.store.evictions;
    Json(json!({
        "enabled": c.enabled.load(Ordering::Relaxed),
        "entries": c.store.entry_count(),
        "bytes": c.store.weighted_size(),
        "capacity": c.store.capacity(),
        "evictions": {
            "size": ev.size.load(Ordering::Relaxed),
            "expired": ev.expired.load(Ordering::Relaxed),
            "explicit": ev.explicit.load(Ordering::Relaxed),
        },
        "hits": st.hits.load(Ordering::Relaxed),
        "misses": st.misses.load(Ordering::Relaxed),
        "stale": st.stale.load(Ordering::Relaxed),
        "revalidated": st.revalidated.load(Ordering::Relaxed),
        "bypass": st.bypass.load(Ordering::Relaxed),
        "stored": st.stored.load(Ordering::Relaxed),
        "inflight_fill_bytes": s.coalesce.inflight_bytes(),
    }))
}

#[derive(Deserialize)]
struct EntriesQuery {
    top: Option<usize>,
    sort: Option<String>,
    format: Option<String>,
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

async fn entries(
    State(s): State<Arc<AppState>>,
    Query(q): Query<EntriesQuery>,
) -> Result<Response, ApiError> {
    let sort = q.sort.unwrap_or_else(|| "hits".into());
    if !matches!(sort.as_str(), "hits" | "size" | "age") {
        return Err(bad("sort must be hits, size or age"));
    }
    let list = ops::listings(&s.cache, &sort, q.top.unwrap_or(100));
    if q.format.as_deref() == Some("csv") {
        let mut out = String::from("key,variants,size,age,ttl,hits,tags\n");
        for l in &list {
            out.push_str(&format!(
                "{},{},{},{},{},{},{}\n",
                csv_field(&l.key),
                l.variants,
                l.size,
                l.age,
                l.ttl,
                l.hits,
                csv_field(&l.tags.join(" "))
            ));
        }
        return Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], out).into_response());
    }
    Ok(Json(json!({"entries": list})).into_response())
}

#[derive(Deserialize)]
struct UrlQuery {
    url: Option<String>,
}

async fn entry(
    State(s): State<Arc<AppState>>,
    Query(q): Query<UrlQuery>,
) -> Result<Json<Value>, ApiError> {
    let url = q.url.ok_or_else(|| bad("missing url"))?;
    if url.starts_with('/') {
        // A path, as purge takes it: that path and query on every host.
        let mut found: Vec<Value> = s
            .cache
            .matching_keys(&Selector::Path(url.clone()))
            .iter()
            .filter_map(|k| entry_view(&s, k))
            .collect();
        return match found.len() {
            0 => Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("{url} is not stored on any host"),
            )),
            1 => Ok(Json(found.remove(0))),
            _ => Ok(Json(json!({"matches": found}))),
        };
    }
    let rt = s.rt.load();
    let absolute = url.starts_with("http://") || url.starts_with("https://");
    let key = ops::key_of_url(&rt.router, &url)
        .filter(|_| absolute)
        .ok_or_else(|| {
            bad("url must be absolute (http://host/path) or a path (/path, on every host)")
        })?;
    entry_view(&s, &key)
        .map(Json)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("{key} is not stored")))
}

/// One key's stored variants in full, or `None` when nothing is stored under it.
fn entry_view(s: &AppState, key: &str) -> Option<Value> {
    let vs = s.cache.store.variants(key)?;
    let now = s.cache.clock.now();
    let variants: Vec<Value> = vs
        .entries
        .iter()
        .map(|e| {
            let f = &e.fresh;
            let headers: Vec<(String, String)> = e
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect();
            json!({
                "status": e.status.as_u16(),
                "headers": headers,
                "size": e.weight(),
                "body_bytes": e.body.len(),
                "hits": e.hits.load(Ordering::Relaxed),
                "stored_at": unix(e.stored_at),
                "vary": e.vary.iter().map(|(k, v)| json!({"field": k.as_str(), "value": v})).collect::<Vec<_>>(),
                "validators": {
                    "etag": e.etag().and_then(|v| v.to_str().ok()),
                    "last_modified": e.last_modified().and_then(|v| v.to_str().ok()),
                },
                "policy": {
                    "lifetime_secs": f.lifetime.as_secs(),
                    "age_secs": crate::cache::policy::current_age(f, now).as_secs(),
                    "ttl_secs": crate::cache::policy::ttl_secs(f, now),
                    "heuristic": f.heuristic,
                    "no_cache": f.cc.no_cache,
                    "must_revalidate": f.cc.must_revalidate || f.cc.proxy_revalidate,
                    "stale_while_revalidate": f.cc.stale_while_revalidate,
                    "stale_if_error": f.cc.stale_if_error.or(f.route_stale_if_error.map(|d| d.as_secs())),
                    "immutable": f.cc.immutable,
                },
                "tags": e.tags.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
            })
        })
        .collect();
    Some(json!({"key": key, "variants": variants}))
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let body: &[u8] = if body.is_empty() { b"{}" } else { body };
    serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON body: {e}")))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PurgeBody {
    url: Option<String>,
    urls: Option<Vec<String>>,
    prefix: Option<String>,
    host: Option<String>,
    tag: Option<String>,
    #[serde(default)]
    soft: bool,
    #[serde(default)]
    dry_run: bool,
    /// `"CLEAR-ALL"`: needed by a prefix purge that matches everything.
    confirm: Option<String>,
}

async fn purge(State(s): State<Arc<AppState>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let b: PurgeBody = parse_json(&body)?;
    let rt = s.rt.load();
    let given = [
        b.url.is_some(),
        b.urls.is_some(),
        b.prefix.is_some(),
        b.tag.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if given != 1 {
        return Err(bad("name exactly one of url, urls, prefix, tag"));
    }
    let to_selector = |u: &str| -> Result<Selector, ApiError> {
        if u.starts_with('/') {
            Ok(Selector::Path(u.to_string()))
        } else {
            ops::key_of_url(&rt.router, u)
                .map(Selector::Key)
                .ok_or_else(|| bad(format!("{u:?} is neither an absolute URL nor a path")))
        }
    };
    let (kind, selectors) = if let Some(u) = &b.url {
        ("url", vec![to_selector(u)?])
    } else if let Some(us) = &b.urls {
        (
            "urls",
            us.iter()
                .map(|u| to_selector(u))
                .collect::<Result<Vec<_>, _>>()?,
        )
    } else if let Some(p) = &b.prefix {
        // Everything on every host: as much as a clear, so it needs clear's confirmation.
        if (p.is_empty() || p == "/") && b.host.is_none() {
            return purge_everything(&s, &b).await;
        }
        if !p.starts_with('/') {
            return Err(bad("prefix must start with /"));
        }
        let host = b.host.as_deref().map(|h| ops::key_host(&rt.router, h, p));
        (
            "prefix",
            vec![Selector::Prefix {
                host,
                prefix: p.clone(),
            }],
        )
    } else {
        (
            "tag",
            vec![Selector::Tag(b.tag.clone().unwrap_or_default())],
        )
    };
    let mut total = ops::PurgeResult {
        soft: b.soft,
        dry_run: b.dry_run,
        ..Default::default()
    };
    for sel in &selectors {
        let r = s.cache.purge(sel, b.soft, b.dry_run);
        total.keys += r.keys;
        total.entries += r.entries;
    }
    if !b.dry_run {
        s.metrics.purges.with_label_values(&[kind]).inc();
    }
    let mut out = json!({"purged": total.entries, "keys": total.keys, "soft": total.soft, "dry_run": total.dry_run});
    if !b.dry_run
        && let Some(t) = s.cache.tier()
    {
        out["shared"] = shared_report(t.purge(&selectors, b.soft).await);
    }
    Ok(Json(out))
}

/// A prefix purge of `/` (or the empty prefix) without `host`: refused without `"confirm":
/// "CLEAR-ALL"`; a dry run says how much it would purge and that it needs the confirmation.
async fn purge_everything(s: &AppState, b: &PurgeBody) -> Result<Json<Value>, ApiError> {
    if b.dry_run {
        let r = s.cache.purge(&Selector::All, b.soft, true);
        return Ok(Json(json!({
            "purged": r.entries, "keys": r.keys, "soft": b.soft, "dry_run": true,
            "confirm_required": true,
        })));
    }
    if b.confirm.as_deref() != Some("CLEAR-ALL") {
        return Err(bad(
            "refusing to purge everything: send {\"confirm\": \"CLEAR-ALL\"} as clear needs, or name a host",
        ));
    }
    let r = s.cache.purge(&Selector::All, b.soft, false);
    s.metrics.purges.with_label_values(&["prefix"]).inc();
    let mut out = json!({"purged": r.entries, "keys": r.keys, "soft": b.soft, "dry_run": false});
    if let Some(t) = s.cache.tier() {
        out["shared"] = shared_report(t.purge(&[Selector::All], b.soft).await);
    }
    Ok(Json(out))
}

#[derive(Deserialize)]
struct ClearBody {
    confirm: Option<String>,
    #[serde(default)]
    soft: bool,
}

async fn clear(State(s): State<Arc<AppState>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let b: ClearBody = parse_json(&body)?;
    if b.confirm.as_deref() != Some("CLEAR-ALL") {
        return Err(bad("refusing to clear: send {\"confirm\": \"CLEAR-ALL\"}"));
    }
    let r = s.cache.purge(&Selector::All, b.soft, false);
    s.metrics.purges.with_label_values(&["clear"]).inc();
    let mut out = json!({"purged": r.entries, "keys": r.keys, "soft": b.soft});
    if let Some(t) = s.cache.tier() {
        out["shared"] = shared_report(t.purge(&[Selector::All], b.soft).await);
    }
    Ok(Json(out))
}

fn shared_report(r: crate::cache::store::redis::SharedPurge) -> Value {
    if let Some(e) = &r.error {
        tracing::warn!(error = %e, "Purge applied here but not through the shared tier: other replicas keep their copies.");
    }
    serde_json::to_value(r).unwrap_or(Value::Null)
}

async fn disable(State(s): State<Arc<AppState>>) -> Json<Value> {
    s.cache.enabled.store(false, Ordering::Relaxed);
    tracing::warn!("Cache disabled through the admin API (plain proxy).");
    Json(json!({"enabled": false}))
}

async fn enable(State(s): State<Arc<AppState>>) -> Json<Value> {
    s.cache.enabled.store(true, Ordering::Relaxed);
    tracing::info!("Cache enabled through the admin API.");
    Json(json!({"enabled": true}))
}

async fn breakers(State(s): State<Arc<AppState>>) -> Json<Value> {
    let rt = s.rt.load();
    let now = tokio::time::Instant::now();
    let list: Vec<Value> = rt
        .breakers
        .all()
        .map(|b| {
            let v = b.view();
            let sn = &v.snapshot;
            json!({
                "upstream": v.upstream,
                "state": sn.state.as_str(),
                "forced": sn.forced,
                "trips": sn.trips,
                "consecutive_failures": sn.consecutive_failures,
                "window_requests": sn.window_requests,
                "window_failures": sn.window_failures,
                "window_counted_failures": sn.window_counted_failures,
                "open_for_secs": sn.open_until.map(|u| u.saturating_duration_since(now).as_secs_f64()),
                "last_transition": v.last_transition.map(|(t, tr)| json!({"at": unix(t), "from": tr.from.as_str(), "to": tr.to.as_str()})),
            })
        })
        .collect();
    Json(json!({"breakers": list}))
}

async fn breaker_action(
    State(s): State<Arc<AppState>>,
    Path((upstream, action)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let rt = s.rt.load();
    let b = rt.breakers.by_name(&upstream).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("no breaker for upstream {upstream:?}"),
        )
    })?;
    match action.as_str() {
        "open" => b.force_open(),
        "close" => b.force_close(),
        "reset" => b.reset(),
        _ => {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                "action must be open, close or reset".into(),
            ));
        }
    }
    s.note_breaker_override(&upstream, &action);
    tracing::warn!(upstream = %upstream, action = %action, "Breaker changed by an operator.");
    Ok(Json(
        json!({"upstream": upstream, "state": b.state().as_str()}),
    ))
}

async fn config(State(s): State<Arc<AppState>>) -> Json<Value> {
    let rt = s.rt.load();
    let mut v = serde_json::to_value(&rt.config.raw).unwrap_or(Value::Null);
    // Credentials in endpoint URLs are secrets.
    if let Some(ups) = v.get_mut("upstreams").and_then(Value::as_array_mut) {
        for u in ups {
            if let Some(eps) = u.get_mut("endpoints").and_then(Value::as_array_mut) {
                for e in eps {
                    if let Some(s) = e.as_str()
                        && let Some((scheme, rest)) = s.split_once("://")
                        && let Some((_, host)) = rest.rsplit_once('@')
                    {
                        *e = Value::String(format!("{scheme}://<redacted>@{host}"));
                    }
                }
            }
        }
    }
    if let Some(u) = v.pointer_mut("/cache/redis/url") {
        redact_url(u);
    }
    // File values a reload read that wait for a restart (the running ones are in `config`).
    let mut pending = serde_json::Map::new();
    for (k, val) in s
        .pending_restart
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
    {
        let mut val = val.clone();
        if k == "cache.redis"
            && let Some(u) = val.get_mut("url")
        {
            redact_url(u);
        }
        pending.insert(k.clone(), val);
    }
    Json(json!({
        "source": rt.config.source.as_ref().map(|p| p.display().to_string()),
        "admin_token": if s.admin_token.is_some() { "<redacted>" } else { "<none>" },
        "config": v,
        "pending_restart": pending,
    }))
}

/// Hides the credentials of a `scheme://user:password@host` URL.
fn redact_url(u: &mut Value) {
    if let Some(s) = u.as_str()
        && let Some((scheme, rest)) = s.split_once("://")
        && let Some((_, host)) = rest.rsplit_once('@')
    {
        *u = Value::String(format!("{scheme}://<redacted>@{host}"));
    }
}

async fn reload(State(s): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    match s.reload() {
        Ok(r) => Ok(Json(serde_json::to_value(r).unwrap_or(Value::Null))),
        Err(e) => Err(ApiError(StatusCode::UNPROCESSABLE_ENTITY, e)),
    }
}

async fn drain(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    s.drain();
    let delay: Duration = s.rt.load().config.raw.server.drain_delay;
    (
        StatusCode::ACCEPTED,
        Json(json!({"draining": true, "drain_delay_secs": delay.as_secs_f64()})),
    )
}

async fn drain_cancel(State(s): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    match s.cancel_drain() {
        Ok(from) => Ok(Json(json!({
            "draining": false,
            "cancelled": from.map(|p| format!("{p:?}").to_lowercase()),
        }))),
        Err(_) => Err(ApiError(
            StatusCode::CONFLICT,
            "shutting down (SIGTERM): a drain that ends in exit cannot be cancelled".into(),
        )),
    }
}
