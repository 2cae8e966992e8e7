//! `/metrics` after known traffic: exact request counters by route, cache status and status
//! class, latency histogram counts, upstream outcomes, breaker state and transitions,
//! coalescing, cache gauges, build info and process metrics; and a clean `promtool` check.
#![allow(clippy::unwrap_used)]

#[path = "support.rs"]
mod support;

#[path = "admin/support.rs"]
mod admin_support;

use admin_support::*;
use http::{Method, StatusCode};
use support::*;

/// One route named `web` on `/app`, so anything else has no route.
fn web_config(origin_url: &str, upstream_extra: &str) -> String {
    format!(
        "[[upstreams]]\nname = \"origin\"\nendpoints = [{origin_url:?}]\n{upstream_extra}\n\n\
         [[routes]]\nname = \"web\"\nupstream = \"origin\"\npath_prefix = \"/app\"\n"
    )
}

const CLASSES: [&str; 5] = ["hit", "stale", "miss", "revalidated", "uncacheable"];
const CODES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Every `seawall_requests_total` of `route` must be 0 except those in `expected`.
fn assert_requests(samples: &[Sample], route: &str, expected: &[(&str, &str, f64)]) {
    for class in CLASSES {
        for code in CODES {
            let want = expected
                .iter()
                .find(|(c, k, _)| *c == class && *k == code)
                .map_or(0.0, |e| e.2);
            let got = must(
                samples,
                "seawall_requests_total",
                &[
                    ("route", route),
                    ("cache_status", class),
                    ("code_class", code),
                ],
            );
            assert_eq!(got, want, "requests {route} {class} {code}");
        }
    }
}

