//! Stale serving (RFC 5861).

use super::*;

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
    let Scene { origin, proxy } = MockOrigin::new()
        .route("/swr", dated(&date, route))
        .behind_proxy()
        .await;
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
    let Scene { origin, proxy } = MockOrigin::new()
        .route("/sie", switchable(failing.clone(), ok))
        .behind_proxy()
        .await;
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
    let Scene { origin, proxy } = MockOrigin::new()
        .route(
            "/sie",
            MockResponse::ok("good").header("cache-control", "max-age=10, stale-if-error=600"),
        )
        .behind_proxy()
        .await;
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
    let Scene { origin, proxy } = MockOrigin::new()
        .route("/rsie", switchable(failing.clone(), ok.clone()))
        .route("/refused", ok)
        .behind_proxy_with(|url| config(url, "", "", "stale_if_error = \"10m\""))
        .await;
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
    let Scene { origin, proxy } = MockOrigin::new()
        .route("/m", switchable(failing.clone(), ok.clone()))
        .route("/m2", ok)
        .behind_proxy_with(|url| config(url, "", "", "stale_if_error = \"10m\""))
        .await;
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
