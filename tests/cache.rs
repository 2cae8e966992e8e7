//! The HTTP cache seen from outside (RFC 9111, RFC 5861, RFC 9211, RFC 9213): one test per rule,
//! each checking statuses, headers, bodies and how often the mock origin was asked.
#![allow(clippy::unwrap_used)]

#[path = "support.rs"]
mod support;

#[path = "cache/support.rs"]
mod cache_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use cache_support::*;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use support::*;

type Parts = http::request::Parts;

/// A route answering 200 `v{n}` (n counts its requests) with `headers`.
fn counted(
    headers: &'static [(&'static str, &'static str)],
) -> impl Fn(&Parts, &Bytes) -> MockResponse + Send + Sync + 'static {
    let n = Arc::new(AtomicU64::new(0));
    move |_, _| {
        let i = n.fetch_add(1, Ordering::SeqCst) + 1;
        let mut r = MockResponse::ok(format!("v{i}"));
        for (k, v) in headers {
            r = r.header(k, v);
        }
        r
    }
}

/// A route that answers like `ok` until `failing` is set, then 503.
fn switchable(
    failing: Arc<AtomicBool>,
    ok: MockResponse,
) -> impl Fn(&Parts, &Bytes) -> MockResponse + Send + Sync + 'static {
    move |_, _| {
        if failing.load(Ordering::SeqCst) {
            MockResponse::ok("origin down").status(503)
        } else {
            ok.clone()
        }
    }
}

fn assert_hit(h: &http::HeaderMap) {
    let cs = cache_status(h);
    assert!(cs.starts_with("seawall; hit; ttl="), "{cs}");
    assert!(!cs.contains("detail"), "{cs}");
    assert_eq!(hv(h, "x-cache"), "HIT");
    assert!(h.contains_key("age"), "hit without Age: {h:?}");
}

/// 200 with ETag `"e1"` and `X-Version: 1`; a matching `If-None-Match` gets 304 with
/// `X-Version: 2`.
fn etag_route(parts: &Parts, _: &Bytes) -> MockResponse {
    if parts
        .headers
        .get("if-none-match")
        .is_some_and(|v| v == "\"e1\"")
    {
        MockResponse::with_status(304)
            .header("etag", "\"e1\"")
            .header("cache-control", "max-age=60")
            .header("x-version", "2")
    } else {
        MockResponse::ok("body-1")
            .header("etag", "\"e1\"")
            .header("cache-control", "max-age=60")
            .header("x-version", "1")
    }
}

const STORED: &str = "seawall; fwd=uri-miss; stored";

#[path = "cache/compression.rs"]
mod compression;
#[path = "cache/freshness.rs"]
mod freshness;
#[path = "cache/governor.rs"]
mod governor;
#[path = "cache/invalidation.rs"]
mod invalidation;
#[path = "cache/keys.rs"]
mod keys;
#[path = "cache/limits.rs"]
mod limits;
#[path = "cache/request_directives.rs"]
mod request_directives;
#[path = "cache/revalidation.rs"]
mod revalidation;
#[path = "cache/serving.rs"]
mod serving;
#[path = "cache/stale.rs"]
mod stale;
#[path = "cache/storability.rs"]
mod storability;
#[path = "cache/vary.rs"]
mod vary;