/// Runs `promtool check metrics` on `text` when promtool is installed.
fn promtool_check(text: &str) {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let found = Command::new("which")
        .arg("promtool")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("note: promtool is not installed; skipping `promtool check metrics`");
        return;
    }
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn known_traffic_gives_exact_counters() {
    let origin = MockOrigin::new()
        .route(
            "/app/m",
            MockResponse::ok("m").header("cache-control", "max-age=300"),
        )
        .route(
            "/app/ns",
            MockResponse::ok("ns").header("cache-control", "no-store"),
        )
        .route(
            "/app/post",
            MockResponse::ok("posted").header("cache-control", "no-store"),
        )
        .start()
        .await;
    let proxy = TestProxy::with_config(&web_config(&origin.url(), "")).await;
    let host = proxy.addr.to_string();

    // 1 miss, then 3 hits.
    let (_, headers, _) = prime(
        proxy.running(),
        &proxy.url("/app/m"),
        &key_for(&host, "/app/m"),
        &[],
    )
    .await;
    assert!(cache_status(&headers).starts_with("seawall; fwd=uri-miss; stored"));
    for _ in 0..3 {
        let (_, headers, _) = get(&proxy.url("/app/m")).await;
        assert!(
            cache_status(&headers).starts_with("seawall; hit"),
            "{headers:?}"
        );
    }
    // 2 responses that are not stored (no-store): misses without "stored".
    for _ in 0..2 {
        let (_, headers, _) = get(&proxy.url("/app/ns")).await;
        assert_eq!(
            cache_status(&headers),
            "seawall; fwd=uri-miss; detail=no-store"
        );
    }
    // 2 requests that bypass the cache (unsafe method).
    for _ in 0..2 {
        let (status, headers, _) = call(Method::POST, &proxy.url("/app/post")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(cache_status(&headers), "seawall; fwd=bypass; detail=method");
    }
    // 1 request no route matches.
    let (status, _, _) = get(&proxy.url("/nowhere")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(origin.total_hits(), 5);

    let text = scrape(&proxy.admin_url("/metrics")).await;
    let s = parse_exposition(&text);

    assert_requests(
        &s,
        "web",
        &[
            ("miss", "2xx", 1.0),
            ("hit", "2xx", 3.0),
            ("uncacheable", "2xx", 4.0),
        ],
    );
    assert_requests(&s, "_none", &[("uncacheable", "4xx", 1.0)]);

    let count = "seawall_request_duration_seconds_count";
    for (route, class, n) in [
        ("web", "hit", 3.0),
        ("web", "miss", 1.0),
        ("web", "uncacheable", 4.0),
        ("web", "stale", 0.0),
        ("web", "revalidated", 0.0),
        ("_none", "uncacheable", 1.0),
        ("_none", "hit", 0.0),
    ] {
        assert_eq!(
            must(&s, count, &[("route", route), ("cache_status", class)]),
            n,
            "{route} {class}"
        );
    }
    // Every observation fell into the +Inf bucket, too.
    assert_eq!(
        must(
            &s,
            "seawall_request_duration_seconds_bucket",
            &[("route", "web"), ("cache_status", "hit"), ("le", "+Inf")]
        ),
        3.0
    );

    let up = "seawall_upstream_requests_total";
    for (outcome, n) in [
        ("ok", 5.0),
        ("error_status", 0.0),
        ("connect_error", 0.0),
        ("timeout", 0.0),
        ("reset", 0.0),
        ("circuit_open", 0.0),
        ("overloaded", 0.0),
    ] {
        assert_eq!(
            must(&s, up, &[("upstream", "origin"), ("outcome", outcome)]),
            n,
            "{outcome}"
        );
    }
    assert_eq!(
        must(
            &s,
            "seawall_upstream_duration_seconds_count",
            &[("upstream", "origin")]
        ),
        5.0
    );

    assert_eq!(must(&s, "seawall_cache_entries", &[]), 1.0);
    assert!(must(&s, "seawall_cache_bytes", &[]) > 1.0);
    assert_eq!(
        must(&s, "seawall_cache_capacity_bytes", &[]),
        (256u64 * 1024 * 1024) as f64
    );
    assert_eq!(
        must(&s, "seawall_coalesced_requests_total", &[("route", "web")]),
        0.0
    );
    assert_eq!(
        must(&s, "seawall_breaker_state", &[("upstream", "origin")]),
        0.0
    );
    for to in ["closed", "open", "half_open"] {
        assert_eq!(
            must(
                &s,
                "seawall_breaker_transitions_total",
                &[("upstream", "origin"), ("to", to)]
            ),
            0.0
        );
    }

    let slot = std::env::var("SEAWALL_SLOT").unwrap_or_else(|_| "none".into());
    assert_eq!(
        must(
            &s,
            "seawall_build_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("commit", seawall::COMMIT),
                ("slot", &slot)
            ]
        ),
        1.0
    );
    if cfg!(target_os = "linux") {
        assert!(must(&s, "process_resident_memory_bytes", &[]) > 0.0);
        assert!(text.contains("# TYPE process_resident_memory_bytes gauge"));
    }
    assert!(text.contains("# TYPE seawall_requests_total counter"));
    assert!(text.contains("# TYPE seawall_request_duration_seconds histogram"));

    // Purges are counted by kind (dry runs are not).
    let purge = proxy.admin_url("/admin/cache/purge");
    admin_post(&purge, r#"{"url": "/app/m", "dry_run": true}"#).await;
    admin_post(&purge, r#"{"url": "/app/m"}"#).await;
    admin_post(&purge, r#"{"tag": "none"}"#).await;
    let s = parse_exposition(&scrape(&proxy.admin_url("/metrics")).await);
    assert_eq!(must(&s, "seawall_purges_total", &[("kind", "url")]), 1.0);
    assert_eq!(must(&s, "seawall_purges_total", &[("kind", "tag")]), 1.0);
    assert_eq!(must(&s, "seawall_cache_entries", &[]), 0.0);
    assert_eq!(
        must(
            &s,
            "seawall_cache_evictions_total",
            &[("cause", "explicit")]
        ),
        1.0
    );

    promtool_check(&text);
}

#[tokio::test]
async fn breaker_state_transitions_and_stale_serving_are_exported() {
    let origin = MockOrigin::new()
        .route(
            "/app/sie",
            MockResponse::ok("kept").header("cache-control", "max-age=1, stale-if-error=600"),
        )
        .route(
            "/app/trip",
            MockResponse::with_status(503).header("cache-control", "no-store"),
        )
        .start()
        .await;
    // 503s count through the rate only (3 of 4 requests), from this one test client.
    let extra = "[upstreams.breaker]\nconsecutive_failures = 3\nopen_duration = \"30s\"\n\
                 max_open_duration = \"60s\"\nmin_requests = 3\nfailure_rate = 0.75\n\
                 max_client_share = 1.0\n";
    let proxy = TestProxy::with_config(&web_config(&origin.url(), extra)).await;
    let host = proxy.addr.to_string();
    prime(
        proxy.running(),
        &proxy.url("/app/sie"),
        &key_for(&host, "/app/sie"),
        &[],
    )
    .await;
    proxy
        .running()
        .state
        .cache()
        .clock
        .advance(std::time::Duration::from_secs(5));

    for _ in 0..3 {
        let (status, _, _) = get(&proxy.url("/app/trip")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
    let (status, headers, body) = get(&proxy.url("/app/sie")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "kept");
    assert!(
        cache_status(&headers).ends_with("detail=circuit-open"),
        "{headers:?}"
    );
    let (status, _, _) = get(&proxy.url("/app/trip")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(origin.total_hits(), 4);

    let text = scrape(&proxy.admin_url("/metrics")).await;
    let s = parse_exposition(&text);
    assert_eq!(
        must(&s, "seawall_breaker_state", &[("upstream", "origin")]),
        1.0
    );
    let transitions = |to: &str| {
        must(
            &s,
            "seawall_breaker_transitions_total",
            &[("upstream", "origin"), ("to", to)],
        )
    };
    assert!(transitions("open") >= 1.0);
    assert_eq!(transitions("open"), 1.0);
    assert_eq!(transitions("half_open"), 0.0);
    assert_eq!(transitions("closed"), 0.0);

    let up = |outcome: &str| {
        must(
            &s,
            "seawall_upstream_requests_total",
            &[("upstream", "origin"), ("outcome", outcome)],
        )
    };
    assert_eq!(up("ok"), 1.0);
    assert_eq!(up("error_status"), 3.0);
    assert_eq!(up("circuit_open"), 2.0);
    assert_eq!(up("connect_error"), 0.0);

    assert_requests(
        &s,
        "web",
        &[
            ("miss", "2xx", 1.0),
            // 3 failures upstream, 1 refused by the open breaker: cacheable, not served.
            ("miss", "5xx", 4.0),
            ("stale", "2xx", 1.0),
        ],
    );
    let stale = |reason: &str| {
        must(
            &s,
            "seawall_stale_served_total",
            &[("route", "web"), ("reason", reason)],
        )
    };
    assert_eq!(stale("circuit_open"), 1.0);
    assert_eq!(stale("stale_if_error"), 0.0);
    assert_eq!(stale("stale_while_revalidate"), 0.0);
    assert_eq!(stale("max_stale"), 0.0);

    // Back to closed through the operator override: the gauge follows.
    let (status, _) = admin_post(&proxy.admin_url("/admin/breakers/origin/reset"), "").await;
    assert_eq!(status, StatusCode::OK);
    let s = parse_exposition(&scrape(&proxy.admin_url("/metrics")).await);
    assert_eq!(
        must(&s, "seawall_breaker_state", &[("upstream", "origin")]),
        0.0
    );
    assert_eq!(
        must(
            &s,
            "seawall_breaker_transitions_total",
            &[("upstream", "origin"), ("to", "closed")]
        ),
        1.0
    );

    promtool_check(&text);
}

#[tokio::test]
async fn a_burst_against_a_slow_origin_counts_clients_minus_one_as_coalesced() {
    let origin = MockOrigin::new()
        .route(
            "/app/slow",
            MockResponse::ok("shared")
                .delay(1500)
                .header("cache-control", "max-age=60"),
        )
        .start()
        .await;
    let proxy = TestProxy::with_config(&web_config(&origin.url(), "")).await;

    let clients = 6usize;
    let url = proxy.url("/app/slow");
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    let mut collapsed = 0;
    for t in tasks {
        let (status, headers, body) = bounded("burst client", t).await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "shared");
        if cache_status(&headers).ends_with("; collapsed") {
            collapsed += 1;
        }
    }
    assert_eq!(origin.hits("/app/slow"), 1);
    assert_eq!(collapsed, clients - 1);

    let text = scrape(&proxy.admin_url("/metrics")).await;
    let s = parse_exposition(&text);
    assert_eq!(
        must(&s, "seawall_coalesced_requests_total", &[("route", "web")]),
        (clients - 1) as f64
    );
    assert_eq!(
        must(&s, "seawall_coalesce_wait_seconds_count", &[]),
        (clients - 1) as f64
    );
    assert_eq!(
        must(
            &s,
            "seawall_upstream_requests_total",
            &[("upstream", "origin"), ("outcome", "ok")]
        ),
        1.0
    );
    assert_eq!(must(&s, "seawall_cache_entries", &[]), 1.0);

    let (_, st) = admin_get(&proxy.admin_url("/admin/status")).await;
    assert_eq!(st["coalesced"]["requests"], (clients - 1) as u64, "{st}");
    assert_eq!(st["coalesced"]["leaders"], 1, "{st}");
    promtool_check(&text);
}

#[tokio::test]
async fn upstream_latency_counts_only_exchanges_that_went_upstream() {
    let origin = MockOrigin::new()
        .route(
            "/app/o",
            MockResponse::ok("o").header("cache-control", "no-store"),
        )
        .start()
        .await;
    let proxy = TestProxy::with_config(&web_config(&origin.url(), "")).await;
    get(&proxy.url("/app/o")).await;
    let (status, _) = admin_post(&proxy.admin_url("/admin/breakers/origin/open"), "").await;
    assert_eq!(status, StatusCode::OK);
    for _ in 0..3 {
        let (status, _, _) = get(&proxy.url("/app/o")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(origin.total_hits(), 1);

    let s = parse_exposition(&scrape(&proxy.admin_url("/metrics")).await);
    assert_eq!(
        must(
            &s,
            "seawall_upstream_requests_total",
            &[("upstream", "origin"), ("outcome", "circuit_open")]
        ),
        3.0
    );
    assert_eq!(
        must(
            &s,
            "seawall_upstream_duration_seconds_count",
            &[("upstream", "origin")]
        ),
        1.0,
        "one request went upstream; rejected ones have no upstream time"
    );
}

#[tokio::test]
async fn breaker_transitions_keep_counting_across_a_reload() {
    let origin = MockOrigin::new().start().await;
    let proxy = FileProxy::start(&web_config(&origin.url(), "")).await;
    let open = proxy.admin_url("/admin/breakers/origin/open");
    let close = proxy.admin_url("/admin/breakers/origin/close");
    let opened = |s: &[Sample]| {
        must(
            s,
            "seawall_breaker_transitions_total",
            &[("upstream", "origin"), ("to", "open")],
        )
    };

    for _ in 0..2 {
        assert_eq!(admin_post(&open, "").await.0, StatusCode::OK);
        assert_eq!(admin_post(&close, "").await.0, StatusCode::OK);
    }
    let s = parse_exposition(&scrape(&proxy.admin_url("/metrics")).await);
    assert_eq!(opened(&s), 2.0);

    let (status, v) = admin_post(&proxy.admin_url("/admin/reload"), "").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(admin_post(&open, "").await.0, StatusCode::OK);
    let s = parse_exposition(&scrape(&proxy.admin_url("/metrics")).await);
    assert_eq!(
        must(&s, "seawall_breaker_state", &[("upstream", "origin")]),
        1.0
    );
    assert_eq!(opened(&s), 3.0, "a third opening happened");
}
