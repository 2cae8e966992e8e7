//! The dashboard in a real headless Chromium (Debian's `chromium` through `chromedriver`): login,
//! the entry list and a purge from it, the 24 h charts and the CSV export, a tripped breaker on
//! the health tab, a refused token, the read-only view; and the assets' security headers.
#![allow(clippy::unwrap_used)]

#[path = "support.rs"]
mod support;

#[path = "ui/browser.rs"]
mod browser;

use browser::{Browser, TempDir};
use http::StatusCode;
use serde_json::{Value, json};
use support::*;

/// A cacheable answer.
fn cacheable(body: &str) -> MockResponse {
    MockResponse::ok(body.to_string())
        .header("cache-control", "max-age=300")
        .header("surrogate-key", "ui-test")
}

/// Opens the dashboard and logs in with `token`.
async fn log_in(b: &Browser, proxy: &TestProxy, token: &str) {
    b.goto(&proxy.admin_url("/admin/ui/")).await;
    b.fill("input[name=token]", token).await;
    b.click("#login-submit").await;
}

/// The rows of the entry table, by key.
async fn entry_keys(b: &Browser) -> Vec<String> {
    let v = b
        .exec(
            "return [...document.querySelectorAll('#entries-body tr')].map(r => r.dataset.key);",
            json!([]),
        )
        .await;
    serde_json::from_value(v).unwrap()
}

