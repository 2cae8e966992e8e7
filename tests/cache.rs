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

const STORED: &str = "seawall; fwd=uri-miss; stored";

// ---------------------------------------------------------------------------------------------
// Freshness
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn fresh_response_is_served_from_the_cache_with_age() {
    let origin = MockOrigin::new()
        .route(
            "/a",
            MockResponse::ok("hello").header("cache-control", "max-age=60"),
        )
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;

    let (s, h, b) = get(&proxy.url("/a")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, "hello");
    assert_eq!(cache_status(&h), STORED);
    assert_eq!(hv(&h, "x-cache"), "MISS");
    settle(&proxy).await;

    let (s, h, b) = get(&proxy.url("/a")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, "hello");
    assert_hit(&h);
    let ttl = ttl_of(&cache_status(&h));
    assert!((55..=60).contains(&ttl), "ttl {ttl}");
    assert!(age_of(&h) <= 5);
    assert_eq!(origin.hits("/a"), 1);

    // The age grows with the clock.
    advance(&proxy, 30);
    let (_, h, b) = get(&proxy.url("/a")).await;
    assert_eq!(b, "hello");
    assert_hit(&h);
    assert!(age_of(&h) >= 30, "{h:?}");
    assert!(ttl_of(&cache_status(&h)) <= 30);
    assert_eq!(origin.hits("/a"), 1);
}

#[tokio::test]
async fn expired_response_goes_back_to_the_origin() {
    let date = OriginDate::default();
    let origin = MockOrigin::new()
        .route(
            "/e",
            dated(&date, counted(&[("cache-control", "max-age=60")])),
        )
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    date.link(&proxy);

    let (_, h, b) = get(&proxy.url("/e")).await;
    assert_eq!(b, "v1");
    assert_eq!(cache_status(&h), STORED);
    settle(&proxy).await;

    advance(&proxy, 61);
    let (s, h, b) = get(&proxy.url("/e")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, "v2");
    assert_eq!(
        cache_status(&h),
        "seawall; fwd=stale; fwd-status=200; stored"
    );
    assert_eq!(hv(&h, "x-cache"), "MISS");
    assert_eq!(origin.hits("/e"), 2);
    settle(&proxy).await;

    let (_, h, b) = get(&proxy.url("/e")).await;
    assert_eq!(b, "v2");
    assert_hit(&h);
    assert_eq!(origin.hits("/e"), 2);
}

// ---------------------------------------------------------------------------------------------
// Revalidation
// ---------------------------------------------------------------------------------------------

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

const LM: &str = "Wed, 21 Oct 2015 07:28:00 GMT";

fn last_modified_route(parts: &Parts, _: &Bytes) -> MockResponse {
    if parts
        .headers
        .get("if-modified-since")
        .is_some_and(|v| v == LM)
    {
        MockResponse::with_status(304).header("cache-control", "max-age=60")
    } else {
        MockResponse::ok("lm-body")
            .header("last-modified", LM)
            .header("cache-control", "max-age=60")
    }
}

#[tokio::test]
async fn stale_entry_is_revalidated_with_if_none_match() {
    let date = OriginDate::default();
    let origin = MockOrigin::new()
        .route("/r", dated(&date, etag_route))
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    date.link(&proxy);

    let (_, h, b) = get(&proxy.url("/r")).await;
    assert_eq!(b, "body-1");
    assert_eq!(cache_status(&h), STORED);
    settle(&proxy).await;

    advance(&proxy, 61);
    let (s, h, b) = get(&proxy.url("/r")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, "body-1", "the stored body is served after a 304");
    assert!(
        cache_status(&h).starts_with("seawall; fwd=stale; fwd-status=304"),
        "{h:?}"
    );
    assert_eq!(hv(&h, "x-cache"), "REVALIDATED");
    assert!(h.contains_key("age"));
    assert_eq!(origin.hits("/r"), 2);
    let seen = origin.requests("/r");
    assert!(!seen[0].contains_key("if-none-match"));
    assert_eq!(header_str(&seen[1], "if-none-match"), "\"e1\"");

    // Fresh again after the 304.
    let (_, h, b) = get(&proxy.url("/r")).await;
    assert_eq!(b, "body-1");
    assert_hit(&h);
    assert_eq!(origin.hits("/r"), 2);
}

#[tokio::test]
async fn stale_entry_is_revalidated_with_if_modified_since() {
    let date = OriginDate::default();
    let origin = MockOrigin::new()
        .route("/lm", dated(&date, last_modified_route))
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    date.link(&proxy);

    let (_, h, b) = get(&proxy.url("/lm")).await;
    assert_eq!(b, "lm-body");
    assert_eq!(cache_status(&h), STORED);
    settle(&proxy).await;

    advance(&proxy, 61);
    let (s, h, b) = get(&proxy.url("/lm")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, "lm-body");
    assert!(
        cache_status(&h).starts_with("seawall; fwd=stale; fwd-status=304"),
        "{h:?}"
    );
    assert_eq!(header_str(&h, "last-modified"), LM);
    assert_eq!(origin.hits("/lm"), 2);
    let seen = origin.requests("/lm");
    assert_eq!(header_str(&seen[1], "if-modified-since"), LM);

    let (_, h, b) = get(&proxy.url("/lm")).await;
    assert_eq!(b, "lm-body");
    assert_hit(&h);
    assert_eq!(origin.hits("/lm"), 2);
}

#[tokio::test]
async fn not_modified_updates_the_stored_headers() {
    let date = OriginDate::default();
    let origin = MockOrigin::new()
        .route("/r", dated(&date, etag_route))
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    date.link(&proxy);

    let (_, h, _) = get(&proxy.url("/r")).await;
    assert_eq!(header_str(&h, "x-version"), "1");
    settle(&proxy).await;
    let (_, h, _) = get(&proxy.url("/r")).await;
    assert_hit(&h);
    assert_eq!(header_str(&h, "x-version"), "1");

    advance(&proxy, 61);
    let (_, h, b) = get(&proxy.url("/r")).await;
    assert_eq!(b, "body-1");
    assert_eq!(hv(&h, "x-cache"), "REVALIDATED");
    assert_eq!(header_str(&h, "x-version"), "2");

    let (_, h, b) = get(&proxy.url("/r")).await;
    assert_eq!(b, "body-1");
    assert_hit(&h);
    assert_eq!(
        header_str(&h, "x-version"),
        "2",
        "the 304's header is stored"
    );
    assert_eq!(h.get_all("x-version").iter().count(), 1);
    assert_eq!(origin.hits("/r"), 2);
}

