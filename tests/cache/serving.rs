//! Serving from the store: HEAD, Range, conditionals.

use super::*;

#[tokio::test]
async fn head_is_answered_from_the_stored_get() {
    let Scene { origin, proxy } = MockOrigin::new()
        .route(
            "/h",
            MockResponse::ok("hello world").header("cache-control", "max-age=60"),
        )
        .behind_proxy()
        .await;
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
    let Scene { origin, proxy } = MockOrigin::new()
        .route(
            "/rg",
            MockResponse::ok("0123456789abcdef").header("cache-control", "max-age=60"),
        )
        .behind_proxy()
        .await;
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
    let Scene { origin, proxy } = MockOrigin::new()
        .route("/r", dated(&date, etag_route))
        .behind_proxy()
        .await;
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
