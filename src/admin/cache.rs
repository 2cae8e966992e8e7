//! The cache by resource: stats, the hottest entries, one entry in full, purge and clear, the
//! kill switch; and the warm-up endpoints (export, import jobs and their progress).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, bad, parse_json};
use crate::cache::ops::{self, Selector};
use crate::state::AppState;
use crate::warm;

pub(super) async fn cache_stats(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    Json(s.cache.stats_view(s.coalesce.inflight_bytes()))
}

#[derive(Deserialize)]
pub(super) struct EntriesQuery {
    top: Option<usize>,
    sort: Option<String>,
    format: Option<String>,
    /// A URL prefix as a prefix purge takes it: absolute (`http://host/path`, that host) or
    /// a path (`/path`, every host).
    prefix: Option<String>,
    /// Only keys carrying this tag.
    tag: Option<String>,
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub(super) async fn entries(
    State(s): State<Arc<AppState>>,
    Query(q): Query<EntriesQuery>,
) -> Result<Response, ApiError> {
    let sort = q.sort.unwrap_or_else(|| "hits".into());
    if !matches!(sort.as_str(), "hits" | "size" | "age") {
        return Err(bad("sort must be hits, size or age"));
    }
    let rt = s.rt.load();
    let prefix = match q.prefix.as_deref() {
        None | Some("") => None,
        Some(p) if p.starts_with('/') => Some(Selector::Prefix {
            host: None,
            prefix: p.to_string(),
        }),
        Some(p) => {
            let uri: axum::http::Uri = p
                .parse()
                .map_err(|_| bad("prefix must be a path (/…) or an absolute URL"))?;
            let (Some(host), true) = (
                uri.authority().map(|a| a.as_str()),
                matches!(uri.scheme_str(), Some("http" | "https")),
            ) else {
                return Err(bad("prefix must be a path (/…) or an absolute URL"));
            };
            // Keys hold the path and query: an absolute prefix keeps its query part.
            let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
            Some(Selector::Prefix {
                host: Some(ops::key_host(&rt.router, host, uri.path())),
                prefix: path.to_string(),
            })
        }
    };
    let tagged: Option<std::collections::HashSet<Arc<str>>> = q.tag.as_deref().map(|t| {
        s.cache
            .matching_keys(&Selector::Tag(t.to_string()))
            .into_iter()
            .collect()
    });
    let keep = |k: &str| {
        prefix.as_ref().is_none_or(|p| p.matches(k))
            && tagged.as_ref().is_none_or(|t| t.contains(k))
    };
    let list = ops::listings(&s.cache, &rt.router, keep, &sort, q.top.unwrap_or(100));
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
pub(super) struct UrlQuery {
    url: Option<String>,
}

pub(super) async fn entry(
    State(s): State<Arc<AppState>>,
    Query(q): Query<UrlQuery>,
) -> Result<Json<Value>, ApiError> {
    let url = q.url.ok_or_else(|| bad("missing url"))?;
    if url.starts_with('/') {
        // A path, as purge takes it: that path and query on every host.
        let mut found: Vec<_> = s
            .cache
            .matching_keys(&Selector::Path(url.clone()))
            .iter()
            .filter_map(|k| s.cache.entry_view(k))
            .collect();
        return match found.len() {
            0 => Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("{url} is not stored on any host"),
            )),
            1 => Ok(Json(json!(found.remove(0)))),
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
    s.cache
        .entry_view(&key)
        .map(|v| Json(json!(v)))
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("{key} is not stored")))
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

pub(super) async fn purge(
    State(s): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
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

pub(super) async fn clear(
    State(s): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
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
    if let Some(e) = &r.error
        && !r.queued
    {
        tracing::warn!(error = %e, "Purge applied here but not fully announced through the shared tier.");
    }
    serde_json::to_value(r).unwrap_or(Value::Null)
}

pub(super) async fn disable(State(s): State<Arc<AppState>>) -> Json<Value> {
    s.cache.set_enabled(false);
    tracing::warn!("Cache disabled through the admin API (plain proxy).");
    Json(json!({"enabled": false}))
}

pub(super) async fn enable(State(s): State<Arc<AppState>>) -> Json<Value> {
    s.cache.set_enabled(true);
    tracing::info!("Cache enabled through the admin API.");
    Json(json!({"enabled": true}))
}

#[derive(Deserialize)]
pub(super) struct ExportQuery {
    top: Option<usize>,
}

/// `GET /admin/cache/export?top=N`: one JSON record per line, hottest first.
pub(super) async fn export(
    State(s): State<Arc<AppState>>,
    Query(q): Query<ExportQuery>,
) -> Response {
    let records = ops::export(&s.cache, q.top.unwrap_or(1000));
    let lines = futures_util::stream::iter(records.into_iter().map(|r| {
        let mut line = serde_json::to_vec(&r).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, std::convert::Infallible>(Bytes::from(line))
    }));
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WarmBody {
    from: Option<String>,
    top: Option<usize>,
    urls: Option<Vec<String>>,
    concurrency: Option<usize>,
}

/// `POST /admin/cache/warm`.
pub(super) async fn warm(
    State(s): State<Arc<AppState>>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let b: WarmBody = parse_json(&body)?;
    let id = match (b.from, b.urls) {
        (Some(from), None) => warm::spawn_peer(&s.warm_handles(), from, b.top.unwrap_or(1000)),
        (None, Some(urls)) => {
            warm::spawn_urls(&s.warm_handles(), urls, b.concurrency.unwrap_or(8).max(1))
        }
        _ => {
            return Err(bad(
                "name either from (a peer's admin URL, with top) or urls",
            ));
        }
    };
    Ok((StatusCode::ACCEPTED, Json(json!({"id": id}))))
}

/// `GET /admin/cache/warm/{id}`.
pub(super) async fn warm_progress(
    State(s): State<Arc<AppState>>,
    Path(id): Path<u64>,
) -> Result<Json<Value>, ApiError> {
    s.jobs
        .view(id)
        .map(|v| Json(serde_json::to_value(v).unwrap_or(Value::Null)))
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no warm-up job {id}")))
}