#[tokio::test]
async fn set_cookie_on_a_304_is_not_shared_through_the_stored_entry() {
    let date = OriginDate::default();
    let route = |parts: &Parts, _: &Bytes| {
        if parts
            .headers
            .get("if-none-match")
            .is_some_and(|v| v == "\"e1\"")
        {
            MockResponse::with_status(304)
                .header("etag", "\"e1\"")
                .header("cache-control", "max-age=60")
                .header("set-cookie", "session=alice")
        } else {
            MockResponse::ok("page")
                .header("etag", "\"e1\"")
                .header("cache-control", "max-age=60")
        }
    };
    let origin = MockOrigin::new()
        .route("/page", dated(&date, route))
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    date.link(&proxy);

    let (_, h, _) = get(&proxy.url("/page")).await;
    assert_eq!(cache_status(&h), STORED);
    settle(&proxy).await;
    advance(&proxy, 61);

    // Alice's revalidation: the 304 carries her cookie.
    let (s, h, b) = get_with(&proxy.url("/page"), &[("cookie", "session=old")]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, "page");
    assert_eq!(hv(&h, "x-cache"), "REVALIDATED");
    assert_eq!(origin.hits("/page"), 2);

    // Anybody else: the stored response must not hand out Alice's cookie (the route does not
    // opt in to storing Set-Cookie).
    let (s, h, b) = get(&proxy.url("/page")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, "page");
    assert!(!h.contains_key("set-cookie"), "cookie leaked: {h:?}");
}

#[tokio::test]
async fn changed_response_on_revalidation_replaces_the_body() {
    let n = Arc::new(AtomicU64::new(0));
    let route = move |_: &Parts, _: &Bytes| {
        let i = n.fetch_add(1, Ordering::SeqCst) + 1;
        MockResponse::ok(format!("v{i}"))
            .header("etag", &format!("\"v{i}\""))
            .header("cache-control", "max-age=60")
    };
    let date = OriginDate::default();
    let origin = MockOrigin::new()
        .route("/c", dated(&date, route))
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    date.link(&proxy);

    let (_, _, b) = get(&proxy.url("/c")).await;
    assert_eq!(b, "v1");
    settle(&proxy).await;
    advance(&proxy, 61);

    let (s, h, b) = get(&proxy.url("/c")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, "v2");
    assert_eq!(
        cache_status(&h),
        "seawall; fwd=stale; fwd-status=200; stored"
    );
    assert_eq!(
        header_str(&origin.requests("/c")[1], "if-none-match"),
        "\"v1\""
    );
    settle(&proxy).await;

    let (_, h, b) = get(&proxy.url("/c")).await;
    assert_eq!(b, "v2");
    assert_eq!(header_str(&h, "etag"), "\"v2\"");
    assert_hit(&h);
    assert_eq!(origin.hits("/c"), 2);
}

// ---------------------------------------------------------------------------------------------
// Vary
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn vary_stores_one_variant_per_request_value() {
    let route = |parts: &Parts, _: &Bytes| {
        let lang = parts
            .headers
            .get("accept-language")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = match lang.as_str() {
            "fr" => "bonjour",
            "de" => "hallo",
            _ => "hello",
        };
        MockResponse::ok(body)
            .header("vary", "Accept-Language")
            .header("cache-control", "max-age=60")
    };
    let origin = MockOrigin::new().route("/v", route).start().await;
    let proxy = TestProxy::start(&origin.url()).await;
    let url = proxy.url("/v");

    let (_, h, b) = get_with(&url, &[("accept-language", "fr")]).await;
    assert_eq!(b, "bonjour");
    assert_eq!(cache_status(&h), STORED);
    settle(&proxy).await;

    let (_, h, b) = get_with(&url, &[("accept-language", "de")]).await;
    assert_eq!(b, "hallo");
    assert_eq!(cache_status(&h), "seawall; fwd=vary-miss; stored");
    settle(&proxy).await;
    assert_eq!(origin.hits("/v"), 2);

    for (lang, body) in [("fr", "bonjour"), ("de", "hallo"), ("fr", "bonjour")] {
        let (s, h, b) = get_with(&url, &[("accept-language", lang)]).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(b, body, "{lang}");
        assert_hit(&h);
        assert_eq!(header_str(&h, "vary"), "Accept-Language");
    }
    assert_eq!(origin.hits("/v"), 2);
}

#[tokio::test]
async fn vary_star_is_never_stored() {
    let origin = MockOrigin::new()
        .route(
            "/star",
            counted(&[("vary", "*"), ("cache-control", "max-age=60")]),
        )
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;

    let (_, h, b) = get(&proxy.url("/star")).await;
    assert_eq!(b, "v1");
    assert_eq!(cache_status(&h), "seawall; fwd=uri-miss; detail=vary-star");
    settle(&proxy).await;
    let (_, h, b) = get(&proxy.url("/star")).await;
    assert_eq!(b, "v2");
    assert_eq!(cache_status(&h), "seawall; fwd=uri-miss; detail=vary-star");
    assert_eq!(origin.hits("/star"), 2);
    assert!(!is_stored(&proxy, "/star"));
}

// ---------------------------------------------------------------------------------------------
// Storability
// ---------------------------------------------------------------------------------------------

/// Two GETs of a response carrying `headers` both reach the origin, with `detail`.
async fn assert_not_stored(headers: &'static [(&'static str, &'static str)], detail: &str) {
    let origin = MockOrigin::new()
        .route("/p", counted(headers))
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    for i in 1..=2 {
        let (s, h, b) = get(&proxy.url("/p")).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(b, format!("v{i}"));
        assert_eq!(
            cache_status(&h),
            format!("seawall; fwd=uri-miss; detail={detail}")
        );
        assert_eq!(hv(&h, "x-cache"), "MISS");
        settle(&proxy).await;
    }
    assert_eq!(origin.hits("/p"), 2);
    assert!(!is_stored(&proxy, "/p"));
}

#[tokio::test]
async fn no_store_response_is_not_stored() {
    assert_not_stored(&[("cache-control", "no-store, max-age=60")], "no-store").await;
}

#[tokio::test]
async fn private_response_is_not_stored() {
    assert_not_stored(&[("cache-control", "private, max-age=60")], "private").await;
}

#[tokio::test]
async fn set_cookie_response_is_not_stored() {
    assert_not_stored(
        &[("cache-control", "max-age=60"), ("set-cookie", "sid=abc")],
        "set-cookie",
    )
    .await;
}

#[tokio::test]
async fn set_cookie_response_is_stored_when_the_route_opts_in() {
    let origin = MockOrigin::new()
        .route(
            "/sc",
            counted(&[("cache-control", "max-age=60"), ("set-cookie", "sid=abc")]),
        )
        .start()
        .await;
    let proxy =
        TestProxy::with_config(&config(&origin.url(), "", "", "cache_set_cookie = true")).await;

    let (_, h, b) = get(&proxy.url("/sc")).await;
    assert_eq!(b, "v1");
    assert_eq!(cache_status(&h), STORED);
    settle(&proxy).await;
    let (_, h, b) = get(&proxy.url("/sc")).await;
    assert_eq!(b, "v1");
    assert_hit(&h);
    assert_eq!(
        header_str(&h, "set-cookie"),
        "sid=abc",
        "the cookie is stored too"
    );
    assert_eq!(origin.hits("/sc"), 1);
}

