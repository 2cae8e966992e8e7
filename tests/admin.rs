//! The admin API seen from outside: bearer-token auth, purges (URL, path, batch, prefix, tag,
//! soft, dry run), clear, the kill switch, stats and listings, config redaction, reload,
//! drain, warm-up from a peer or a URL list, and JSON errors.
#![allow(clippy::unwrap_used)]

#[path = "support.rs"]
mod support;

#[path = "admin/support.rs"]
mod admin_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use admin_support::*;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};
use support::*;

const TOKEN: &str = "s3cret-token";

/// A cacheable fixed response.
fn cacheable(body: &str) -> MockResponse {
    MockResponse::ok(body.to_string()).header("cache-control", "max-age=300")
}

/// A response that echoes `Accept-Language` and varies on it.
fn by_language(parts: &http::request::Parts, _: &Bytes) -> MockResponse {
    let lang = parts
        .headers
        .get("accept-language")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_string();
    MockResponse::ok(format!("lang={lang}"))
        .header("cache-control", "max-age=300")
        .header("vary", "Accept-Language")
}

fn no_headers() -> HeaderMap {
    HeaderMap::new()
}

fn lang(l: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("accept-language", l.parse().unwrap());
    h
}

/// GET `url` with `Host: host` and return the Cache-Status.
async fn status_on(url: &str, host: &str) -> String {
    let (status, headers, _) = get_with(url, &[("host", host)]).await;
    assert_eq!(status, StatusCode::OK, "{headers:?}");
    cache_status(&headers)
}

fn is_hit(cs: &str) -> bool {
    cs.starts_with("seawall; hit; ttl=") && !cs.contains("detail=")
}

fn is_miss(cs: &str) -> bool {
    cs.starts_with("seawall; fwd=uri-miss") || cs.starts_with("seawall; fwd=vary-miss")
}

#[path = "admin/auth.rs"]
mod auth;
#[path = "admin/entries.rs"]
mod entries;
#[path = "admin/history.rs"]
mod history;
#[path = "admin/operate.rs"]
mod operate;
#[path = "admin/purge.rs"]
mod purge;
#[path = "admin/warm.rs"]
mod warm;