#[tokio::test]
async fn the_assets_are_served_without_a_token_with_a_strict_policy() {
    let origin = MockOrigin::new().start().await;
    let proxy =
        TestProxy::with_config_and_token(&upstream_config(&origin.url(), ""), Some("t0k")).await;
    let (status, h, body) = get(&proxy.admin_url("/admin/ui/")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    let csp = header_str(&h, "content-security-policy");
    assert!(
        csp.contains("default-src 'self'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert!(String::from_utf8_lossy(&body).contains("name=\"token\""));
    let (status, h, _) = get(&proxy.admin_url("/admin/ui/app.js")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h["content-type"], "text/javascript; charset=utf-8");
    // The data still needs the token; whoami names the role only for a valid one.
    let (status, _, _) = get(&proxy.admin_url("/admin/cache/entries")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = get(&proxy.admin_url("/admin/whoami")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let req = http::Request::get(proxy.admin_url("/admin/whoami"))
        .header("authorization", "Bearer t0k")
        .body(Default::default())
        .unwrap();
    let (status, _, body) = request(req).await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["role"], "full");
}

#[tokio::test]
async fn a_logged_in_operator_sees_an_entry_and_purges_it_from_the_list() {
    let origin = MockOrigin::new()
        .route("/ui/page", cacheable("page"))
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    let (status, _, _) = get(&proxy.url("/ui/page")).await;
    assert_eq!(status, StatusCode::OK);
    let (_, h, _) = get(&proxy.url("/ui/page")).await;
    assert!(cache_status(&h).contains("hit"), "{h:?}");
    assert_eq!(origin.hits("/ui/page"), 1);

    let b = Browser::start().await;
    log_in(&b, &proxy, TEST_ADMIN_TOKEN).await;
    b.wait_text("#whoami", "full access").await;
    let key = format!("http://{}/ui/page", proxy.addr);
    b.wait_for(
        "the entry in the list",
        "return [...document.querySelectorAll('#entries-body tr')].map(r => r.dataset.key);",
        json!([]),
        |v| {
            v.as_array()
                .is_some_and(|a| a.iter().any(|k| k == key.as_str()))
        },
    )
    .await;
    let row = format!("#entries-body tr[data-key=\"{key}\"]");
    let hits = b.text(&format!("{row} td:nth-child(7)")).await.unwrap();
    assert_eq!(hits, "1", "one hit after the miss that stored it");
    assert!(
        b.text(&row).await.unwrap().contains("ui-test"),
        "the tag is listed"
    );

    // The stored headers, as /admin/cache/entry gives them.
    b.click(&format!("{row} button[data-action=headers]")).await;
    let detail = b.wait_text("#entry-detail-body", "cache-control").await;
    assert!(detail.contains("max-age=300"), "{detail}");

    // Search by tag and by URL prefix (the API's filters).
    b.fill("#entries-tag", "no-such-tag").await;
    b.click("#entries-search").await;
    b.wait_text("#entries-message", "No entries match").await;
    b.fill("#entries-tag", "ui-test").await;
    b.fill("#entries-prefix", "/ui/").await;
    b.click("#entries-search").await;
    b.wait_text("#entries-message", "1 entry shown").await;
    assert_eq!(entry_keys(&b).await, vec![key.clone()]);

    // Purge (hard) from the row: the next request goes to the origin again.
    b.click(&format!("{row} button[data-action=purge-hard]"))
        .await;
    b.wait_text("#entries-message", "Purged 1 entry").await;
    assert!(!entry_keys(&b).await.contains(&key));
    let (_, h, _) = get(&proxy.url("/ui/page")).await;
    assert!(cache_status(&h).contains("fwd="), "{h:?}");
    assert_eq!(origin.hits("/ui/page"), 2);
    b.quit().await;
}

#[tokio::test]
async fn the_performance_tab_charts_24h_and_exports_csv() {
    let origin = MockOrigin::new()
        .route("/ui/a", cacheable("a"))
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    for _ in 0..5 {
        let (status, _, _) = get(&proxy.url("/ui/a")).await;
        assert_eq!(status, StatusCode::OK);
    }
    let b = Browser::start().await;
    log_in(&b, &proxy, TEST_ADMIN_TOKEN).await;
    b.click("#tab-performance").await;
    b.wait_text("#perf-since", "History starts at process start")
        .await;
    b.select("#perf-range", "24h").await;
    // The 24 h range asks for per-minute points; the current minute already holds the requests.
    let drawn = b
        .wait_for(
            "points on the 24 h request chart",
            "const s = document.querySelector('#chart-requests svg'); \
             const shown = document.getElementById('panel-performance').dataset.range; \
             return s && shown === '24h' ? Number(s.dataset.points) : 0;",
            json!([]),
            |v| v.as_u64().is_some_and(|n| n > 0),
        )
        .await;
    assert!(drawn.as_u64().unwrap() >= 1);
    assert!(
        b.text("#perf-since")
            .await
            .unwrap()
            .contains("one point per 1 min"),
        "24 h has one point per minute"
    );
    let circles = b
        .exec(
            "return document.querySelectorAll('#chart-hit-ratio svg circle').length;",
            json!([]),
        )
        .await;
    assert!(circles.as_u64().unwrap() >= 1, "hit ratio drawn: {circles}");

    b.click("#export-csv").await;
    let csv = b.downloaded("seawall-history-24h.csv").await;
    let header = csv.lines().next().unwrap_or_default();
    assert!(header.starts_with("t,requests,hit,miss"), "{header}");
    assert!(csv.lines().count() >= 2, "a data line follows: {csv}");
    b.click("#export-json").await;
    let json_text = b.downloaded("seawall-history-24h.json").await;
    let v: Value = serde_json::from_str(&json_text).unwrap();
    assert_eq!(v["range"], "24h");
    b.quit().await;
}

#[tokio::test]
async fn a_tripped_breaker_shows_on_the_health_tab() {
    let dead = closed_port().await;
    let extra = "[upstreams.breaker]\nconsecutive_failures = 3\nopen_duration = \"60s\"\n\
                 max_open_duration = \"60s\"\nmin_requests = 3\nfailure_rate = 0.5\n\
                 max_client_share = 1.0\n\n[upstreams.retry]\nmax_retries = 0\n";
    let proxy = TestProxy::with_config(&upstream_config(&format!("http://{dead}"), extra)).await;
    for i in 0..3 {
        let (status, _, _) = get(&proxy.url(&format!("/down?i={i}"))).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
    }
    let b = Browser::start().await;
    log_in(&b, &proxy, TEST_ADMIN_TOKEN).await;
    b.click("#tab-health").await;
    let state = b
        .wait_for(
            "the origin's breaker row",
            "const r = document.querySelector('#health-breakers-body tr[data-upstream=origin]'); \
             return r ? r.dataset.state : null;",
            json!([]),
            |v| !v.is_null(),
        )
        .await;
    assert_eq!(state, "open");
    let alerts = b.wait_text("#health-alerts", "breaker_open").await;
    assert!(alerts.contains("origin"), "{alerts}");
    let components = b.text("#health-components").await.unwrap();
    assert!(
        components.contains(env!("CARGO_PKG_VERSION")),
        "{components}"
    );
    let history = b.wait_text("#alerts-history-body", "breaker_open").await;
    assert!(history.contains("firing"), "{history}");

    // Closed from the management tab: the history shows the alert resolved.
    b.click("#tab-management").await;
    b.click("#mgmt-breakers-body tr[data-upstream=origin] button[data-action=close]")
        .await;
    b.wait_text("#breaker-result", "now closed").await;
    b.click("#tab-health").await;
    b.wait_text("#alerts-history-body", "resolved").await;
    let state = b
        .wait_for(
            "the origin's breaker closed",
            "const r = document.querySelector('#health-breakers-body tr[data-upstream=origin]'); \
             return r ? r.dataset.state : null;",
            json!([]),
            |v| v == "closed",
        )
        .await;
    assert_eq!(state, "closed");
    b.quit().await;
}

#[tokio::test]
async fn a_wrong_token_is_refused_and_nothing_is_shown() {
    let origin = MockOrigin::new()
        .route("/ui/x", cacheable("x"))
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    let (status, _, _) = get(&proxy.url("/ui/x")).await;
    assert_eq!(status, StatusCode::OK);
    let b = Browser::start().await;
    log_in(&b, &proxy, "not-the-token").await;
    let msg = b.wait_text("#login-error", "401").await;
    assert!(msg.contains("Wrong token"), "{msg}");
    assert!(!b.shown("#app").await, "the dashboard stays hidden");
    assert!(entry_keys(&b).await.is_empty(), "no entry was loaded");
    let stored = b
        .exec(
            "return sessionStorage.length + localStorage.length + document.cookie.length;",
            json!([]),
        )
        .await;
    assert_eq!(stored, 0, "a refused token is not kept");
    b.quit().await;
}

#[tokio::test]
async fn the_read_only_token_sees_data_but_no_management_actions() {
    let origin = MockOrigin::new()
        .route("/ui/r", cacheable("r"))
        .start()
        .await;
    let dir = TempDir::new("read-token");
    let file = dir.0.join("read-token");
    std::fs::write(&file, "read-only-token\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let config = format!(
        "[admin]\nread_token_file = {:?}\n\n{}",
        file.display().to_string(),
        upstream_config(&origin.url(), "")
    );
    let proxy = TestProxy::with_config(&config).await;
    let (status, _, _) = get(&proxy.url("/ui/r")).await;
    assert_eq!(status, StatusCode::OK);
    let b = Browser::start().await;
    log_in(&b, &proxy, "read-only-token").await;
    b.wait_text("#whoami", "read-only").await;
    let key = format!("http://{}/ui/r", proxy.addr);
    b.wait_for(
        "the entry in the list",
        "return [...document.querySelectorAll('#entries-body tr')].map(r => r.dataset.key);",
        json!([]),
        |v| {
            v.as_array()
                .is_some_and(|a| a.iter().any(|k| k == key.as_str()))
        },
    )
    .await;
    assert!(!b.shown("#tab-management").await);
    assert!(
        !b.shown("#entries-body button[data-action=purge-hard]")
            .await
    );
    assert!(b.shown("#entries-body button[data-action=headers]").await);
    // The token is in sessionStorage only: not in the URL, a cookie or localStorage.
    let where_ = b
        .exec(
            "return [sessionStorage.getItem('seawall-admin-token'), localStorage.length, document.cookie, location.href];",
            json!([]),
        )
        .await;
    assert_eq!(where_[0], "read-only-token");
    assert_eq!(where_[1], 0);
    assert_eq!(where_[2], "");
    assert!(!where_[3].as_str().unwrap().contains("read-only-token"));
    b.quit().await;
}

#[tokio::test]
async fn management_purges_a_prefix_after_a_dry_run_and_clears_only_when_typed() {
    let origin = MockOrigin::new()
        .route("/shop/a", cacheable("a"))
        .route("/shop/b", cacheable("b"))
        .route("/blog/c", cacheable("c"))
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    for p in ["/shop/a", "/shop/b", "/blog/c"] {
        let (status, _, _) = get(&proxy.url(p)).await;
        assert_eq!(status, StatusCode::OK);
    }
    let b = Browser::start().await;
    log_in(&b, &proxy, TEST_ADMIN_TOKEN).await;
    b.wait_text("#whoami", "full access").await;
    b.click("#tab-management").await;

    // The dry run counts; nothing is purged until the second button.
    b.select("#purge-kind", "prefix").await;
    b.fill("#purge-value", "/shop/").await;
    b.click("#purge-soft").await; // hard purge
    b.click("#purge-dry-run").await;
    let dry = b.wait_text("#purge-result", "Dry run").await;
    assert!(dry.contains("2 entries"), "{dry}");
    let (_, h, _) = get(&proxy.url("/shop/a")).await;
    assert!(
        cache_status(&h).contains("hit"),
        "still cached after the dry run: {h:?}"
    );
    b.click("#purge-confirm").await;
    b.wait_text("#purge-result", "Purged 2 entries").await;
    let (_, h, _) = get(&proxy.url("/shop/a")).await;
    assert!(cache_status(&h).contains("fwd="), "{h:?}");
    assert_eq!(origin.hits("/shop/a"), 2);
    let (_, h, _) = get(&proxy.url("/blog/c")).await;
    assert!(
        cache_status(&h).contains("hit"),
        "outside the prefix: {h:?}"
    );

    // The kill switch, both ways.
    b.wait_text("#cache-state", "enabled").await;
    b.click("#cache-toggle").await;
    b.wait_text("#cache-toggle-result", "Cache disabled").await;
    let (_, h, _) = get(&proxy.url("/blog/c")).await;
    assert!(!cache_status(&h).contains("hit"), "disabled: {h:?}");
    b.click("#cache-toggle").await;
    b.wait_text("#cache-toggle-result", "Cache enabled").await;

    // The emergency clear stays disabled until CLEAR-ALL is typed exactly.
    b.fill("#clear-confirm", "clear-all").await;
    let disabled = b
        .exec(
            "return document.getElementById('clear-submit').disabled;",
            json!([]),
        )
        .await;
    assert_eq!(disabled, true);
    b.fill("#clear-confirm", "CLEAR-ALL").await;
    b.click("#clear-submit").await;
    b.wait_text("#clear-result", "Cleared").await;
    let (_, h, _) = get(&proxy.url("/blog/c")).await;
    assert!(cache_status(&h).contains("fwd="), "{h:?}");

    // Reload answers in the page (this instance has no config file: refused, and said so).
    b.click("#reload").await;
    let answer = b
        .wait_text("#reload-result", "started without a config file")
        .await;
    assert!(answer.contains("422"), "{answer}");
    b.quit().await;
}

#[tokio::test]
async fn a_url_list_warm_up_runs_to_done_with_its_progress() {
    let origin = MockOrigin::new()
        .route("/warm/1", cacheable("1"))
        .route("/warm/2", cacheable("2"))
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    let b = Browser::start().await;
    log_in(&b, &proxy, TEST_ADMIN_TOKEN).await;
    b.wait_text("#whoami", "full access").await;
    b.click("#tab-management").await;
    b.select("#warm-kind", "urls").await;
    b.fill("#warm-urls", "/warm/1\n/warm/2").await;
    b.click("#warm-start").await;
    let status = b.wait_text("#warm-status", "done").await;
    assert!(
        status.contains("2/2 handled, 2 stored, 0 failed"),
        "{status}"
    );
    let progress = b
        .exec(
            "const p = document.getElementById('warm-progress'); return [p.value, p.max];",
            json!([]),
        )
        .await;
    assert_eq!(progress, json!([2, 2]));
    assert_eq!(origin.hits("/warm/1"), 1);
    let (_, h, _) = get(&proxy.url("/warm/2")).await;
    assert!(cache_status(&h).contains("hit"), "{h:?}");
    assert_eq!(origin.hits("/warm/2"), 1);
    b.quit().await;
}
