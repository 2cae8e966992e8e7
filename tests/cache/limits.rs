//! Limits and failures.

use super::*;

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
    let Scene { origin, proxy } = MockOrigin::new()
        .route(
            "/cut",
            MockResponse::ok(payload(200_000))
                .header("cache-control", "max-age=60")
                .reset_after(50_000),
        )
        .behind_proxy()
        .await;

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
    let Scene { origin, proxy } = MockOrigin::new()
        .route("/k", counted(&[("cache-control", "max-age=60")]))
        .behind_proxy_with(|url| config(url, "[cache]\nenabled = false", "", ""))
        .await;
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
    let Scene { origin, proxy } = MockOrigin::new()
        .route("/gb", counted(&[("cache-control", "max-age=60")]))
        .behind_proxy()
        .await;
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
