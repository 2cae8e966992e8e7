//! The admin API seen from outside: bearer-token auth, purges (URL, path, batch, prefix, tag,
//! soft, dry run), clear, the kill switch, stats and listings, config redaction, reload,
//! drain, warm-up from a peer or a URL list, and JSON errors.
#![allow(clippy::unwrap_used)]

#[path = "support.rs"]
mod support;

#[path = "admin/support.rs"]
mod admin_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use admin_support::*;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};
use support::*;

const TOKEN: &str = "s3cret-token";

/// A cacheable fixed response.
fn cacheable(body: &str) -> MockResponse {
    MockResponse::ok(body.to_string()).header("cache-control", "max-age=300")
}

/// A response that echoes `Accept-Language` and varies on it.
fn by_language(parts: &http::request::Parts, _: &Bytes) -> MockResponse {
    let lang = parts
        .headers
        .get("accept-language")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_string();
    MockResponse::ok(format!("lang={lang}"))
        .header("cache-control", "max-age=300")
        .header("vary", "Accept-Language")
}

fn no_headers() -> HeaderMap {
    HeaderMap::new()
}

fn lang(l: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("accept-language", l.parse().unwrap());
    h
}

/// GET `url` with `Host: host` and return the Cache-Status.
async fn status_on(url: &str, host: &str) -> String {
    let (status, headers, _) = get_with(url, &[("host", host)]).await;
    assert_eq!(status, StatusCode::OK, "{headers:?}");
    cache_status(&headers)
}

fn is_hit(cs: &str) -> bool {
    cs.starts_with("seawall; hit; ttl=") && !cs.contains("detail=")
}