#[tokio::test]
async fn request_with_authorization_is_not_stored_by_default() {
    let origin = MockOrigin::new()
        .route("/auth", counted(&[("cache-control", "max-age=60")]))
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    for i in 1..=2 {
        let (s, h, b) = get_with(&proxy.url("/auth"), &[("authorization", "Bearer secret")]).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(b, format!("v{i}"));
        assert_eq!(
            cache_status(&h),
            "seawall; fwd=uri-miss; detail=authorization"
        );
        settle(&proxy).await;
    }
    assert_eq!(origin.hits("/auth"), 2);
    // Not even an anonymous request can get the personal response.
    let (_, _, b) = get(&proxy.url("/auth")).await;
    assert_eq!(b, "v3");
    assert_eq!(origin.hits("/auth"), 3);
}

#[tokio::test]
async fn request_with_authorization_is_stored_when_the_response_allows_sharing() {
    let origin = MockOrigin::new()
        .route(
            "/public",
            counted(&[("cache-control", "public, max-age=60")]),
        )
        .route("/smax", counted(&[("cache-control", "s-maxage=60")]))
        .route(
            "/mr",
            counted(&[("cache-control", "max-age=60, must-revalidate")]),
        )
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    for path in ["/public", "/smax", "/mr"] {
        let url = proxy.url(path);
        let (_, h, b) = get_with(&url, &[("authorization", "Bearer secret")]).await;
        assert_eq!(b, "v1", "{path}");
        assert_eq!(cache_status(&h), STORED, "{path}");
        settle(&proxy).await;
        let (s, h, b) = get_with(&url, &[("authorization", "Bearer secret")]).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(b, "v1", "{path}");
        assert_hit(&h);
        assert_eq!(origin.hits(path), 1, "{path}");
    }
}

#[tokio::test]
async fn request_no_store_is_not_stored() {
    let origin = MockOrigin::new()
        .route("/rns", counted(&[("cache-control", "max-age=60")]))
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;

    let (s, h, b) = get_with(&proxy.url("/rns"), &[("cache-control", "no-store")]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, "v1");
    assert_eq!(
        cache_status(&h),
        "seawall; fwd=uri-miss; detail=request-no-store"
    );
    settle(&proxy).await;
    assert!(
        !is_stored(&proxy, "/rns"),
        "RFC 9111 §5.2.1.5: MUST NOT store"
    );

    let (_, h, b) = get(&proxy.url("/rns")).await;
    assert_eq!(b, "v2");
    assert_eq!(cache_status(&h), STORED);
    assert_eq!(origin.hits("/rns"), 2);
}

#[tokio::test]
async fn unknown_directives_and_pragma_do_not_prevent_caching() {
    let origin = MockOrigin::new()
        .route(
            "/u",
            counted(&[
                (
                    "cache-control",
                    "max-age=60, x-unknown=\"1, 2\", frobnicate",
                ),
                ("pragma", "x"),
            ]),
        )
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    let url = proxy.url("/u");

    let (_, h, b) = get_with(&url, &[("pragma", "x")]).await;
    assert_eq!(b, "v1");
    assert_eq!(cache_status(&h), STORED);
    settle(&proxy).await;
    let (_, h, b) = get_with(&url, &[("pragma", "x"), ("cache-control", "x-whatever")]).await;
    assert_eq!(b, "v1");
    assert_hit(&h);
    assert_eq!(origin.hits("/u"), 1);
}

#[tokio::test]
async fn cdn_cache_control_wins_over_cache_control() {
    let origin = MockOrigin::new()
        .route(
            "/cdn",
            counted(&[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=600"),
            ]),
        )
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;

    let (_, h, b) = get(&proxy.url("/cdn")).await;
    assert_eq!(b, "v1");
    assert_eq!(cache_status(&h), STORED);
    assert_eq!(header_str(&h, "cdn-cache-control"), "max-age=600");
    assert_eq!(header_str(&h, "cache-control"), "no-store");
    settle(&proxy).await;

    let (_, h, b) = get(&proxy.url("/cdn")).await;
    assert_eq!(b, "v1");
    assert_hit(&h);
    let ttl = ttl_of(&cache_status(&h));
    assert!((590..=600).contains(&ttl), "ttl {ttl}");
    assert_eq!(
        header_str(&h, "cdn-cache-control"),
        "max-age=600",
        "CDN-Cache-Control is for the next CDN"
    );
    assert_eq!(origin.hits("/cdn"), 1);
}

#[tokio::test]
async fn seawall_cache_control_wins_and_is_stripped() {
    let origin = MockOrigin::new()
        .route(
            "/sw",
            counted(&[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=600"),
                ("seawall-cache-control", "max-age=300"),
            ]),
        )
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;

    let (_, h, b) = get(&proxy.url("/sw")).await;
    assert_eq!(b, "v1");
    assert_eq!(cache_status(&h), STORED);
    assert!(!h.contains_key("seawall-cache-control"), "{h:?}");
    assert_eq!(header_str(&h, "cdn-cache-control"), "max-age=600");
    settle(&proxy).await;

    let (_, h, b) = get(&proxy.url("/sw")).await;
    assert_eq!(b, "v1");
    assert_hit(&h);
    let ttl = ttl_of(&cache_status(&h));
    assert!(
        (290..=300).contains(&ttl),
        "Seawall-Cache-Control comes first: {ttl}"
    );
    assert!(!h.contains_key("seawall-cache-control"), "{h:?}");
    assert_eq!(header_str(&h, "cdn-cache-control"), "max-age=600");
    assert_eq!(origin.hits("/sw"), 1);
}

#[tokio::test]
async fn surrogate_key_and_cache_tag_are_stripped_but_indexed() {
    let origin = MockOrigin::new()
        .route(
            "/t",
            MockResponse::ok("tagged")
                .header("cache-control", "max-age=60")
                .header("surrogate-key", "prod-1 cat-2")
                .header("cache-tag", "blue,green"),
        )
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;

    let (_, h, b) = get(&proxy.url("/t")).await;
    assert_eq!(b, "tagged");
    assert!(!h.contains_key("surrogate-key"), "{h:?}");
    assert!(!h.contains_key("cache-tag"), "{h:?}");
    settle(&proxy).await;

    let (_, h, b) = get(&proxy.url("/t")).await;
    assert_eq!(b, "tagged");
    assert_hit(&h);
    assert!(!h.contains_key("surrogate-key"), "{h:?}");
    assert!(!h.contains_key("cache-tag"), "{h:?}");
    assert_eq!(origin.hits("/t"), 1);

    let store = &proxy.running().state.cache().store;
    let key = key_of(&proxy, "/t");
    for tag in ["prod-1", "cat-2", "blue", "green"] {
        assert_eq!(store.keys_for_tag(tag), vec![key.clone()], "{tag}");
    }
}

