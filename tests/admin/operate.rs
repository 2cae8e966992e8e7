//! Operating through the admin API: config view, reload, drain, and the status summary.

use super::*;

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
    let Scene {
        origin: _origin,
        proxy,
    } = MockOrigin::new()
        .route(
            "/x",
            MockResponse::ok("x").header("cache-control", "no-store"),
        )
        .behind_proxy()
        .await;
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
