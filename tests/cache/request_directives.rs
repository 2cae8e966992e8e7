//! Request directives.

use super::*;

#[tokio::test]
async fn request_no_cache_forces_revalidation() {
    let date = OriginDate::default();
    let Scene { origin, proxy } = MockOrigin::new()
        .route("/r", dated(&date, etag_route))
        .behind_proxy()
        .await;
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
    let Scene { origin, proxy } = MockOrigin::new()
        .route(
            "/ma",
            dated(&date, counted(&[("cache-control", "max-age=600")])),
        )
        .behind_proxy()
        .await;
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
    let Scene { origin, proxy } = MockOrigin::new()
        .route("/mf", counted(&[("cache-control", "max-age=100")]))
        .behind_proxy()
        .await;
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
    let Scene { origin, proxy } = MockOrigin::new()
        .route("/s", counted(&[("cache-control", "max-age=10")]))
        .route(
            "/mr",
            counted(&[("cache-control", "max-age=10, must-revalidate")]),
        )
        .behind_proxy()
        .await;
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
    let Scene { origin, proxy } = MockOrigin::new()
        .route("/o", counted(&[("cache-control", "max-age=60")]))
        .behind_proxy()
        .await;
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
