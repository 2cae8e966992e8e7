//! Purges through the admin API: URL, path, batch, prefix, tag, soft, dry run, and clear.

use super::*;

#[tokio::test]
async fn purge_by_absolute_url_removes_every_vary_variant() {
    let origin = MockOrigin::new().route("/v", by_language).start().await;
    let proxy = TestProxy::start(&origin.url()).await;
    let key = key_for(&proxy.addr.to_string(), "/v");
    let url = proxy.url("/v");

    for l in ["en", "de"] {
        let (_, _, body) = prime(proxy.running(), &url, &key, &[("accept-language", l)]).await;
        assert_eq!(body, format!("lang={l}"));
    }
    for l in ["en", "de"] {
        let (_, headers, body) = get_with(&url, &[("accept-language", l)]).await;
        assert!(is_hit(&cache_status(&headers)), "{headers:?}");
        assert_eq!(body, format!("lang={l}"));
    }
    assert_eq!(origin.hits("/v"), 2);

    let (status, v) = admin_post(
        &proxy.admin_url("/admin/cache/purge"),
        &json!({ "url": url }).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        v,
        json!({"purged": 2, "keys": 1, "soft": false, "dry_run": false})
    );
    assert!(!is_stored(proxy.running(), &key, &lang("en")));
    assert!(!is_stored(proxy.running(), &key, &lang("de")));

    for l in ["en", "de"] {
        let (_, headers, body) = get_with(&url, &[("accept-language", l)]).await;
        assert!(is_miss(&cache_status(&headers)), "{headers:?}");
        assert_eq!(body, format!("lang={l}"));
    }
    assert_eq!(origin.hits("/v"), 4);
}

#[tokio::test]
async fn purge_by_path_matches_every_host_and_a_batch_purges_each_url() {
    let Scene { origin, proxy } = MockOrigin::new()
        .route("/p", cacheable("p"))
        .route("/b1", cacheable("b1"))
        .route("/b2", cacheable("b2"))
        .route("/b3", cacheable("b3"))
        .behind_proxy()
        .await;
    let run = proxy.running();

    for host in ["a.example", "b.example"] {
        for pq in ["/p?q=1", "/p?q=2"] {
            prime(run, &proxy.url(pq), &key_for(host, pq), &[("host", host)]).await;
        }
    }
    assert_eq!(origin.hits("/p"), 4);

    let (status, v) = admin_post(
        &proxy.admin_url("/admin/cache/purge"),
        r#"{"url": "/p?q=1"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["purged"], 2, "{v}");
    assert_eq!(v["keys"], 2, "{v}");
    for host in ["a.example", "b.example"] {
        assert!(is_miss(&status_on(&proxy.url("/p?q=1"), host).await));
        assert!(is_hit(&status_on(&proxy.url("/p?q=2"), host).await));
    }
    assert_eq!(origin.hits("/p"), 6);

    let host = proxy.addr.to_string();
    for p in ["/b1", "/b2", "/b3"] {
        prime(run, &proxy.url(p), &key_for(&host, p), &[]).await;
    }
    let batch = json!({"urls": [proxy.url("/b1"), "/b2"]}).to_string();
    let (status, v) = admin_post(&proxy.admin_url("/admin/cache/purge"), &batch).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["purged"], 2, "{v}");
    assert_eq!(v["keys"], 2, "{v}");
    assert!(is_miss(&cache_status(&get(&proxy.url("/b1")).await.1)));
    assert!(is_miss(&cache_status(&get(&proxy.url("/b2")).await.1)));
    assert!(is_hit(&cache_status(&get(&proxy.url("/b3")).await.1)));
    for (p, n) in [("/b1", 2), ("/b2", 2), ("/b3", 1)] {
        assert_eq!(origin.hits(p), n, "{p}");
    }
}