#[tokio::test]
async fn age_from_upstream_counts_against_freshness() {
    let origin = MockOrigin::new()
        .route(
            "/aged",
            MockResponse::ok("aged")
                .header("cache-control", "max-age=60")
                .header("age", "50"),
        )
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;

    let (_, h, _) = get(&proxy.url("/aged")).await;
    assert_eq!(cache_status(&h), STORED);
    settle(&proxy).await;
    let (_, h, b) = get(&proxy.url("/aged")).await;
    assert_eq!(b, "aged");
    assert_hit(&h);
    assert!(age_of(&h) >= 50, "{h:?}");
    assert!(ttl_of(&cache_status(&h)) <= 10);

    advance(&proxy, 15);
    let (_, h, _) = get(&proxy.url("/aged")).await;
    assert!(cache_status(&h).starts_with("seawall; fwd=stale"), "{h:?}");
    assert_eq!(origin.hits("/aged"), 2);
}

#[tokio::test]
async fn s_maxage_and_expires_give_the_shared_lifetime() {
    let date = OriginDate::default();
    let origin = MockOrigin::new()
        .route(
            "/smax",
            dated(
                &date,
                counted(&[("cache-control", "max-age=10, s-maxage=120")]),
            ),
        )
        .route("/expires", move |_: &Parts, _: &Bytes| {
            let now = std::time::SystemTime::now();
            MockResponse::ok("exp")
                .header("date", &httpdate::fmt_http_date(now))
                .header(
                    "expires",
                    &httpdate::fmt_http_date(now + Duration::from_secs(120)),
                )
        })
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    date.link(&proxy);

    for path in ["/smax", "/expires"] {
        let (_, h, _) = get(&proxy.url(path)).await;
        assert_eq!(cache_status(&h), STORED, "{path}");
    }
    settle(&proxy).await;
    advance(&proxy, 60);
    for path in ["/smax", "/expires"] {
        let (_, h, _) = get(&proxy.url(path)).await;
        assert_hit(&h);
        let ttl = ttl_of(&cache_status(&h));
        assert!((55..=60).contains(&ttl), "{path}: ttl {ttl}");
        assert_eq!(origin.hits(path), 1, "{path}");
    }
    advance(&proxy, 61);
    for path in ["/smax", "/expires"] {
        let (_, h, _) = get(&proxy.url(path)).await;
        assert!(
            cache_status(&h).starts_with("seawall; fwd=stale"),
            "{path}: {h:?}"
        );
        assert_eq!(origin.hits(path), 2, "{path}");
    }
}

#[tokio::test]
async fn last_modified_gives_a_heuristic_lifetime() {
    let origin = MockOrigin::new()
        .route("/heur", move |_: &Parts, _: &Bytes| {
            let now = std::time::SystemTime::now();
            MockResponse::ok("heuristic")
                .header("date", &httpdate::fmt_http_date(now))
                .header(
                    "last-modified",
                    &httpdate::fmt_http_date(now - Duration::from_secs(1000)),
                )
        })
        .route("/none", MockResponse::ok("no freshness"))
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;

    let (_, h, _) = get(&proxy.url("/heur")).await;
    assert_eq!(cache_status(&h), STORED);
    settle(&proxy).await;
    let (_, h, b) = get(&proxy.url("/heur")).await;
    assert_eq!(b, "heuristic");
    assert_hit(&h);
    // A tenth of the time since Last-Modified.
    let ttl = ttl_of(&cache_status(&h));
    assert!((95..=100).contains(&ttl), "ttl {ttl}");
    assert_eq!(origin.hits("/heur"), 1);

    // A 200 without validators or freshness is stored (heuristically cacheable status) but
    // has no lifetime: every request goes to the origin.
    for i in 1..=2 {
        let (s, _, b) = get(&proxy.url("/none")).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(b, "no freshness");
        settle(&proxy).await;
        assert_eq!(origin.hits("/none"), i);
    }
}