fn is_miss(cs: &str) -> bool {
    cs.starts_with("seawall; fwd=uri-miss") || cs.starts_with("seawall; fwd=vary-miss")
}

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
    let origin = MockOrigin::new()
        .route("/p", cacheable("p"))
        .route("/b1", cacheable("b1"))
        .route("/b2", cacheable("b2"))
        .route("/b3", cacheable("b3"))
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
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
    let origin = MockOrigin::new()
        .route("/img/a", cacheable("a"))
        .route("/img/b", cacheable("b"))
        .route("/img/c", cacheable("c"))
        .route("/css/x", cacheable("x"))
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
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
    let origin = MockOrigin::new()
        .route("/t1", cacheable("t1").header("surrogate-key", "red blue"))
        .route("/t2", cacheable("t2").header("cache-tag", "blue,green"))
        .route("/t3", cacheable("t3").header("surrogate-key", "green"))
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
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
    let origin = MockOrigin::new()
        .route("/d", cacheable("d").header("surrogate-key", "dry"))
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
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
    let origin = MockOrigin::new()
        .route("/c1", cacheable("c1"))
        .route("/c2", cacheable("c2"))
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
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
async fn disable_bypasses_the_cache_and_enable_restores_hits() {
    let origin = MockOrigin::new().route("/k", cacheable("k")).start().await;
    let proxy = TestProxy::start(&origin.url()).await;
    let url = proxy.url("/k");
    prime(
        proxy.running(),
        &url,
        &key_for(&proxy.addr.to_string(), "/k"),
        &[],
    )
    .await;
    assert!(is_hit(&cache_status(&get(&url).await.1)));

    let (status, v) = admin_post(&proxy.admin_url("/admin/cache/disable"), "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v, json!({"enabled": false}));
    for n in 2..=3 {
        let (status, headers, body) = get(&url).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "k");
        assert_eq!(
            cache_status(&headers),
            "seawall; fwd=bypass; detail=cache-disabled"
        );
        assert_eq!(header_str(&headers, "x-cache"), "BYPASS");
        assert_eq!(origin.hits("/k"), n);
    }
    let (_, stats) = admin_get(&proxy.admin_url("/admin/cache/stats")).await;
    assert_eq!(stats["enabled"], false, "{stats}");
    let (_, st) = admin_get(&proxy.admin_url("/admin/status")).await;
    assert_eq!(st["components"]["cache"], "disabled", "{st}");

    let (status, v) = admin_post(&proxy.admin_url("/admin/cache/enable"), "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v, json!({"enabled": true}));
    let (_, headers, body) = get(&url).await;
    assert!(is_hit(&cache_status(&headers)), "{headers:?}");
    assert_eq!(body, "k");
    assert_eq!(origin.hits("/k"), 3);
}

#[tokio::test]
async fn cache_stats_count_what_happened() {
    let origin = MockOrigin::new()
        .route("/a", cacheable("aaaa"))
        .route("/b", cacheable("bb"))
        .route(
            "/n",
            MockResponse::ok("n").header("cache-control", "no-store"),
        )
        .route(
            "/post",
            MockResponse::ok("posted").header("cache-control", "no-store"),
        )
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    let (_, fresh) = admin_get(&proxy.admin_url("/admin/cache/stats")).await;
    assert_eq!(
        fresh,
        json!({
            "enabled": true, "entries": 0, "bytes": 0, "capacity": 256u64 * 1024 * 1024,
            "evictions": {"size": 0, "expired": 0, "explicit": 0},
            "hits": 0, "misses": 0, "stale": 0, "revalidated": 0, "bypass": 0, "stored": 0,
            "inflight_fill_bytes": 0,
        })
    );

    let host = proxy.addr.to_string();
    prime(
        proxy.running(),
        &proxy.url("/a"),
        &key_for(&host, "/a"),
        &[],
    )
    .await;
    prime(
        proxy.running(),
        &proxy.url("/b"),
        &key_for(&host, "/b"),
        &[],
    )
    .await;
    for _ in 0..3 {
        get(&proxy.url("/a")).await;
    }
    get(&proxy.url("/b")).await;
    get(&proxy.url("/n")).await;
    let (status, _, _) = call(Method::POST, &proxy.url("/post")).await;
    assert_eq!(status, StatusCode::OK);

    let (status, s) = admin_get(&proxy.admin_url("/admin/cache/stats")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s["enabled"], true, "{s}");
    assert_eq!(s["entries"], 2, "{s}");
    assert_eq!(s["hits"], 4, "{s}");
    assert_eq!(s["misses"], 3, "{s}");
    assert_eq!(s["bypass"], 1, "{s}");
    assert_eq!(s["stored"], 2, "{s}");
    assert_eq!(s["stale"], 0, "{s}");
    assert_eq!(s["revalidated"], 0, "{s}");
    let bytes = s["bytes"].as_u64().unwrap();
    assert!(bytes > 6, "{s}");

    // The bytes are the listing sizes summed.
    let (_, l) = admin_get(&proxy.admin_url("/admin/cache/entries?sort=size")).await;
    let sizes: Vec<u64> = l["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["size"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes.len(), 2);
    assert_eq!(sizes.iter().sum::<u64>(), bytes);
    assert!(sizes[0] >= sizes[1], "sorted by size: {sizes:?}");
}

/// The listing's entries as CSV-like rows.
fn rows_of(listing: &Value) -> Vec<Vec<String>> {
    listing["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let tags: Vec<&str> = e["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap())
                .collect();
            vec![
                e["key"].as_str().unwrap().to_string(),
                e["variants"].to_string(),
                e["size"].to_string(),
                e["age"].to_string(),
                e["ttl"].to_string(),
                e["hits"].to_string(),
                tags.join(" "),
            ]
        })
        .collect()
}

