//! Invalidation.

use super::*;

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
    let Scene { origin, proxy } = MockOrigin::new()
        .route("/items", create)
        .route("/items/1", item)
        .route("/items/2", other)
        .behind_proxy()
        .await;

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