#[tokio::test]
async fn no_cache_response_is_stored_but_revalidated_every_time() {
    let route = |parts: &Parts, _: &Bytes| {
        if parts
            .headers
            .get("if-none-match")
            .is_some_and(|v| v == "\"nc\"")
        {
            MockResponse::with_status(304).header("etag", "\"nc\"")
        } else {
            MockResponse::ok("nc-body")
                .header("etag", "\"nc\"")
                .header("cache-control", "no-cache, max-age=600")
        }
    };
    let origin = MockOrigin::new().route("/nc", route).start().await;
    let proxy = TestProxy::start(&origin.url()).await;

    let (_, _, b) = get(&proxy.url("/nc")).await;
    assert_eq!(b, "nc-body");
    wait_stored(&proxy, "/nc").await;
    for i in 2..=3 {
        let (s, h, b) = get(&proxy.url("/nc")).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(b, "nc-body");
        assert!(
            cache_status(&h).starts_with("seawall; fwd=stale; fwd-status=304"),
            "{h:?}"
        );
        assert_eq!(origin.hits("/nc"), i);
        assert_eq!(
            header_str(&origin.requests("/nc")[i as usize - 1], "if-none-match"),
            "\"nc\""
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Request directives
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn request_no_cache_forces_revalidation() {
    let date = OriginDate::default();
    let origin = MockOrigin::new()
        .route("/r", dated(&date, etag_route))
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    date.link(&proxy);
    let url = proxy.url("/r");

    get(&url).await;
    settle(&proxy).await;

    let (s, h, b) = get_with(&url, &[("cache-control", "no-cache")]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, "body-1");
    assert!(
        cache_status(&h).starts_with("seawall; fwd=request; fwd-status=304"),
        "{h:?}"
    );
    assert_eq!(hv(&h, "x-cache"), "REVALIDATED");
    assert_eq!(origin.hits("/r"), 2);
    assert_eq!(
        header_str(&origin.requests("/r")[1], "if-none-match"),
        "\"e1\""
    );

    // Pragma: no-cache counts when Cache-Control is absent.
    let (_, h, b) = get_with(&url, &[("pragma", "no-cache")]).await;
    assert_eq!(b, "body-1");
    assert!(
        cache_status(&h).starts_with("seawall; fwd=request; fwd-status=304"),
        "{h:?}"
    );
    assert_eq!(origin.hits("/r"), 3);

    let (_, h, _) = get(&url).await;
    assert_hit(&h);
    assert_eq!(origin.hits("/r"), 3);
}

#[tokio::test]
async fn request_max_age_limits_the_acceptable_age() {
    let date = OriginDate::default();
    let origin = MockOrigin::new()
        .route(
            "/ma",
            dated(&date, counted(&[("cache-control", "max-age=600")])),
        )
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    date.link(&proxy);
    let url = proxy.url("/ma");

    get(&url).await;
    settle(&proxy).await;
    advance(&proxy, 30);

    let (_, h, b) = get_with(&url, &[("cache-control", "max-age=120")]).await;
    assert_eq!(b, "v1");
    assert_hit(&h);
    assert_eq!(origin.hits("/ma"), 1);

    let (_, h, b) = get_with(&url, &[("cache-control", "max-age=10")]).await;
    assert_eq!(b, "v2");
    assert_eq!(
        cache_status(&h),
        "seawall; fwd=request; fwd-status=200; stored"
    );
    assert_eq!(origin.hits("/ma"), 2);
    settle(&proxy).await;

    let (_, h, b) = get_with(&url, &[("cache-control", "max-age=0")]).await;
    assert_eq!(b, "v3");
    assert!(
        cache_status(&h).starts_with("seawall; fwd=request"),
        "{h:?}"
    );
    assert_eq!(origin.hits("/ma"), 3);
}

#[tokio::test]
async fn request_min_fresh_needs_that_much_freshness_left() {
    let origin = MockOrigin::new()
        .route("/mf", counted(&[("cache-control", "max-age=100")]))
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    let url = proxy.url("/mf");

    get(&url).await;
    settle(&proxy).await;

    let (_, h, b) = get_with(&url, &[("cache-control", "min-fresh=10")]).await;
    assert_eq!(b, "v1");
    assert_hit(&h);
    assert_eq!(origin.hits("/mf"), 1);

    let (_, h, b) = get_with(&url, &[("cache-control", "min-fresh=200")]).await;
    assert_eq!(b, "v2");
    assert!(
        cache_status(&h).starts_with("seawall; fwd=request"),
        "{h:?}"
    );
    assert_eq!(origin.hits("/mf"), 2);
}

#[tokio::test]
async fn request_max_stale_serves_stale_but_never_must_revalidate() {
    let origin = MockOrigin::new()
        .route("/s", counted(&[("cache-control", "max-age=10")]))
        .route(
            "/mr",
            counted(&[("cache-control", "max-age=10, must-revalidate")]),
        )
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    get(&proxy.url("/s")).await;
    get(&proxy.url("/mr")).await;
    settle(&proxy).await;
    advance(&proxy, 30);

    let (s, h, b) = get_with(&proxy.url("/s"), &[("cache-control", "max-stale=60")]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, "v1");
    let cs = cache_status(&h);
    assert!(cs.starts_with("seawall; hit; ttl=-"), "{cs}");
    assert!(cs.ends_with("; detail=max-stale"), "{cs}");
    assert_eq!(hv(&h, "x-cache"), "STALE");
    assert!(age_of(&h) >= 30);
    let (_, _, b) = get_with(&proxy.url("/s"), &[("cache-control", "max-stale")]).await;
    assert_eq!(b, "v1");
    assert_eq!(origin.hits("/s"), 1);

    // Stale by more than the client accepts.
    let (_, h, b) = get_with(&proxy.url("/s"), &[("cache-control", "max-stale=5")]).await;
    assert_eq!(b, "v2");
    assert!(cache_status(&h).starts_with("seawall; fwd=stale"), "{h:?}");
    assert_eq!(origin.hits("/s"), 2);

    let (_, h, b) = get_with(&proxy.url("/mr"), &[("cache-control", "max-stale")]).await;
    assert_eq!(b, "v2", "must-revalidate is never served stale");
    assert!(cache_status(&h).starts_with("seawall; fwd=stale"), "{h:?}");
    assert_eq!(origin.hits("/mr"), 2);
}

#[tokio::test]
async fn only_if_cached_answers_504_or_the_stored_response() {
    let origin = MockOrigin::new()
        .route("/o", counted(&[("cache-control", "max-age=60")]))
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    let url = proxy.url("/o");

    let (s, h, _) = get_with(&url, &[("cache-control", "only-if-cached")]).await;
    assert_eq!(s, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        cache_status(&h),
        "seawall; fwd=uri-miss; detail=only-if-cached"
    );
    assert_eq!(origin.hits("/o"), 0);

    get(&url).await;
    settle(&proxy).await;
    let (s, h, b) = get_with(&url, &[("cache-control", "only-if-cached")]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, "v1");
    assert_hit(&h);
    assert_eq!(origin.hits("/o"), 1);

    // Stored but stale: still nothing the client may get without the origin.
    advance(&proxy, 61);
    let (s, _, _) = get_with(&url, &[("cache-control", "only-if-cached")]).await;
    assert_eq!(s, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(origin.hits("/o"), 1);
}

// ---------------------------------------------------------------------------------------------
// Serving from the store: HEAD, Range, conditionals
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn head_is_answered_from_the_stored_get() {
    let origin = MockOrigin::new()
        .route(
            "/h",
            MockResponse::ok("hello world").header("cache-control", "max-age=60"),
        )
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    get(&proxy.url("/h")).await;
    settle(&proxy).await;

    let req = Request::head(proxy.url("/h"))
        .body(Full::default())
        .unwrap();
    let (s, h, b) = request(req).await;
    assert_eq!(s, StatusCode::OK);
    assert!(b.is_empty());
    assert_eq!(header_str(&h, "content-length"), "11");
    assert_hit(&h);
    assert_eq!(origin.hits("/h"), 1);
}

#[tokio::test]
async fn range_on_a_stored_response_gets_206() {
    let origin = MockOrigin::new()
        .route(
            "/rg",
            MockResponse::ok("0123456789abcdef").header("cache-control", "max-age=60"),
        )
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    get(&proxy.url("/rg")).await;
    settle(&proxy).await;

    let (s, h, b) = get_with(&proxy.url("/rg"), &[("range", "bytes=2-5")]).await;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT);
    assert_eq!(b, "2345");
    assert_eq!(header_str(&h, "content-range"), "bytes 2-5/16");
    assert_eq!(header_str(&h, "content-length"), "4");
    assert_hit(&h);

    let (s, h, b) = get_with(&proxy.url("/rg"), &[("range", "bytes=-3")]).await;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT);
    assert_eq!(b, "def");
    assert_eq!(header_str(&h, "content-range"), "bytes 13-15/16");

    let (s, h, _) = get_with(&proxy.url("/rg"), &[("range", "bytes=100-")]).await;
    assert_eq!(s, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header_str(&h, "content-range"), "bytes */16");
    assert_eq!(origin.hits("/rg"), 1);
}

#[tokio::test]
async fn client_if_none_match_on_a_fresh_entry_gets_304_from_the_cache() {
    let date = OriginDate::default();
    let origin = MockOrigin::new()
        .route("/r", dated(&date, etag_route))
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    date.link(&proxy);
    get(&proxy.url("/r")).await;
    settle(&proxy).await;

    let (s, h, b) = get_with(&proxy.url("/r"), &[("if-none-match", "\"e1\"")]).await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);
    assert!(b.is_empty());
    assert_eq!(header_str(&h, "etag"), "\"e1\"");
    assert!(!h.contains_key("content-length") || header_str(&h, "content-length") == "0");
    assert_hit(&h);

    let (s, _, b) = get_with(&proxy.url("/r"), &[("if-none-match", "\"other\"")]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, "body-1");
    assert_eq!(origin.hits("/r"), 1);
}

#[tokio::test]
async fn client_if_none_match_on_a_miss_stores_the_full_response() {
    let origin = MockOrigin::new().route("/r", etag_route).start().await;
    let proxy = TestProxy::start(&origin.url()).await;

    let (s, h, b) = get_with(&proxy.url("/r"), &[("if-none-match", "\"e1\"")]).await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);
    assert!(b.is_empty());
    assert_eq!(cache_status(&h), STORED);
    assert!(
        !origin.requests("/r")[0].contains_key("if-none-match"),
        "the shared fetch is unconditional"
    );
    settle(&proxy).await;

    let (s, h, b) = get(&proxy.url("/r")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, "body-1");
    assert_hit(&h);
    assert_eq!(origin.hits("/r"), 1);
}

