//! Warm-up: the export a peer serves, and imports from it or a URL list, by command or by the
//! `[warmup]` section.

use super::*;

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
