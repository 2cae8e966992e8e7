//! Freshness.

use super::*;

#[tokio::test]
async fn fresh_response_is_served_from_the_cache_with_age() {
    let Scene { origin, proxy } = MockOrigin::new()
        .route(
            "/a",
            MockResponse::ok("hello").header("cache-control", "max-age=60"),
        )
        .behind_proxy()
        .await;

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
    let Scene { origin, proxy } = MockOrigin::new()
        .route(
            "/e",
            dated(&date, counted(&[("cache-control", "max-age=60")])),
        )
        .behind_proxy()
        .await;
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