// ---------------------------------------------------------------------------------------------
// Stale serving (RFC 5861)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_serves_stale_and_refreshes_once() {
    let n = Arc::new(AtomicU64::new(0));
    let route = move |_: &Parts, _: &Bytes| {
        let i = n.fetch_add(1, Ordering::SeqCst) + 1;
        let r = MockResponse::ok(format!("v{i}"))
            .header("cache-control", "max-age=10, stale-while-revalidate=600");
        // The refresh is slow, so every client below arrives while it is running.
        if i == 1 { r } else { r.delay(1000) }
    };
    let date = OriginDate::default();
    let origin = MockOrigin::new()
        .route("/swr", dated(&date, route))
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    date.link(&proxy);
    let url = proxy.url("/swr");

    let (_, _, b) = get(&url).await;
    assert_eq!(b, "v1");
    settle(&proxy).await;
    advance(&proxy, 20);

    let answers = burst(20, |_| {
        let url = url.clone();
        async move { get(&url).await }
    })
    .await;
    for (s, h, b) in &answers {
        assert_eq!(*s, StatusCode::OK);
        assert_eq!(b, "v1", "the stale body at once");
        let cs = cache_status(h);
        assert!(cs.starts_with("seawall; hit; ttl=-"), "{cs}");
        assert!(cs.ends_with("; detail=stale-while-revalidate"), "{cs}");
        assert_eq!(hv(h, "x-cache"), "STALE");
        assert!(age_of(h) >= 20);
    }

    // Exactly one background refresh.
    origin.wait_hits("/swr", 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(origin.hits("/swr"), 2);

    wait_until("refreshed entry stored", || {
        stored_body(&proxy, "/swr").is_some_and(|b| b == "v2")
    })
    .await;
    let (_, h, b) = get(&url).await;
    assert_eq!(b, "v2");
    assert_hit(&h);
    assert_eq!(origin.hits("/swr"), 2);
}

#[tokio::test]
async fn stale_if_error_serves_stale_when_the_origin_answers_503() {
    let failing = Arc::new(AtomicBool::new(false));
    let ok = MockResponse::ok("good").header("cache-control", "max-age=10, stale-if-error=600");
    let origin = MockOrigin::new()
        .route("/sie", switchable(failing.clone(), ok))
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    get(&proxy.url("/sie")).await;
    settle(&proxy).await;

    failing.store(true, Ordering::SeqCst);
    advance(&proxy, 20);
    let (s, h, b) = get(&proxy.url("/sie")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, "good");
    assert_eq!(
        cache_status(&h),
        "seawall; fwd=stale; fwd-status=503; detail=stale-if-error"
    );
    assert_eq!(hv(&h, "x-cache"), "STALE");
    assert!(age_of(&h) >= 20);
    assert_eq!(origin.hits("/sie"), 2);

    // Past the window the error goes through.
    advance(&proxy, 600);
    let (s, _, b) = get(&proxy.url("/sie")).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(b, "origin down");
    assert_eq!(origin.hits("/sie"), 3);
}

#[tokio::test]
async fn stale_if_error_serves_stale_when_the_origin_is_unreachable() {
    let origin = MockOrigin::new()
        .route(
            "/sie",
            MockResponse::ok("good").header("cache-control", "max-age=10, stale-if-error=600"),
        )
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    get(&proxy.url("/sie")).await;
    settle(&proxy).await;
    assert_eq!(origin.hits("/sie"), 1);

    stop(origin).await;
    advance(&proxy, 20);
    let (s, h, b) = get(&proxy.url("/sie")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, "good");
    assert_eq!(
        cache_status(&h),
        "seawall; fwd=stale; detail=stale-if-error"
    );
    assert_eq!(hv(&h, "x-cache"), "STALE");
}

#[tokio::test]
async fn route_stale_if_error_applies_without_the_directive() {
    let failing = Arc::new(AtomicBool::new(false));
    let ok = MockResponse::ok("good").header("cache-control", "max-age=10");
    let origin = MockOrigin::new()
        .route("/rsie", switchable(failing.clone(), ok.clone()))
        .route("/refused", ok)
        .start()
        .await;
    let proxy =
        TestProxy::with_config(&config(&origin.url(), "", "", "stale_if_error = \"10m\"")).await;
    get(&proxy.url("/rsie")).await;
    get(&proxy.url("/refused")).await;
    settle(&proxy).await;

    failing.store(true, Ordering::SeqCst);
    advance(&proxy, 20);
    let (s, h, b) = get(&proxy.url("/rsie")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, "good");
    assert_eq!(
        cache_status(&h),
        "seawall; fwd=stale; fwd-status=503; detail=stale-if-error"
    );
    assert_eq!(origin.hits("/rsie"), 2);

    stop(origin).await;
    let (s, h, b) = get(&proxy.url("/refused")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, "good");
    assert_eq!(
        cache_status(&h),
        "seawall; fwd=stale; detail=stale-if-error"
    );
}

#[tokio::test]
async fn must_revalidate_blocks_stale_if_error() {
    let failing = Arc::new(AtomicBool::new(false));
    let ok = MockResponse::ok("good").header(
        "cache-control",
        "max-age=10, must-revalidate, stale-if-error=600",
    );
    let origin = MockOrigin::new()
        .route("/m", switchable(failing.clone(), ok.clone()))
        .route("/m2", ok)
        .start()
        .await;
    let proxy =
        TestProxy::with_config(&config(&origin.url(), "", "", "stale_if_error = \"10m\"")).await;
    get(&proxy.url("/m")).await;
    get(&proxy.url("/m2")).await;
    settle(&proxy).await;

    failing.store(true, Ordering::SeqCst);
    advance(&proxy, 20);
    let (s, h, b) = get(&proxy.url("/m")).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(b, "origin down");
    assert_eq!(cache_status(&h), "seawall; fwd=stale; fwd-status=503");
    assert_eq!(origin.hits("/m"), 2);

    stop(origin).await;
    let (s, h, _) = get(&proxy.url("/m2")).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY);
    assert_eq!(
        cache_status(&h),
        "seawall; fwd=stale; detail=upstream-refused"
    );
}

