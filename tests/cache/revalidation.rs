//! Revalidation.

use super::*;

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
    let Scene { origin, proxy } = MockOrigin::new()
        .route("/r", dated(&date, etag_route))
        .behind_proxy()
        .await;
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
    let Scene { origin, proxy } = MockOrigin::new()
        .route("/lm", dated(&date, last_modified_route))
        .behind_proxy()
        .await;
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
    let Scene { origin, proxy } = MockOrigin::new()
        .route("/r", dated(&date, etag_route))
        .behind_proxy()
        .await;
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
    let Scene { origin, proxy } = MockOrigin::new()
        .route("/page", dated(&date, route))
        .behind_proxy()
        .await;
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
    let Scene { origin, proxy } = MockOrigin::new()
        .route("/c", dated(&date, route))
        .behind_proxy()
        .await;
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