#[tokio::test]
async fn prefix_purge_with_and_without_host() {
    let Scene { origin, proxy } = MockOrigin::new()
        .route("/img/a", cacheable("a"))
        .route("/img/b", cacheable("b"))
        .route("/img/c", cacheable("c"))
        .route("/css/x", cacheable("x"))
        .behind_proxy()
        .await;
    let run = proxy.running();
    let entries = [
        ("a.example", "/img/a"),
        ("a.example", "/img/b"),
        ("b.example", "/img/c"),
        ("a.example", "/css/x"),
    ];
    for (host, p) in entries {
        prime(run, &proxy.url(p), &key_for(host, p), &[("host", host)]).await;
    }
    let purge = proxy.admin_url("/admin/cache/purge");

    let (status, v) = admin_post(&purge, r#"{"prefix": "/img/", "host": "a.example"}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["purged"], 2, "{v}");
    assert!(!is_stored(
        run,
        &key_for("a.example", "/img/a"),
        &no_headers()
    ));
    assert!(!is_stored(
        run,
        &key_for("a.example", "/img/b"),
        &no_headers()
    ));
    assert!(is_stored(
        run,
        &key_for("b.example", "/img/c"),
        &no_headers()
    ));
    assert!(is_hit(&status_on(&proxy.url("/img/c"), "b.example").await));

    let (status, v) = admin_post(&purge, r#"{"prefix": "/img/"}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["purged"], 1, "{v}");
    assert!(is_miss(&status_on(&proxy.url("/img/c"), "b.example").await));
    assert!(is_miss(&status_on(&proxy.url("/img/a"), "a.example").await));
    assert!(is_hit(&status_on(&proxy.url("/css/x"), "a.example").await));
    assert_eq!(origin.hits("/img/a"), 2);
    assert_eq!(origin.hits("/img/c"), 2);
    assert_eq!(origin.hits("/css/x"), 1);

    let (status, v) = admin_post(&purge, r#"{"prefix": "img"}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(v["error"].is_string());
}

#[tokio::test]
async fn tag_purge_uses_surrogate_key_and_cache_tag() {
    let Scene { origin, proxy } = MockOrigin::new()
        .route("/t1", cacheable("t1").header("surrogate-key", "red blue"))
        .route("/t2", cacheable("t2").header("cache-tag", "blue,green"))
        .route("/t3", cacheable("t3").header("surrogate-key", "green"))
        .behind_proxy()
        .await;
    let run = proxy.running();
    let host = proxy.addr.to_string();
    for p in ["/t1", "/t2", "/t3"] {
        let (_, headers, _) = prime(run, &proxy.url(p), &key_for(&host, p), &[]).await;
        assert!(!headers.contains_key("surrogate-key"), "tags stay inside");
        assert!(!headers.contains_key("cache-tag"), "tags stay inside");
    }
    let purge = proxy.admin_url("/admin/cache/purge");

    let (status, v) = admin_post(&purge, r#"{"tag": "blue"}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["purged"], 2, "{v}");
    assert!(is_miss(&cache_status(&get(&proxy.url("/t1")).await.1)));
    assert!(is_miss(&cache_status(&get(&proxy.url("/t2")).await.1)));
    assert!(is_hit(&cache_status(&get(&proxy.url("/t3")).await.1)));

    // /t2 is stored again (refetched above) and still tagged green.
    wait_stored(run, &key_for(&host, "/t2"), &no_headers()).await;
    let (status, v) = admin_post(&purge, r#"{"tag": "green"}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["purged"], 2, "{v}");
    assert!(is_miss(&cache_status(&get(&proxy.url("/t3")).await.1)));
    assert_eq!(origin.hits("/t1"), 2);
    assert_eq!(origin.hits("/t2"), 2);
    assert_eq!(origin.hits("/t3"), 2);

    let (status, v) = admin_post(&purge, r#"{"tag": "nothing-has-this"}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["purged"], 0, "{v}");
}

#[tokio::test]
async fn soft_purge_serves_stale_while_one_background_refresh_runs() {
    let version = Arc::new(AtomicU64::new(0));
    let v2 = version.clone();
    let origin = MockOrigin::new()
        .route("/swr", move |_: &http::request::Parts, _: &Bytes| {
            let n = v2.fetch_add(1, Ordering::SeqCst) + 1;
            MockResponse::ok(format!("v{n}"))
                .header("cache-control", "max-age=60, stale-while-revalidate=60")
        })
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    let run = proxy.running();
    let url = proxy.url("/swr");
    let key = key_for(&proxy.addr.to_string(), "/swr");
    prime(run, &url, &key, &[]).await;
    assert!(is_hit(&cache_status(&get(&url).await.1)));

    let (status, v) = admin_post(
        &proxy.admin_url("/admin/cache/purge"),
        &json!({"url": url, "soft": true}).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        v,
        json!({"purged": 1, "keys": 1, "soft": true, "dry_run": false})
    );
    assert!(is_stored(run, &key, &no_headers()), "a soft purge keeps it");

    let (status, headers, body) = get(&url).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "v1", "the stale body, at once");
    let cs = cache_status(&headers);
    assert!(cs.starts_with("seawall; hit; ttl="), "{cs}");
    assert!(cs.ends_with("detail=stale-while-revalidate"), "{cs}");

    origin.wait_hits("/swr", 2).await;
    let entry_url = proxy.admin_url(&format!("/admin/cache/entry?url={url}"));
    poll_json(&entry_url, "refreshed entry", |v| {
        v["variants"][0]["policy"]["ttl_secs"].as_i64().unwrap_or(0) > 0
    })
    .await;
    let (_, headers, body) = get(&url).await;
    assert!(is_hit(&cache_status(&headers)), "{headers:?}");
    assert_eq!(body, "v2");
    assert_eq!(origin.hits("/swr"), 2, "exactly one background refresh");
}

#[tokio::test]
async fn dry_run_reports_without_purging() {
    let Scene { origin, proxy } = MockOrigin::new()
        .route("/d", cacheable("d").header("surrogate-key", "dry"))
        .behind_proxy()
        .await;
    let url = proxy.url("/d");
    prime(
        proxy.running(),
        &url,
        &key_for(&proxy.addr.to_string(), "/d"),
        &[],
    )
    .await;
    let purge = proxy.admin_url("/admin/cache/purge");

    for body in [
        json!({"url": url, "dry_run": true}),
        json!({"tag": "dry", "dry_run": true}),
        json!({"prefix": "/", "dry_run": true, "soft": true}),
    ] {
        let (status, v) = admin_post(&purge, &body.to_string()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["purged"], 1, "{body}: {v}");
        assert_eq!(v["keys"], 1, "{body}: {v}");
        assert_eq!(v["dry_run"], true, "{body}: {v}");
        let (_, headers, body) = get(&url).await;
        assert!(is_hit(&cache_status(&headers)), "{headers:?}");
        assert_eq!(body, "d");
    }
    assert_eq!(origin.hits("/d"), 1);
    let (_, stats) = admin_get(&proxy.admin_url("/admin/cache/stats")).await;
    assert_eq!(stats["evictions"]["explicit"], 0, "{stats}");
}

#[tokio::test]
async fn clear_needs_the_confirmation() {
    let Scene { origin, proxy } = MockOrigin::new()
        .route("/c1", cacheable("c1"))
        .route("/c2", cacheable("c2"))
        .behind_proxy()
        .await;
    let host = proxy.addr.to_string();
    for p in ["/c1", "/c2"] {
        prime(proxy.running(), &proxy.url(p), &key_for(&host, p), &[]).await;
    }
    let clear = proxy.admin_url("/admin/cache/clear");

    for body in [
        "",
        "{}",
        r#"{"confirm": "yes"}"#,
        r#"{"confirm": "clear-all"}"#,
    ] {
        let (status, v) = admin_post(&clear, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(v["error"].as_str().unwrap().contains("CLEAR-ALL"), "{v}");
    }
    let (_, stats) = admin_get(&proxy.admin_url("/admin/cache/stats")).await;
    assert_eq!(stats["entries"], 2, "{stats}");
    assert!(is_hit(&cache_status(&get(&proxy.url("/c1")).await.1)));

    let (status, v) = admin_post(&clear, r#"{"confirm": "CLEAR-ALL"}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v, json!({"purged": 2, "keys": 2, "soft": false}));
    let (_, stats) = admin_get(&proxy.admin_url("/admin/cache/stats")).await;
    assert_eq!(stats["entries"], 0, "{stats}");
    for p in ["/c1", "/c2"] {
        assert!(is_miss(&cache_status(&get(&proxy.url(p)).await.1)));
        assert_eq!(origin.hits(p), 2, "{p}");
    }
}

#[tokio::test]
async fn tag_purge_follows_the_tags_of_the_stored_response() {
    let version = Arc::new(AtomicU64::new(0));
    let v2 = version.clone();
    let origin = MockOrigin::new()
        .route("/tt", move |_: &http::request::Parts, _: &Bytes| {
            let n = v2.fetch_add(1, Ordering::SeqCst) + 1;
            let tag = if n == 1 { "old-tag" } else { "new-tag" };
            MockResponse::ok(format!("v{n}"))
                .header("cache-control", "max-age=1")
                .header("surrogate-key", tag)
        })
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    let run = proxy.running();
    let key = key_for(&proxy.addr.to_string(), "/tt");
    prime(run, &proxy.url("/tt"), &key, &[]).await;

    // Stale: the next request refetches and the new response (tagged new-tag) replaces it.
    run.state
        .cache()
        .clock
        .advance(std::time::Duration::from_secs(5));
    let (_, _, body) = get(&proxy.url("/tt")).await;
    assert_eq!(body, "v2");
    poll_json(
        &proxy.admin_url(&format!("/admin/cache/entry?url={}", proxy.url("/tt"))),
        "replacement stored",
        |v| v["variants"][0]["tags"] == json!(["new-tag"]),
    )
    .await;

    let purge = proxy.admin_url("/admin/cache/purge");
    let (status, v) = admin_post(&purge, r#"{"tag": "old-tag"}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        v["purged"], 0,
        "nothing stored carries old-tag any more: {v}"
    );
    assert!(
        is_stored(run, &key, &no_headers()),
        "purged by a tag it no longer has"
    );

    let (status, v) = admin_post(&purge, r#"{"tag": "new-tag"}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["purged"], 1, "{v}");
    assert!(!is_stored(run, &key, &no_headers()));
}
