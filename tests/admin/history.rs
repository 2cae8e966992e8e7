//! What the dashboard reads: performance history (counts, route series, CSV, ranges), the
//! alert history, entry listings filtered by prefix and tag, the `/` redirect, and the refusal
//! of cross-origin state changes. The ring's memory bound and the sampler's step are unit
//! tests (`src/admin/history/tests.rs`).

use super::*;

/// Sums `by_status[class]` over a history answer's points.
fn sum_class(v: &Value, class: &str) -> u64 {
    v["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["by_status"][class].as_u64().unwrap())
        .sum()
}

fn sum_field(v: &Value, field: &str) -> u64 {
    v["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[field].as_u64().unwrap())
        .sum()
}

fn two_routes(origin_url: &str) -> String {
    format!(
        "[[upstreams]]\nname = \"origin\"\nendpoints = [{origin_url:?}]\n\n\
         [[routes]]\nname = \"api\"\nupstream = \"origin\"\npath_prefix = \"/api/\"\n\n\
         [[routes]]\nname = \"static\"\nupstream = \"origin\"\npath_prefix = \"/static/\"\n"
    )
}

#[tokio::test]
async fn history_counts_the_requests_made_at_once() {
    let origin = MockOrigin::new()
        .route("/h", cacheable("h"))
        .route(
            "/n",
            MockResponse::ok("n").header("cache-control", "no-store"),
        )
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    let host = proxy.addr.to_string();
    prime(
        proxy.running(),
        &proxy.url("/h"),
        &key_for(&host, "/h"),
        &[],
    )
    .await;
    for _ in 0..3 {
        assert!(is_hit(&cache_status(&get(&proxy.url("/h")).await.1)));
    }
    get(&proxy.url("/n")).await;

    let (status, v) = admin_get(&proxy.admin_url("/admin/stats/history?range=1h")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["range"], "1h");
    assert_eq!(v["step_secs"], 10);
    assert_eq!(v["route"], Value::Null);
    assert_eq!(v["routes"], json!(["origin", "other"]), "{v}");
    let since = v["since"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        since <= now && since + 600 > now,
        "since {since}, now {now}"
    );
    // Nothing waits for the sampler: the running interval is the last point, partial.
    let points = v["points"].as_array().unwrap();
    assert_eq!(points.last().unwrap()["partial"], true, "{v}");
    assert_eq!(sum_class(&v, "hit"), 3, "{v}");
    // The no-store answer is a miss or uncacheable, as the cache classes it.
    assert_eq!(
        sum_class(&v, "miss") + sum_class(&v, "uncacheable"),
        2,
        "{v}"
    );
    assert_eq!(sum_field(&v, "requests"), 5, "{v}");
    assert_eq!(sum_field(&v, "origin_requests"), 2, "{v}");
    assert_eq!(sum_field(&v, "origin_saved"), 3, "{v}");
    assert_eq!(sum_field(&v, "errors_5xx"), 0, "{v}");
    assert!(
        points
            .iter()
            .any(|p| p["latency_ms"]["hit"]["p50"].is_number()
                && p["latency_ms"]["miss"]["p99"].is_number()
                && p["upstream_latency_ms"]["p95"].is_number()),
        "{v}"
    );
    for (range, step) in [("6h", 60), ("24h", 60), ("7d", 3600), ("30d", 3600)] {
        let (status, r) =
            admin_get(&proxy.admin_url(&format!("/admin/stats/history?range={range}"))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(r["step_secs"], step, "{range}: {r}");
        assert_eq!(sum_class(&r, "hit"), 3, "{range}: {r}");
        assert_eq!(sum_field(&r, "requests"), 5, "{range}: {r}");
    }
    assert_eq!(origin.hits("/h"), 1);
}

#[tokio::test]
async fn history_of_one_route_and_as_csv() {
    let origin = MockOrigin::new()
        .route("/api/x", cacheable("x"))
        .route("/static/y", cacheable("y"))
        .start()
        .await;
    let proxy = TestProxy::with_config(&two_routes(&origin.url())).await;
    let host = proxy.addr.to_string();
    prime(
        proxy.running(),
        &proxy.url("/api/x"),
        &key_for(&host, "/api/x"),
        &[],
    )
    .await;
    assert!(is_hit(&cache_status(&get(&proxy.url("/api/x")).await.1)));
    prime(
        proxy.running(),
        &proxy.url("/static/y"),
        &key_for(&host, "/static/y"),
        &[],
    )
    .await;

    let url = |q: &str| proxy.admin_url(&format!("/admin/stats/history?{q}"));
    let (_, api) = admin_get(&url("range=1h&route=api")).await;
    assert_eq!(api["route"], "api", "{api}");
    assert_eq!(api["routes"], json!(["api", "static", "other"]), "{api}");
    assert_eq!(
        api["step_secs"], 60,
        "route series are per minute for an hour"
    );
    assert_eq!((sum_class(&api, "hit"), sum_class(&api, "miss")), (1, 1));
    let (_, st) = admin_get(&url("range=24h&route=static")).await;
    assert_eq!((sum_class(&st, "hit"), sum_class(&st, "miss")), (0, 1));
    assert_eq!(st["step_secs"], 600);
    let (_, other) = admin_get(&url("range=1h&route=other")).await;
    assert_eq!(sum_field(&other, "requests"), 0, "{other}");
    let (status, v) = admin_get(&url("range=1h&route=nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        v["error"].as_str().unwrap().contains("api, static, other"),
        "{v}"
    );

    let (status, headers, body) = get(&url("range=1h&format=csv")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        header_str(&headers, "content-type"),
        "text/csv; charset=utf-8"
    );
    let text = String::from_utf8(body.to_vec()).unwrap();
    let rows = parse_csv(&text);
    assert_eq!(
        rows[0].join(","),
        "t,requests,hit,miss,stale,uncacheable,revalidated,errors_5xx,hit_ratio,\
         origin_requests,origin_saved,coalesced,breaker_changes,hit_p50_ms,hit_p95_ms,\
         hit_p99_ms,miss_p50_ms,miss_p95_ms,miss_p99_ms,upstream_p50_ms,upstream_p95_ms,\
         upstream_p99_ms"
    );
    assert!(rows.len() >= 2, "{text}");
    let col = |name: &str| rows[0].iter().position(|c| c == name).unwrap();
    let sum = |name: &str| -> u64 {
        rows[1..]
            .iter()
            .map(|r| r[col(name)].parse::<u64>().unwrap())
            .sum()
    };
    assert_eq!(
        (sum("hit"), sum("miss"), sum("requests")),
        (1, 2, 3),
        "{text}"
    );
}

#[tokio::test]
async fn history_ranges_and_formats_are_checked() {
    let origin = MockOrigin::new().start().await;
    let proxy = TestProxy::start(&origin.url()).await;
    for q in ["range=2h", "range=", "range=1H"] {
        let (status, v) = admin_get(&proxy.admin_url(&format!("/admin/stats/history?{q}"))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{q}");
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("1h, 6h, 24h, 7d, 30d"),
            "{v}"
        );
    }
    let (status, v) = admin_get(&proxy.admin_url("/admin/stats/history?format=xml")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    // Without a range: the last hour.
    let (status, v) = admin_get(&proxy.admin_url("/admin/stats/history")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["range"], "1h");
    let (status, _, _) = admin_call(
        Method::GET,
        &proxy.admin_url("/admin/stats/history"),
        Some("wrong"),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn alert_history_records_a_breaker_firing_and_resolving() {
    let dead = closed_port().await;
    let proxy = TestProxy::with_config(&upstream_config(
        &format!("http://{dead}"),
        "[upstreams.breaker]\nconsecutive_failures = 3\nopen_duration = \"30s\"\n\
         max_open_duration = \"60s\"\nmin_requests = 3\nfailure_rate = 0.5\n\
         max_client_share = 1.0\n\n[upstreams.retry]\nmax_retries = 0\n",
    ))
    .await;
    let (_, quiet) = admin_get(&proxy.admin_url("/admin/alerts?history=1")).await;
    assert_eq!(quiet["alerts"], json!([]), "{quiet}");
    assert_eq!(quiet["history"], json!([]), "{quiet}");
    for i in 1..=3 {
        let (status, _, _) = get(&proxy.url(&format!("/down?i={i}"))).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
    }
    let (status, now) = admin_get(&proxy.admin_url("/admin/alerts")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(now["alerts"][0]["name"], "breaker_open", "{now}");
    assert!(now.get("history").is_none(), "{now}");
    let (_, v) = admin_get(&proxy.admin_url("/admin/alerts?history=1")).await;
    let h = v["history"].as_array().unwrap();
    assert_eq!(h.len(), 1, "{v}");
    assert_eq!(h[0]["name"], "breaker_open");
    assert_eq!(h[0]["state"], "firing");
    assert_eq!(h[0]["severity"], "warning");
    assert_eq!(h[0]["subject"], "origin");
    assert_eq!(h[0]["detail"], "breaker of upstream origin is open");
    assert!(h[0]["at"].as_u64().unwrap() >= v["since"].as_u64().unwrap());
    assert_eq!(v["history_capacity"], 256);

    let (status, _) = admin_post(&proxy.admin_url("/admin/breakers/origin/close"), "").await;
    assert_eq!(status, StatusCode::OK);
    let (_, v) = admin_get(&proxy.admin_url("/admin/alerts?history=1")).await;
    assert_eq!(v["alerts"], json!([]), "{v}");
    let states: Vec<(&str, &str)> = v["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [("breaker_open", "resolved"), ("breaker_open", "firing")]
    );
}

#[tokio::test]
async fn entries_filter_by_prefix_and_tag_and_carry_what_the_dashboard_shows() {
    let Scene {
        origin: _origin,
        proxy,
    } = MockOrigin::new()
        .route("/p/a", cacheable("a").header("surrogate-key", "t1"))
        .route("/p/b", cacheable("bb").header("surrogate-key", "t2"))
        .route("/q/c", cacheable("ccc").header("surrogate-key", "t1 t3"))
        .route("/lv", by_language)
        .behind_proxy()
        .await;
    let run = proxy.running();
    let host = proxy.addr.to_string();
    for pq in ["/p/a", "/p/b", "/q/c"] {
        prime(run, &proxy.url(pq), &key_for(&host, pq), &[]).await;
    }
    get(&proxy.url("/p/a")).await;
    prime(
        run,
        &proxy.url("/lv"),
        &key_for(&host, "/lv"),
        &[("accept-language", "en")],
    )
    .await;
    let keys = |v: &Value| -> Vec<String> {
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["key"].as_str().unwrap().to_string())
            .collect()
    };
    let list = |q: String| {
        let url = proxy.admin_url(&format!("/admin/cache/entries?{q}"));
        async move {
            let (status, v) = admin_get(&url).await;
            assert_eq!(status, StatusCode::OK, "{v}");
            v
        }
    };
    let k = |p: &str| key_for(&host, p);
    assert_eq!(
        keys(&list("prefix=/p/&sort=size".into()).await),
        [k("/p/b"), k("/p/a")]
    );
    let abs = format!("http://{host}/p/");
    assert_eq!(
        keys(&list(format!("prefix={abs}&sort=size")).await),
        [k("/p/b"), k("/p/a")]
    );
    assert_eq!(
        keys(&list("prefix=http://elsewhere.example/p/".into()).await),
        Vec::<String>::new()
    );
    assert_eq!(
        keys(&list("tag=t1&sort=size".into()).await),
        [k("/q/c"), k("/p/a")]
    );
    assert_eq!(keys(&list("tag=t1&prefix=/p/".into()).await), [k("/p/a")]);
    assert_eq!(
        keys(&list("tag=t1&top=1&sort=hits".into()).await),
        [k("/p/a")]
    );
    assert_eq!(keys(&list("tag=nope".into()).await), Vec::<String>::new());

    let one = list("prefix=/p/a".into()).await;
    let e = &one["entries"][0];
    assert_eq!(e["route"], "origin", "{e}");
    assert_eq!(e["status"], 200, "{e}");
    assert_eq!(e["state"], "fresh", "{e}");
    assert_eq!(e["hits"], 1, "{e}");
    assert_eq!(e["tags"], json!(["t1"]), "{e}");
    assert_eq!(e["vary"], json!([]), "{e}");
    assert!(e["ttl"].as_i64().unwrap() > 0 && e["age"].is_u64() && e["size"].is_u64());
    let lv = list("prefix=/lv".into()).await;
    assert_eq!(lv["entries"][0]["vary"], json!(["accept-language"]), "{lv}");

    let (status, headers, csv) =
        get(&proxy.admin_url("/admin/cache/entries?tag=t1&format=csv")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        header_str(&headers, "content-type"),
        "text/csv; charset=utf-8"
    );
    let rows = parse_csv(std::str::from_utf8(&csv).unwrap());
    assert_eq!(rows.len(), 3, "{rows:?}");
    let (status, _) = admin_get(&proxy.admin_url("/admin/cache/entries?prefix=ftp://x/")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_admin_root_redirects_to_the_dashboard_without_a_token() {
    let origin = MockOrigin::new().start().await;
    let proxy =
        TestProxy::with_config_and_token(&upstream_config(&origin.url(), ""), Some(TOKEN)).await;
    let (status, headers, _) = get(&proxy.admin_url("/")).await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(header_str(&headers, "location"), "/admin/ui/");
    // Data still needs the token.
    let (status, _, _) = get(&proxy.admin_url("/admin/stats/history")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// POSTs a purge of `url` with extra headers; status and JSON.
async fn purge_with(admin: &str, url: &str, headers: &[(&str, &str)]) -> (StatusCode, Value) {
    let mut b = http::Request::post(admin).header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let body = json!({"url": url}).to_string();
    let (status, _, body) = request(
        b.body(http_body_util::Full::new(Bytes::from(body)))
            .unwrap(),
    )
    .await;
    (status, json_of(&body))
}

#[tokio::test]
async fn a_cross_origin_purge_is_refused_and_the_entry_stays() {
    let origin = MockOrigin::new().route("/v", cacheable("v")).start().await;
    let proxy = TestProxy::start(&origin.url()).await;
    let url = proxy.url("/v");
    prime(
        proxy.running(),
        &url,
        &key_for(&proxy.addr.to_string(), "/v"),
        &[],
    )
    .await;
    let purge = proxy.admin_url("/admin/cache/purge");
    let own = format!("http://{}", proxy.admin_addr);

    for headers in [
        vec![("origin", "http://evil.example")],
        vec![("origin", "null")],
        // Same host, another port: another origin.
        vec![("origin", "http://127.0.0.1:1")],
        vec![("origin", own.as_str()), ("sec-fetch-site", "cross-site")],
        vec![("sec-fetch-site", "cross-site")],
    ] {
        let (status, v) = purge_with(&purge, &url, &headers).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{headers:?}");
        assert_eq!(v, json!({"error": "cross-origin request refused"}));
    }
    // Seen from the victim's side: still a hit, the origin was not asked again.
    assert!(is_hit(&cache_status(&get(&url).await.1)));
    assert_eq!(origin.hits("/v"), 1);
    // Reads from another origin are not state changes.
    let (status, _, _) = get_with(
        &proxy.admin_url("/admin/status"),
        &[("origin", "http://evil.example")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // The dashboard's own origin, and curl (no Origin), purge.
    let (status, v) = purge_with(
        &purge,
        &url,
        &[("origin", &own), ("sec-fetch-site", "same-origin")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["purged"], 1);
    assert!(is_miss(&cache_status(&get(&url).await.1)));
    assert_eq!(origin.hits("/v"), 2);
}
