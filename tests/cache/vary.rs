//! Vary.

use super::*;

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
    let Scene { origin, proxy } = MockOrigin::new()
        .route(
            "/star",
            counted(&[("vary", "*"), ("cache-control", "max-age=60")]),
        )
        .behind_proxy()
        .await;

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