#[tokio::test]
async fn entries_are_listed_by_hits_and_the_csv_matches_the_json() {
    let origin = MockOrigin::new()
        .route(
            "/e1",
            cacheable("one").header("surrogate-key", "alpha say\"hi"),
        )
        .route("/e2", cacheable("two").header("cache-tag", "beta,gamma"))
        .route("/e3", cacheable("three"))
        .route("/lv", by_language)
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    let run = proxy.running();
    let host = proxy.addr.to_string();
    for (pq, hits) in [("/e1", 3), ("/e2", 1), ("/e3?a=1,2", 0)] {
        prime(run, &proxy.url(pq), &key_for(&host, pq), &[]).await;
        for _ in 0..hits {
            assert!(is_hit(&cache_status(&get(&proxy.url(pq)).await.1)));
        }
    }
    for l in ["en", "de"] {
        prime(
            run,
            &proxy.url("/lv"),
            &key_for(&host, "/lv"),
            &[("accept-language", l)],
        )
        .await;
    }
    for l in ["en", "de"] {
        get_with(&proxy.url("/lv"), &[("accept-language", l)]).await;
    }

    let (status, top) = admin_get(&proxy.admin_url("/admin/cache/entries?top=2&sort=hits")).await;
    assert_eq!(status, StatusCode::OK);
    let keys: Vec<&str> = top["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, [key_for(&host, "/e1"), key_for(&host, "/lv")]);
    assert_eq!(top["entries"][0]["hits"], 3, "{top}");
    assert_eq!(top["entries"][0]["variants"], 1, "{top}");
    assert_eq!(
        top["entries"][0]["tags"],
        json!(["alpha", "say\"hi"]),
        "{top}"
    );
    assert_eq!(top["entries"][1]["hits"], 2, "{top}");
    assert_eq!(top["entries"][1]["variants"], 2, "{top}");

    // The CSV of the full listing, read back, equals the JSON (retry if a second ticked over
    // between the calls and changed age/ttl).
    let json_url = proxy.admin_url("/admin/cache/entries?top=10&sort=hits");
    let csv_url = proxy.admin_url("/admin/cache/entries?top=10&sort=hits&format=csv");
    let mut compared = false;
    for _ in 0..5 {
        let (_, before) = admin_get(&json_url).await;
        let (status, headers, csv) = get(&csv_url).await;
        let (_, after) = admin_get(&json_url).await;
        if before != after {
            continue;
        }
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            header_str(&headers, "content-type"),
            "text/csv; charset=utf-8"
        );
        let text = String::from_utf8(csv.to_vec()).unwrap();
        assert!(text.contains("\"alpha say\"\"hi\""), "{text}");
        assert!(
            text.contains(&format!("\"{}\"", key_for(&host, "/e3?a=1,2"))),
            "{text}"
        );
        let rows = parse_csv(&text);
        assert_eq!(
            rows[0],
            ["key", "variants", "size", "age", "ttl", "hits", "tags"]
        );
        assert_eq!(rows[1..], rows_of(&before)[..]);
        assert_eq!(rows.len(), 5, "{text}");
        compared = true;
        break;
    }
    assert!(compared, "the listing never held still");

    let (_, by_size) = admin_get(&proxy.admin_url("/admin/cache/entries?sort=size")).await;
    let sizes: Vec<u64> = by_size["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["size"].as_u64().unwrap())
        .collect();
    assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{sizes:?}");
    let (status, v) = admin_get(&proxy.admin_url("/admin/cache/entries?sort=colour")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(v["error"].is_string());
}

#[tokio::test]
async fn one_entry_shows_variants_validators_and_policy() {
    let origin = MockOrigin::new()
        .route("/ent", |parts: &http::request::Parts, _: &Bytes| {
            let l = parts
                .headers
                .get("accept-language")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_string();
            MockResponse::ok(format!("body-{l}"))
                .header("cache-control", "max-age=60, stale-while-revalidate=30")
                .header("vary", "Accept-Language")
                .header("etag", &format!("\"etag-{l}\""))
                .header("last-modified", "Mon, 02 Jan 2023 03:04:05 GMT")
                .header("surrogate-key", "ent")
        })
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    let host = proxy.addr.to_string();
    let key = key_for(&host, "/ent");
    for l in ["en", "de"] {
        prime(
            proxy.running(),
            &proxy.url("/ent"),
            &key,
            &[("accept-language", l)],
        )
        .await;
    }
    get_with(&proxy.url("/ent"), &[("accept-language", "en")]).await;

    let url = format!("http://{host}/ent");
    let (status, v) = admin_get(&proxy.admin_url(&format!("/admin/cache/entry?url={url}"))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["key"], key.as_str());
    let variants = v["variants"].as_array().unwrap();
    assert_eq!(variants.len(), 2, "{v}");
    let mut langs = Vec::new();
    for var in variants {
        let l = var["vary"][0]["value"].as_str().unwrap().to_string();
        assert_eq!(var["vary"][0]["field"], "accept-language", "{var}");
        assert_eq!(var["status"], 200);
        assert_eq!(var["body_bytes"], format!("body-{l}").len());
        assert_eq!(var["validators"]["etag"], format!("\"etag-{l}\""));
        assert_eq!(
            var["validators"]["last_modified"],
            "Mon, 02 Jan 2023 03:04:05 GMT"
        );
        let p = &var["policy"];
        assert_eq!(p["lifetime_secs"], 60, "{p}");
        assert_eq!(p["stale_while_revalidate"], 30, "{p}");
        assert_eq!(p["stale_if_error"], Value::Null, "{p}");
        assert_eq!(p["must_revalidate"], false, "{p}");
        assert_eq!(p["no_cache"], false, "{p}");
        assert_eq!(p["heuristic"], false, "{p}");
        let ttl = p["ttl_secs"].as_i64().unwrap();
        assert!((1..=60).contains(&ttl), "{p}");
        assert_eq!(var["tags"], json!(["ent"]));
        assert_eq!(var["hits"], if l == "en" { 1 } else { 0 }, "{var}");
        let headers = var["headers"].as_array().unwrap();
        assert!(
            headers
                .iter()
                .any(|h| h[0] == "vary" && h[1] == "Accept-Language"),
            "{var}"
        );
        langs.push(l);
    }
    langs.sort();
    assert_eq!(langs, ["de", "en"]);

    let (status, v) =
        admin_get(&proxy.admin_url(&format!("/admin/cache/entry?url=http://{host}/missing"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(v["error"].is_string());
    // A path is taken like purge takes it: that path on every host.
    let (status, v) = admin_get(&proxy.admin_url("/admin/cache/entry?url=/ent")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["variants"].as_array().unwrap().len(), 2, "{v}");
    let (status, _) = admin_get(&proxy.admin_url("/admin/cache/entry?url=ent")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = admin_get(&proxy.admin_url("/admin/cache/entry")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn config_view_redacts_endpoint_credentials() {
    let origin = MockOrigin::new().start().await;
    let port = origin.addr().port();
    let cfg = format!(
        "[[upstreams]]\nname = \"origin\"\nendpoints = [{:?}]\n\n\
         [[upstreams]]\nname = \"private\"\n\
         endpoints = [\"http://deploy:hunter2@127.0.0.1:{port}\", \"https://127.0.0.1:{port}\"]\n\n\
         [[routes]]\nupstream = \"origin\"\n",
        origin.url()
    );
    let proxy = TestProxy::with_config(&cfg).await;
    let (status, _, body) = get(&proxy.admin_url("/admin/config")).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8_lossy(&body);
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!text.contains("deploy"), "{text}");
    let v = json_of(&body);
    assert_eq!(v["admin_token"], "<redacted>", "there is always a token");
    assert!(!text.contains(TEST_ADMIN_TOKEN), "{text}");
    assert_eq!(v["source"], Value::Null);
    let ups = v["config"]["upstreams"].as_array().unwrap();
    assert_eq!(ups[0]["endpoints"], json!([origin.url()]));
    assert_eq!(
        ups[1]["endpoints"],
        json!([
            format!("http://<redacted>@127.0.0.1:{port}"),
            format!("https://127.0.0.1:{port}")
        ])
    );
    assert_eq!(v["config"]["routes"][0]["upstream"], "origin");
}

/// Config text with upstream `a` (catch-all) and, when given, upstream `b` on `/new`.
fn reload_config(a: &str, b: Option<&str>) -> String {
    let mut s = format!(
        "[[upstreams]]\nname = \"a\"\nendpoints = [{a:?}]\n\n[[routes]]\nupstream = \"a\"\n\n"
    );
    if let Some(b) = b {
        s.push_str(&format!(
            "[[upstreams]]\nname = \"b\"\nendpoints = [{b:?}]\n\n\
             [[routes]]\nname = \"new\"\nupstream = \"b\"\npath_prefix = \"/new\"\n"
        ));
    }
    s
}

#[tokio::test]
async fn reload_applies_new_routes_keeps_the_cache_and_refuses_broken_files() {
    let a = MockOrigin::new()
        .route("/r", cacheable("from a"))
        .route(
            "/new/x",
            MockResponse::ok("a has it too").header("cache-control", "no-store"),
        )
        .start()
        .await;
    let b = MockOrigin::new()
        .route(
            "/new/x",
            MockResponse::ok("from b").header("cache-control", "no-store"),
        )
        .start()
        .await;
    let proxy = FileProxy::start(&reload_config(&a.url(), None)).await;
    let key = key_for(&proxy.addr.to_string(), "/r");
    prime(proxy.running(), &proxy.url("/r"), &key, &[]).await;
    let (_, _, body) = get(&proxy.url("/new/x")).await;
    assert_eq!(body, "a has it too");

    let (_, v) = admin_get(&proxy.admin_url("/admin/config")).await;
    assert_eq!(v["source"], proxy.path.display().to_string());

    proxy.write(&reload_config(&a.url(), Some(&b.url())));
    let (status, v) = admin_post(&proxy.admin_url("/admin/reload"), "").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["applied"], true, "{v}");
    assert_eq!(v["needs_restart"], json!([]), "{v}");

    let (status, _, body) = get(&proxy.url("/new/x")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "from b");
    assert_eq!(b.hits("/new/x"), 1);
    let (_, headers, body) = get(&proxy.url("/r")).await;
    assert!(
        is_hit(&cache_status(&headers)),
        "cached entries survive: {headers:?}"
    );
    assert_eq!(body, "from a");
    assert_eq!(a.hits("/r"), 1);
    let (_, breakers) = admin_get(&proxy.admin_url("/admin/breakers")).await;
    assert_eq!(
        breakers["breakers"].as_array().unwrap().len(),
        2,
        "{breakers}"
    );

    for broken in [
        format!("{FILE_SERVER}[[upstreams]\nname = "),
        format!(
            "{FILE_SERVER}[[upstreams]]\nname = \"a\"\nendpoints = [{:?}]\n\n\
             [[routes]]\nupstream = \"nope\"\n",
            a.url()
        ),
    ] {
        proxy.write_raw(&broken);
        let (status, v) = admin_post(&proxy.admin_url("/admin/reload"), "").await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert!(v["error"].as_str().unwrap().contains("proxy.toml"), "{v}");

        let (status, _, body) = get(&proxy.url("/new/x")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "from b", "the running config stays");
        let (_, headers, _) = get(&proxy.url("/r")).await;
        assert!(is_hit(&cache_status(&headers)), "{headers:?}");
    }
    assert_eq!(b.hits("/new/x"), 3);
    assert_eq!(a.hits("/r"), 1);
    assert_eq!(a.hits("/new/x"), 1);

    let text = scrape(&proxy.admin_url("/metrics")).await;
    let samples = parse_exposition(&text);
    assert_eq!(
        must(
            &samples,
            "seawall_config_reloads_total",
            &[("result", "ok")]
        ),
        1.0
    );
    assert_eq!(
        must(
            &samples,
            "seawall_config_reloads_total",
            &[("result", "error")]
        ),
        2.0
    );
}

#[tokio::test]
async fn reload_without_a_config_file_is_refused() {
    let origin = MockOrigin::new().start().await;
    let proxy = TestProxy::start(&origin.url()).await;
    let (status, v) = admin_post(&proxy.admin_url("/admin/reload"), "").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(v["error"].as_str().unwrap().contains("config file"), "{v}");
}

#[tokio::test]
async fn drain_turns_readiness_off_and_closes_connections() {
    let origin = MockOrigin::new()
        .route(
            "/x",
            MockResponse::ok("x").header("cache-control", "no-store"),
        )
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    let (_, headers, _) = get(&proxy.url("/x")).await;
    assert!(!headers.contains_key("connection"), "{headers:?}");

    let (status, v) = admin_post(&proxy.admin_url("/admin/drain"), "").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(v["draining"], true, "{v}");
    assert_eq!(v["drain_delay_secs"], 0.2, "{v}");

    let (status, v) = admin_get(&proxy.admin_url("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v["ready"], false, "{v}");
    assert_eq!(v["status"], "draining", "{v}");
    let (status, _, _) = get(&proxy.admin_url("/healthz")).await;
    assert_eq!(status, StatusCode::OK);

    for _ in 0..2 {
        let (status, headers, body) = get(&proxy.url("/x")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "x");
        assert_eq!(header_str(&headers, "connection"), "close");
    }
    let (_, st) = admin_get(&proxy.admin_url("/admin/status")).await;
    assert_eq!(st["ready"], false, "{st}");
    assert!(
        st["phase"] == "draining" || st["phase"] == "drained",
        "{st}"
    );
}

/// Origin for the warm-up tests: two plain URLs and one varying on Accept-Language.
async fn warm_origin() -> MockOrigin {
    MockOrigin::new()
        .route("/w1", cacheable("w1"))
        .route("/w2", cacheable("w2"))
        .route("/wv", by_language)
        .start()
        .await
}

const SHOP: &str = "shop.example";

/// The requests both instances serve: (path, Accept-Language, expected body).
const WARM_SET: [(&str, Option<&str>, &str); 4] = [
    ("/w1", None, "w1"),
    ("/w2", None, "w2"),
    ("/wv", Some("en"), "lang=en"),
    ("/wv", Some("de"), "lang=de"),
];

fn warm_headers(l: Option<&str>) -> Vec<(&str, &str)> {
    let mut h = vec![("host", SHOP)];
    if let Some(l) = l {
        h.push(("accept-language", l));
    }
    h
}

/// Starts instance A in front of `origin` and fills it with [`WARM_SET`].
async fn warm_peer(origin: &MockOrigin) -> TestProxy {
    let a = TestProxy::start(&origin.url()).await;
    for (p, l, body) in WARM_SET {
        let (_, _, got) = prime(a.running(), &a.url(p), &key_for(SHOP, p), &warm_headers(l)).await;
        assert_eq!(got, body);
    }
    a
}

/// Asserts every URL of [`WARM_SET`] is a HIT on `proxy` with the right body.
async fn assert_warm_hits(proxy: &TestProxy) {
    for (p, l, body) in WARM_SET {
        let (status, headers, got) = get_with(&proxy.url(p), &warm_headers(l)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(is_hit(&cache_status(&headers)), "{p} {l:?}: {headers:?}");
        assert_eq!(got, body, "{p} {l:?}");
    }
}

#[tokio::test]
async fn warm_from_a_peer_imports_its_entries_without_origin_traffic() {
    let origin = warm_origin().await;
    let a = warm_peer(&origin).await;
    let origin_hits = origin.total_hits();
    assert_eq!(origin_hits, 4);

    let b = TestProxy::start(&origin.url()).await;
    let body = json!({"from": format!("http://{}", a.admin_addr), "top": 100}).to_string();
    let (status, v) = admin_post(&b.admin_url("/admin/cache/warm"), &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let id = v["id"].as_u64().unwrap();
    let job = poll_json(
        &b.admin_url(&format!("/admin/cache/warm/{id}")),
        "warm-up job done",
        |v| v["state"] != "running",
    )
    .await;
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["kind"], "peer", "{job}");
    assert_eq!(job["total"], 4, "{job}");
    assert_eq!(job["imported"], 4, "{job}");
    assert_eq!(job["errors"], 0, "{job}");
    assert_eq!(job["error"], Value::Null, "{job}");

    assert_warm_hits(&b).await;
    assert_eq!(origin.total_hits(), origin_hits, "no origin traffic");

    let (status, v) = admin_get(&b.admin_url("/admin/cache/warm/999")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(v["error"].is_string());
}

#[tokio::test]
async fn warmup_section_gates_readiness_until_the_peer_import_is_done() {
    let origin = warm_origin().await;
    let a = warm_peer(&origin).await;
    let origin_hits = origin.total_hits();
    // A's admin listener behind a gate, so "still warming" can be observed for certain.
    let relay = GatedRelay::start(a.admin_addr).await;

    let cfg = format!(
        "[warmup]\nfrom = \"http://{}\"\ntop = 100\n\n{}",
        relay.addr,
        upstream_config(&origin.url(), "")
    );
    let b = TestProxy::with_config(&cfg).await;
    relay.wait_accepted(1).await;
    for _ in 0..3 {
        let (status, v) = admin_get(&b.admin_url("/readyz")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
        assert_eq!(v["status"], "warming", "{v}");
    }

    relay.open();
    poll_json(&b.admin_url("/readyz"), "ready after warm-up", |v| {
        v["ready"] == true
    })
    .await;
    let (status, v) = admin_get(&b.admin_url("/readyz")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["status"], "ready", "{v}");
    let (_, job) = admin_get(&b.admin_url("/admin/cache/warm/1")).await;
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["imported"], 4, "{job}");

    assert_warm_hits(&b).await;
    assert_eq!(origin.total_hits(), origin_hits, "no origin traffic");
}

#[tokio::test]
async fn warm_from_a_url_list_fetches_each_once_through_the_cache() {
    let origin = warm_origin().await;
    let proxy = TestProxy::start(&origin.url()).await;
    let body = json!({"urls": ["/w1", format!("http://{SHOP}/w2")], "concurrency": 2});
    let (status, v) = admin_post(&proxy.admin_url("/admin/cache/warm"), &body.to_string()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let id = v["id"].as_u64().unwrap();
    let job = poll_json(
        &proxy.admin_url(&format!("/admin/cache/warm/{id}")),
        "url warm-up done",
        |v| v["state"] != "running",
    )
    .await;
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["kind"], "urls", "{job}");
    assert_eq!(job["total"], 2, "{job}");
    assert_eq!(job["imported"], 2, "{job}");
    assert_eq!(job["errors"], 0, "{job}");
    assert_eq!(origin.hits("/w1"), 1);
    assert_eq!(origin.hits("/w2"), 1);

    let own = proxy.addr.to_string();
    wait_stored(proxy.running(), &key_for(&own, "/w1"), &no_headers()).await;
    wait_stored(proxy.running(), &key_for(SHOP, "/w2"), &no_headers()).await;
    let (_, headers, body) = get(&proxy.url("/w1")).await;
    assert!(is_hit(&cache_status(&headers)), "{headers:?}");
    assert_eq!(body, "w1");
    let (_, headers, body) = get_with(&proxy.url("/w2"), &[("host", SHOP)]).await;
    assert!(is_hit(&cache_status(&headers)), "{headers:?}");
    assert_eq!(body, "w2");
    assert_eq!(origin.total_hits(), 2);

    let (status, v) = admin_post(&proxy.admin_url("/admin/cache/warm"), "{}").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(v["error"].is_string());
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

#[tokio::test]
async fn export_streams_the_hottest_variants_as_ndjson() {
    let origin = warm_origin().await;
    let a = warm_peer(&origin).await;
    for _ in 0..3 {
        get_with(&a.url("/w2"), &warm_headers(None)).await;
    }
    get_with(&a.url("/wv"), &warm_headers(Some("de"))).await;

    let (status, headers, body) = get(&a.admin_url("/admin/cache/export?top=2")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header_str(&headers, "content-type"), "application/x-ndjson");
    let text = String::from_utf8(body.to_vec()).unwrap();
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 2, "{text}");
    assert_eq!(records[0]["key"], key_for(SHOP, "/w2"));
    assert_eq!(records[0]["hits"], 3);
    assert_eq!(records[0]["status"], 200);
    assert_eq!(records[0]["body"], "dzI=", "base64 of w2");
    assert_eq!(records[0]["lifetime"], 300);
    assert_eq!(records[1]["key"], key_for(SHOP, "/wv"));
    assert_eq!(records[1]["vary"], json!([["accept-language", "de"]]));
    assert!(
        records[1]["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h == &json!(["vary", "Accept-Language"])),
        "{}",
        records[1]
    );

    let (_, _, all) = get(&a.admin_url("/admin/cache/export")).await;
    assert_eq!(String::from_utf8_lossy(&all).lines().count(), 4);
}

#[tokio::test]
async fn warm_from_a_peer_that_refuses_fails_the_job() {
    let origin = warm_origin().await;
    let a =
        TestProxy::with_config_and_token(&upstream_config(&origin.url(), ""), Some(TOKEN)).await;
    let b = TestProxy::start(&origin.url()).await;
    let body = json!({"from": format!("http://{}", a.admin_addr)}).to_string();
    let (status, v) = admin_post(&b.admin_url("/admin/cache/warm"), &body).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = v["id"].as_u64().unwrap();
    let job = poll_json(
        &b.admin_url(&format!("/admin/cache/warm/{id}")),
        "warm-up job ended",
        |v| v["state"] != "running",
    )
    .await;
    assert_eq!(job["state"], "failed", "{job}");
    assert!(job["error"].as_str().unwrap().contains("401"), "{job}");
    assert_eq!(job["imported"], 0, "{job}");

    let dead = closed_port().await;
    let body = json!({"from": format!("http://{dead}")}).to_string();
    let (_, v) = admin_post(&b.admin_url("/admin/cache/warm"), &body).await;
    let id = v["id"].as_u64().unwrap();
    let job = poll_json(
        &b.admin_url(&format!("/admin/cache/warm/{id}")),
        "warm-up job ended",
        |v| v["state"] != "running",
    )
    .await;
    assert_eq!(job["state"], "failed", "{job}");
    assert!(job["error"].is_string(), "{job}");
}

#[tokio::test]
async fn warmup_url_list_in_config_fetches_before_ready() {
    let origin = warm_origin().await;
    let cfg = format!(
        "[warmup]\nurls = [\"/w1\", \"http://{SHOP}/w2\"]\nconcurrency = 1\n\n{}",
        upstream_config(&origin.url(), "")
    );
    let proxy = TestProxy::with_config(&cfg).await;
    poll_json(&proxy.admin_url("/readyz"), "ready after warm-up", |v| {
        v["ready"] == true
    })
    .await;
    let (_, job) = admin_get(&proxy.admin_url("/admin/cache/warm/1")).await;
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["imported"], 2, "{job}");
    assert_eq!(origin.hits("/w1"), 1);
    assert_eq!(origin.hits("/w2"), 1);

    wait_stored(
        proxy.running(),
        &key_for(&proxy.addr.to_string(), "/w1"),
        &no_headers(),
    )
    .await;
    wait_stored(proxy.running(), &key_for(SHOP, "/w2"), &no_headers()).await;
    assert!(is_hit(&cache_status(&get(&proxy.url("/w1")).await.1)));
    let (_, headers, _) = get_with(&proxy.url("/w2"), &[("host", SHOP)]).await;
    assert!(is_hit(&cache_status(&headers)), "{headers:?}");
    assert_eq!(origin.total_hits(), 2);
}

#[tokio::test]
async fn status_summarises_recent_traffic_and_raises_alerts() {
    let origin = MockOrigin::new()
        .route("/s", cacheable("s"))
        .route(
            "/e",
            MockResponse::with_status(503).header("cache-control", "no-store"),
        )
        .start()
        .await;
    let cfg = format!(
        "[admin]\nalert_min_requests = 4\nalert_hit_ratio_below = 0.9\n\
         alert_error_rate_above = 0.1\n\n{}",
        upstream_config(&origin.url(), "")
    );
    let proxy = TestProxy::with_config(&cfg).await;
    let (_, quiet) = admin_get(&proxy.admin_url("/admin/status")).await;
    assert_eq!(quiet["healthy"], true, "{quiet}");
    assert_eq!(quiet["alerts"], json!([]), "{quiet}");
    assert_eq!(quiet["hit_ratio"], Value::Null, "{quiet}");

    let host = proxy.addr.to_string();
    prime(
        proxy.running(),
        &proxy.url("/s"),
        &key_for(&host, "/s"),
        &[],
    )
    .await;
    for _ in 0..3 {
        get(&proxy.url("/s")).await;
    }
    for _ in 0..2 {
        get(&proxy.url("/e")).await;
    }

    let (status, st) = admin_get(&proxy.admin_url("/admin/status")).await;
    assert_eq!(status, StatusCode::OK);
    for span in ["recent", "since_start"] {
        let s = &st[span];
        assert_eq!(s["requests"], 6, "{span}: {s}");
        assert_eq!(s["hits"], 3, "{span}: {s}");
        assert_eq!(s["misses"], 3, "{span}: {s}");
        assert_eq!(s["uncacheable"], 0, "{span}: {s}");
        assert_eq!(s["errors_5xx"], 2, "{span}: {s}");
        assert_eq!(s["hit_ratio"], 0.5, "{span}: {s}");
        let rate = s["error_rate"].as_f64().unwrap();
        assert!((rate - 2.0 / 6.0).abs() < 1e-9, "{span}: {s}");
    }
    assert_eq!(st["hit_ratio"], 0.5, "{st}");
    assert_eq!(st["window_secs"], 300, "{st}");
    let mut names: Vec<(&str, &str)> = st["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["name"].as_str().unwrap(), a["severity"].as_str().unwrap()))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ("error_rate_high", "critical"),
            ("hit_ratio_low", "warning")
        ],
        "{st}"
    );
    assert_eq!(st["healthy"], false, "a critical alert: {st}");
    assert_eq!(st["ready"], true, "{st}");
    assert_eq!(st["components"]["cache"], "ok", "{st}");
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
