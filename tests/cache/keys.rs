//! Keys.

use super::*;

#[tokio::test]
async fn http1_and_http2_requests_share_entries() {
    let Scene { origin, proxy } = MockOrigin::new()
        .route("/one", counted(&[("cache-control", "max-age=60")]))
        .route("/two", counted(&[("cache-control", "max-age=60")]))
        .behind_proxy()
        .await;

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
