//! Bearer-token auth of the admin API, and its JSON errors.

use super::*;

#[tokio::test]
async fn admin_endpoints_need_the_bearer_token_and_probes_do_not() {
    let origin = MockOrigin::new().route("/a", cacheable("a")).start().await;
    let proxy =
        TestProxy::with_config_and_token(&upstream_config(&origin.url(), ""), Some(TOKEN)).await;
    let status_url = proxy.admin_url("/admin/status");

    let (status, headers, body) = admin_call(Method::GET, &status_url, None, "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(header_str(&headers, "www-authenticate"), "Bearer");
    assert!(json_of(&body)["error"].is_string());

    // A wrong token is no credential at all (401); 403 is for the read-only role.
    let (status, _, body) = admin_call(Method::GET, &status_url, Some("wrong"), "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(json_of(&body)["error"].is_string());

    let (status, _, body) = admin_call(Method::GET, &status_url, Some(TOKEN), "").await;
    assert_eq!(status, StatusCode::OK);
    let v = json_of(&body);
    assert_eq!(v["healthy"], true, "{v}");
    assert_eq!(v["ready"], true, "{v}");
    assert_eq!(v["phase"], "serving", "{v}");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));

    // A refused mutation changes nothing.
    let (_, _, _) = get(&proxy.url("/a")).await;
    wait_stored(
        proxy.running(),
        &key_for(&proxy.addr.to_string(), "/a"),
        &no_headers(),
    )
    .await;
    let clear = proxy.admin_url("/admin/cache/clear");
    let all = r#"{"confirm":"CLEAR-ALL"}"#;
    let (status, _, _) = admin_call(Method::POST, &clear, None, all).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = admin_call(Method::POST, &clear, Some("wrong"), all).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(is_hit(&cache_status(&get(&proxy.url("/a")).await.1)));
    assert_eq!(origin.hits("/a"), 1);

    for probe in ["/healthz", "/readyz", "/metrics"] {
        let (status, _, _) = get(&proxy.admin_url(probe)).await;
        assert_eq!(status, StatusCode::OK, "{probe}");
    }
    let (status, v) = admin_get(&proxy.admin_url("/admin/config")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    let (_, _, body) = admin_call(
        Method::GET,
        &proxy.admin_url("/admin/config"),
        Some(TOKEN),
        "",
    )
    .await;
    let v = json_of(&body);
    assert_eq!(v["admin_token"], "<redacted>");
    assert!(!String::from_utf8_lossy(&body).contains(TOKEN));
}

#[tokio::test]
async fn errors_are_json_and_pretty_indents() {
    let origin = MockOrigin::new().start().await;
    let proxy = TestProxy::start(&origin.url()).await;
    let is_json = |h: &HeaderMap| header_str(h, "content-type").starts_with("application/json");

    let (status, headers, body) = get(&proxy.admin_url("/admin/nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(is_json(&headers), "{headers:?}");
    assert!(json_of(&body)["error"].is_string());
    let (status, _, body) = get(&proxy.admin_url("/nowhere")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(json_of(&body)["error"].is_string());

    for (method, path) in [
        (Method::GET, "/admin/cache/purge"),
        (Method::POST, "/admin/cache/stats"),
        (Method::DELETE, "/healthz"),
    ] {
        let (status, headers, body) = call(method.clone(), &proxy.admin_url(path)).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(is_json(&headers), "{method} {path}: {headers:?}");
        assert!(json_of(&body)["error"].is_string(), "{method} {path}");
    }

    let purge = proxy.admin_url("/admin/cache/purge");
    for bad in [
        "{not json",
        "[]",
        "{}",
        r#"{"url": "/a", "tag": "t"}"#,
        r#"{"url": "/a", "colour": "red"}"#,
        r#"{"url": "relative/path"}"#,
        r#"{"url": 5}"#,
    ] {
        let (status, headers, body) = admin_call(Method::POST, &purge, None, bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(is_json(&headers), "{bad}: {headers:?}");
        assert!(json_of(&body)["error"].is_string(), "{bad}");
    }

    let (_, _, plain) = get(&proxy.admin_url("/admin/cache/stats")).await;
    let (status, headers, pretty) = get(&proxy.admin_url("/admin/cache/stats?pretty")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(is_json(&headers));
    let text = String::from_utf8(pretty.to_vec()).unwrap();
    assert!(text.starts_with("{\n  \""), "{text}");
    assert!(text.ends_with("}\n"), "{text}");
    assert!(!String::from_utf8_lossy(&plain).contains('\n'));
    assert_eq!(json_of(&pretty), json_of(&plain));

    let (status, _, body) = get(&proxy.admin_url("/admin/nope?pretty")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&body).contains("\n  \"error\""));
    let (_, _, body) = get(&proxy.admin_url("/healthz?pretty=1")).await;
    assert_eq!(body, Bytes::from_static(b"{\n  \"status\": \"ok\"\n}\n"));
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let origin = MockOrigin::new().start().await;
    let proxy =
        TestProxy::with_config_and_token(&upstream_config(&origin.url(), ""), Some(TOKEN)).await;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let req = http::Request::get(proxy.admin_url("/admin/status"))
            .header("authorization", format!("{scheme} {TOKEN}"))
            .body(http_body_util::Full::default())
            .unwrap();
        let (status, _, _) = request(req).await;
        assert_eq!(status, StatusCode::OK, "{scheme}");
    }
}