// ---------------------------------------------------------------------------------------------
// Invalidation
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn unsafe_methods_invalidate_the_target() {
    let n = Arc::new(AtomicU64::new(0));
    let route = move |parts: &Parts, _: &Bytes| {
        if parts.method == Method::GET {
            let i = n.fetch_add(1, Ordering::SeqCst) + 1;
            MockResponse::ok(format!("v{i}")).header("cache-control", "max-age=600")
        } else {
            MockResponse::ok("done")
        }
    };
    let origin = MockOrigin::new().route("/item", route).start().await;
    let proxy = TestProxy::start(&origin.url()).await;
    let url = proxy.url("/item");

    let (_, _, b) = get(&url).await;
    assert_eq!(b, "v1");
    settle(&proxy).await;
    let (_, h, b) = get(&url).await;
    assert_eq!(b, "v1");
    assert_hit(&h);

    let mut expected = 1;
    for method in [Method::POST, Method::PUT, Method::DELETE] {
        let req = Request::builder()
            .method(method.clone())
            .uri(&url)
            .body(Full::new(Bytes::from_static(b"x")))
            .unwrap();
        let (s, h, b) = request(req).await;
        assert_eq!(s, StatusCode::OK, "{method}");
        assert_eq!(b, "done");
        assert_eq!(cache_status(&h), "seawall; fwd=bypass; detail=method");

        expected += 1;
        let (_, h, b) = get(&url).await;
        assert_eq!(b, format!("v{expected}"), "after {method}");
        assert_eq!(cache_status(&h), STORED, "after {method}");
        settle(&proxy).await;
        let (_, h, b) = get(&url).await;
        assert_eq!(b, format!("v{expected}"));
        assert_hit(&h);
    }
    // Four GETs and the three unsafe requests.
    assert_eq!(origin.hits("/item"), 4 + 3);
}

#[tokio::test]
async fn unsafe_method_invalidates_same_origin_location_and_content_location() {
    let n = Arc::new(AtomicU64::new(0));
    let item = move |_: &Parts, _: &Bytes| {
        let i = n.fetch_add(1, Ordering::SeqCst) + 1;
        MockResponse::ok(format!("item v{i}")).header("cache-control", "max-age=600")
    };
    let m = Arc::new(AtomicU64::new(0));
    let other = move |_: &Parts, _: &Bytes| {
        let i = m.fetch_add(1, Ordering::SeqCst) + 1;
        MockResponse::ok(format!("other v{i}")).header("cache-control", "max-age=600")
    };
    let create = |parts: &Parts, _: &Bytes| {
        let host = header_str(&parts.headers, "host").to_string();
        MockResponse::ok("created")
            .status(201)
            .header("location", "/items/1")
            .header("content-location", &format!("http://{host}/items/2"))
    };
    let origin = MockOrigin::new()
        .route("/items", create)
        .route("/items/1", item)
        .route("/items/2", other)
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;

    for p in ["/items/1", "/items/2"] {
        get(&proxy.url(p)).await;
    }
    settle(&proxy).await;
    for p in ["/items/1", "/items/2"] {
        let (_, h, _) = get(&proxy.url(p)).await;
        assert_hit(&h);
    }

    let req = Request::post(proxy.url("/items"))
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let (s, _, _) = request(req).await;
    assert_eq!(s, StatusCode::CREATED);

    let (_, h, b) = get(&proxy.url("/items/1")).await;
    assert_eq!(b, "item v2", "Location invalidated");
    assert_eq!(cache_status(&h), STORED);
    let (_, h, b) = get(&proxy.url("/items/2")).await;
    assert_eq!(b, "other v2", "Content-Location invalidated");
    assert_eq!(cache_status(&h), STORED);
    assert_eq!(origin.hits("/items/1"), 2);
    assert_eq!(origin.hits("/items/2"), 2);
}

// ---------------------------------------------------------------------------------------------
// Limits and failures
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn object_larger_than_max_object_size_passes_through_unstored() {
    let big = payload(1024 * 1024);
    let chunks: Vec<Bytes> = big.chunks(64 * 1024).map(Bytes::copy_from_slice).collect();
    let origin = MockOrigin::new()
        .route(
            "/big",
            MockResponse::ok(big.clone()).header("cache-control", "max-age=60"),
        )
        .route(
            "/big-chunked",
            MockResponse::ok(Bytes::new())
                .header("cache-control", "max-age=60")
                .chunked(chunks, 0),
        )
        .start()
        .await;
    let proxy = TestProxy::with_config(&config(
        &origin.url(),
        "[cache]\nmax_object_size = \"64KiB\"",
        "",
        "",
    ))
    .await;

    for path in ["/big", "/big-chunked"] {
        for i in 1..=2 {
            let (s, h, b) = get(&proxy.url(path)).await;
            assert_eq!(s, StatusCode::OK, "{path}");
            assert_eq!(b.len(), big.len(), "{path}");
            assert!(b == big, "{path}: body intact");
            assert_eq!(hv(&h, "x-cache"), "MISS", "{path}");
            settle(&proxy).await;
            assert!(!is_stored(&proxy, path), "{path}");
            assert_eq!(origin.hits(path), i, "{path}");
        }
    }
}

#[tokio::test]
async fn oversized_response_is_not_reported_as_stored() {
    let origin = MockOrigin::new()
        .route(
            "/big",
            MockResponse::ok(payload(1024 * 1024)).header("cache-control", "max-age=60"),
        )
        .start()
        .await;
    let proxy = TestProxy::with_config(&config(
        &origin.url(),
        "[cache]\nmax_object_size = \"64KiB\"",
        "",
        "",
    ))
    .await;
    let (s, h, b) = get(&proxy.url("/big")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b.len(), 1024 * 1024);
    settle(&proxy).await;
    assert!(!is_stored(&proxy, "/big"));
    // RFC 9211 §2.6: `stored` means the cache stored the response.
    let cs = cache_status(&h);
    assert!(cs.starts_with("seawall; fwd=uri-miss"), "{cs}");
    assert!(!cs.contains("stored"), "{cs}");
}

