//! Storability.

use super::*;

/// Two GETs of a response carrying `headers` both reach the origin, with `detail`.
async fn assert_not_stored(headers: &'static [(&'static str, &'static str)], detail: &str) {
    let Scene { origin, proxy } = MockOrigin::new()
        .route("/p", counted(headers))
        .behind_proxy()
        .await;
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
    let Scene { origin, proxy } = MockOrigin::new()
        .route(
            "/sc",
            counted(&[("cache-control", "max-age=60"), ("set-cookie", "sid=abc")]),
        )
        .behind_proxy_with(|url| config(url, "", "", "cache_set_cookie = true"))
        .await;

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
    let Scene { origin, proxy } = MockOrigin::new()
        .route("/auth", counted(&[("cache-control", "max-age=60")]))
        .behind_proxy()
        .await;
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
    let Scene { origin, proxy } = MockOrigin::new()
        .route(
            "/public",
            counted(&[("cache-control", "public, max-age=60")]),
        )
        .route("/smax", counted(&[("cache-control", "s-maxage=60")]))
        .route(
            "/mr",
            counted(&[("cache-control", "max-age=60, must-revalidate")]),
        )
        .behind_proxy()
        .await;
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
    let Scene { origin, proxy } = MockOrigin::new()
        .route("/rns", counted(&[("cache-control", "max-age=60")]))
        .behind_proxy()
        .await;

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
    let Scene { origin, proxy } = MockOrigin::new()
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
        .behind_proxy()
        .await;
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
    let Scene { origin, proxy } = MockOrigin::new()
        .route(
            "/cdn",
            counted(&[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=600"),
            ]),
        )
        .behind_proxy()
        .await;

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
    let Scene { origin, proxy } = MockOrigin::new()
        .route(
            "/sw",
            counted(&[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=600"),
                ("seawall-cache-control", "max-age=300"),
            ]),
        )
        .behind_proxy()
        .await;

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
    let Scene { origin, proxy } = MockOrigin::new()
        .route(
            "/t",
            MockResponse::ok("tagged")
                .header("cache-control", "max-age=60")
                .header("surrogate-key", "prod-1 cat-2")
                .header("cache-tag", "blue,green"),
        )
        .behind_proxy()
        .await;

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
    let Scene { origin, proxy } = MockOrigin::new()
        .route(
            "/aged",
            MockResponse::ok("aged")
                .header("cache-control", "max-age=60")
                .header("age", "50"),
        )
        .behind_proxy()
        .await;

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
