//! The cache through the admin API: the kill switch, stats, entry listings and one entry.

use super::*;

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
    let Scene {
        origin: _origin,
        proxy,
    } = MockOrigin::new()
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
        .behind_proxy()
        .await;
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
    let Scene {
        origin: _origin,
        proxy,
    } = MockOrigin::new()
        .route(
            "/e1",
            cacheable("one").header("surrogate-key", "alpha say\"hi"),
        )
        .route("/e2", cacheable("two").header("cache-tag", "beta,gamma"))
        .route("/e3", cacheable("three"))
        .route("/lv", by_language)
        .behind_proxy()
        .await;
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