#[tokio::test]
async fn body_that_ends_early_is_not_stored() {
    let origin = MockOrigin::new()
        .route(
            "/cut",
            MockResponse::ok(payload(200_000))
                .header("cache-control", "max-age=60")
                .reset_after(50_000),
        )
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;

    for i in 1..=2 {
        let res = send(
            Request::get(proxy.url("/cut"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(
            read_body(res.into_body()).await.is_err(),
            "the client sees the cut"
        );
        settle(&proxy).await;
        assert!(!is_stored(&proxy, "/cut"));
        assert_eq!(origin.hits("/cut"), i);
    }
}

#[tokio::test]
async fn kill_switch_makes_every_request_reach_the_origin() {
    let origin = MockOrigin::new()
        .route("/k", counted(&[("cache-control", "max-age=60")]))
        .start()
        .await;
    let proxy =
        TestProxy::with_config(&config(&origin.url(), "[cache]\nenabled = false", "", "")).await;
    for i in 1..=3 {
        let (s, h, b) = get(&proxy.url("/k")).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(b, format!("v{i}"));
        assert_eq!(
            cache_status(&h),
            "seawall; fwd=bypass; detail=cache-disabled"
        );
        assert_eq!(hv(&h, "x-cache"), "BYPASS");
    }
    assert_eq!(origin.hits("/k"), 3);
    assert!(!is_stored(&proxy, "/k"));
}

#[tokio::test]
async fn get_with_a_body_bypasses_the_cache() {
    let origin = MockOrigin::new()
        .route("/gb", counted(&[("cache-control", "max-age=60")]))
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    for i in 1..=2 {
        let req = Request::get(proxy.url("/gb"))
            .body(Full::new(Bytes::from_static(b"query-in-body")))
            .unwrap();
        let (s, h, b) = request(req).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(b, format!("v{i}"));
        assert_eq!(cache_status(&h), "seawall; fwd=bypass; detail=request-body");
    }
    assert_eq!(origin.hits("/gb"), 2);
    assert_eq!(origin.received("/gb")[0].body, "query-in-body");
    assert!(!is_stored(&proxy, "/gb"));
}

#[tokio::test]
async fn store_stays_within_max_size() {
    const N: usize = 96;
    let mut b = MockOrigin::new();
    for i in 0..N {
        b = b.route(
            &format!("/obj/{i}"),
            MockResponse::ok(payload(32 * 1024)).header("cache-control", "max-age=600"),
        );
    }
    let origin = b.start().await;
    let proxy = TestProxy::with_config(&config(
        &origin.url(),
        "[cache]\nmax_size = \"1MiB\"\nmax_object_size = \"64KiB\"",
        "",
        "",
    ))
    .await;
    let body = payload(32 * 1024);
    for i in 0..N {
        let (s, _, b) = get(&proxy.url(&format!("/obj/{i}"))).await;
        assert_eq!(s, StatusCode::OK);
        assert!(b == body, "/obj/{i} intact");
    }
    settle(&proxy).await;
    assert_eq!(origin.total_hits(), N as u64);

    let store = &proxy.running().state.cache().store;
    store.run_pending_tasks();
    assert_eq!(store.capacity(), 1024 * 1024);
    assert!(
        store.weighted_size() <= store.capacity(),
        "{} > {}",
        store.weighted_size(),
        store.capacity()
    );
    let count = store.entry_count();
    assert!(count >= 1 && count < N as u64, "{count} entries");
}

// ---------------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn http1_and_http2_requests_share_entries() {
    let origin = MockOrigin::new()
        .route("/one", counted(&[("cache-control", "max-age=60")]))
        .route("/two", counted(&[("cache-control", "max-age=60")]))
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;

    let (_, h, b) = get(&proxy.url("/one")).await;
    assert_eq!(b, "v1");
    assert_eq!(cache_status(&h), STORED);
    settle(&proxy).await;
    let (s, h, b) = h2_get(&proxy.url("/one")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, "v1", "stored over HTTP/1.1, hit over HTTP/2");
    assert_hit(&h);

    let (_, h, b) = h2_get(&proxy.url("/two")).await;
    assert_eq!(b, "v1");
    assert_eq!(cache_status(&h), STORED);
    settle(&proxy).await;
    let (_, h, b) = get(&proxy.url("/two")).await;
    assert_eq!(b, "v1", "stored over HTTP/2, hit over HTTP/1.1");
    assert_hit(&h);

    assert_eq!(origin.hits("/one"), 1);
    assert_eq!(origin.hits("/two"), 1);
    assert_eq!(origin.received("/one")[0].version, http::Version::HTTP_11);
}

#[tokio::test]
async fn cache_host_aliases_share_entries() {
    let origin = MockOrigin::new()
        .route("/ch", counted(&[("cache-control", "max-age=60")]))
        .start()
        .await;
    let proxy = TestProxy::with_config(&config(
        &origin.url(),
        "",
        "",
        // `cache_host` needs `host` (else every Host would share the key): one route per alias.
        "host = \"shop.example\"\ncache_host = \"shop.internal\"\n\n\
         [[routes]]\nupstream = \"origin\"\nhost = \"www.shop.example\"\n\
         cache_host = \"shop.internal\"",
    ))
    .await;
    let url = proxy.url("/ch");

    let (_, h, b) = get_with(&url, &[("host", "shop.example")]).await;
    assert_eq!(b, "v1");
    assert_eq!(cache_status(&h), STORED);
    settle(&proxy).await;
    for host in ["www.shop.example", "SHOP.example:8080", "shop.example"] {
        let (s, h, b) = get_with(&url, &[("host", host)]).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(b, "v1", "{host}");
        assert_hit(&h);
    }
    assert_eq!(origin.hits("/ch"), 1);
    assert!(
        proxy
            .running()
            .state
            .cache()
            .store
            .variants("http://shop.internal/ch")
            .is_some()
    );
}

#[tokio::test]
async fn ignored_query_parameters_share_entries() {
    let origin = MockOrigin::new()
        .route("/q", counted(&[("cache-control", "max-age=60")]))
        .start()
        .await;
    let proxy = TestProxy::with_config(&config(
        &origin.url(),
        "",
        "",
        "ignore_query_params = [\"utm_source\", \"fbclid\"]",
    ))
    .await;

    let (_, h, b) = get(&proxy.url("/q?id=1&utm_source=news")).await;
    assert_eq!(b, "v1");
    assert_eq!(cache_status(&h), STORED);
    settle(&proxy).await;
    for q in ["/q?utm_source=ads&id=1", "/q?id=1", "/q?id=1&fbclid=xyz"] {
        let (_, h, b) = get(&proxy.url(q)).await;
        assert_eq!(b, "v1", "{q}");
        assert_hit(&h);
    }
    assert_eq!(origin.hits("/q"), 1);

    let (_, h, b) = get(&proxy.url("/q?id=2&utm_source=news")).await;
    assert_eq!(b, "v2", "other parameters still count");
    assert_eq!(cache_status(&h), STORED);
    assert_eq!(origin.hits("/q"), 2);
    // The origin still gets the full query.
    assert_eq!(
        origin.received("/q")[0].uri.query(),
        Some("id=1&utm_source=news")
    );
}
