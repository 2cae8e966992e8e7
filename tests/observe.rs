//! What an operator sees of the traffic: latency to the last byte next to time to first byte,
//! uncacheable traffic outside the hit ratio, the `/admin/status` fields the rollout gate
//! reads, the kill switch as a gauge and in `healthy`, and access log lines (text, JSON,
//! nginx combined) with client, host, full target (redacted), user agent, bytes and aborts.
#![allow(clippy::unwrap_used)]

#[path = "support.rs"]
mod support;

#[path = "admin/support.rs"]
mod admin_support;

#[path = "deploy/harness.rs"]
mod harness;

use std::time::Duration;

use admin_support::*;
use bytes::Bytes;
use harness::SeawallProcess;
use http::{Method, StatusCode};
use support::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// `seawall_*` value summed over every `cache_status` of `route`.
fn sum_route(samples: &[Sample], name: &str, route: &str) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && s.labels.get("route").is_some_and(|r| r == route))
        .map(|s| s.value)
        .sum()
}

/// A response streamed over ~1.5 s: four chunks 500 ms apart.
fn slow_stream() -> MockResponse {
    MockResponse::ok("")
        .header("cache-control", "max-age=60")
        .chunked(
            vec![
                Bytes::from_static(b"aaaa"),
                Bytes::from_static(b"bbbb"),
                Bytes::from_static(b"cccc"),
                Bytes::from_static(b"dddd"),
            ],
            500,
        )
}

#[tokio::test]
async fn a_slowly_streamed_response_is_timed_to_its_last_byte_and_first_byte_stays_small() {
    let origin = MockOrigin::new()
        .route("/slow", slow_stream())
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    let (status, _, body) = get(&proxy.url("/slow")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"aaaabbbbccccdddd");

    // The observation is made when the last byte is handed over; poll briefly for it.
    let metrics = proxy.admin_url("/metrics");
    let s = poll_samples(&metrics, |s| {
        sum_route(s, "seawall_request_duration_seconds_count", "origin") >= 1.0
    })
    .await;
    let total = must(
        &s,
        "seawall_request_duration_seconds_sum",
        &[("route", "origin"), ("cache_status", "miss")],
    );
    assert!(total >= 1.5, "duration to the last byte was {total}s");
    let first = must(
        &s,
        "seawall_response_first_byte_seconds_sum",
        &[("route", "origin"), ("cache_status", "miss")],
    );
    let first_n = must(
        &s,
        "seawall_response_first_byte_seconds_count",
        &[("route", "origin"), ("cache_status", "miss")],
    );
    assert_eq!(first_n, 1.0);
    assert!(first < 1.0, "first byte took {first}s");
    // The status p95 is the time to first byte, so a long stream does not fail a rollout.
    let (_, st) = admin_get(&proxy.admin_url("/admin/status")).await;
    let p95 = st["latency_p95_ms"].as_f64().unwrap();
    assert!(p95 < 1000.0, "latency_p95_ms {p95}: {st}");
}

/// Scrapes until `done` holds (bounded).
async fn poll_samples(url: &str, done: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
    bounded("metrics condition", async {
        loop {
            let s = parse_exposition(&scrape(url).await);
            if done(&s) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

#[tokio::test]
async fn uncacheable_traffic_is_its_own_class_and_the_hit_ratio_waits_for_enough_requests() {
    let origin = MockOrigin::new()
        .route(
            "/c",
            MockResponse::ok("c").header("cache-control", "max-age=300"),
        )
        .route(
            "/ns",
            MockResponse::ok("ns").header("cache-control", "no-store"),
        )
        .route(
            "/p",
            MockResponse::ok("p").header("cache-control", "private, max-age=60"),
        )
        .start()
        .await;
    let src = format!(
        "{}\n[admin]\nalert_min_requests = 5\n",
        upstream_config(&origin.url(), "")
    );
    let proxy = TestProxy::with_config(&src).await;
    let host = proxy.addr.to_string();

    // Uncacheable: no-store and private responses, an unsafe method (bypass). X-Cache says MISS
    // for the forwarded ones as before.
    for path in ["/ns", "/p"] {
        let (status, h, _) = get(&proxy.url(path)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(header_str(&h, "x-cache"), "MISS", "{path}");
    }
    let (status, _, _) = call(Method::POST, &proxy.url("/c")).await;
    assert_eq!(status, StatusCode::OK);
    // Cacheable: one miss, one hit.
    prime(
        proxy.running(),
        &proxy.url("/c"),
        &key_for(&host, "/c"),
        &[],
    )
    .await;
    let (_, h, _) = get(&proxy.url("/c")).await;
    assert_eq!(header_str(&h, "x-cache"), "HIT");

    let (_, st) = admin_get(&proxy.admin_url("/admin/status")).await;
    assert_eq!(st["cacheable_requests"], 2, "{st}");
    assert!(st["hit_ratio"].is_null(), "2 < alert_min_requests: {st}");
    let share = st["uncacheable_share"].as_f64().unwrap();
    assert!((share - 0.6).abs() < 1e-9, "{st}");

    for _ in 0..3 {
        let (_, h, _) = get(&proxy.url("/c")).await;
        assert_eq!(header_str(&h, "x-cache"), "HIT");
    }
    let (_, st) = admin_get(&proxy.admin_url("/admin/status")).await;
    assert_eq!(st["cacheable_requests"], 5, "{st}");
    // 4 hits of 5 cacheable requests; the 3 uncacheable ones do not drag it down.
    assert_eq!(st["hit_ratio"].as_f64(), Some(0.8), "{st}");
    assert!((st["uncacheable_share"].as_f64().unwrap() - 3.0 / 8.0).abs() < 1e-9);
    assert!(
        st["error_rate"].is_number() && st["error_ratio"].is_number(),
        "{st}"
    );

    let s = parse_exposition(&scrape(&proxy.admin_url("/metrics")).await);
    let req = |class: &str| {
        must(
            &s,
            "seawall_requests_total",
            &[
                ("route", "origin"),
                ("cache_status", class),
                ("code_class", "2xx"),
            ],
        )
    };
    assert_eq!(req("uncacheable"), 3.0);
    assert_eq!(req("miss"), 1.0);
    assert_eq!(req("hit"), 4.0);
    assert_eq!(
        sample(
            &s,
            "seawall_requests_total",
            &[("route", "origin"), ("cache_status", "bypass")]
        ),
        None,
        "no bypass label any more"
    );
    assert_eq!(
        must(
            &s,
            "seawall_response_first_byte_seconds_count",
            &[("route", "origin"), ("cache_status", "uncacheable")]
        ),
        3.0
    );
}

#[tokio::test]
async fn the_kill_switch_shows_as_a_gauge_and_makes_status_unhealthy() {
    let origin = MockOrigin::new()
        .route("/", MockResponse::ok("x"))
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    let gauge = |text: &str| must(&parse_exposition(text), "seawall_cache_enabled", &[]);
    assert_eq!(gauge(&scrape(&proxy.admin_url("/metrics")).await), 1.0);
    let (_, st) = admin_get(&proxy.admin_url("/admin/status")).await;
    assert_eq!(st["healthy"], true, "{st}");

    let (status, _) = admin_post(&proxy.admin_url("/admin/cache/disable"), "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(gauge(&scrape(&proxy.admin_url("/metrics")).await), 0.0);
    let (_, st) = admin_get(&proxy.admin_url("/admin/status")).await;
    assert_eq!(st["healthy"], false, "{st}");

    admin_post(&proxy.admin_url("/admin/cache/enable"), "").await;
    assert_eq!(gauge(&scrape(&proxy.admin_url("/metrics")).await), 1.0);
    let (_, st) = admin_get(&proxy.admin_url("/admin/status")).await;
    assert_eq!(st["healthy"], true, "{st}");
}

#[tokio::test]
async fn an_upstream_failure_answers_with_its_reason_and_no_os_error_text() {
    let dead = closed_port().await;
    let proxy = TestProxy::start(&format!("http://{dead}")).await;
    let (status, h, body) = get(&proxy.url("/x")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let body = String::from_utf8_lossy(&body).to_string();
    assert!(
        cache_status(&h).contains("detail=upstream-refused"),
        "{h:?}"
    );
    assert!(body.contains("upstream-refused"), "{body}");
    for os in ["os error", "refused (", "Connection refused", "tcp connect"] {
        assert!(!body.contains(os), "OS error text in the body: {body}");
    }
}

#[tokio::test]
async fn an_upgraded_connection_is_not_timed() {
    let (origin, _) = upgrade_echo_origin().await;
    let proxy = TestProxy::start(&format!("http://{origin}")).await;
    let mut conn = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    conn.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let head = bounded("101 head", read_until(&mut conn, b"\r\n\r\n")).await;
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
    // The upgraded connection stays open while we look.
    let s = poll_samples(&proxy.admin_url("/metrics"), |s| {
        sum_route(s, "seawall_response_first_byte_seconds_count", "origin") >= 1.0
    })
    .await;
    assert_eq!(
        sum_route(&s, "seawall_request_duration_seconds_count", "origin"),
        0.0
    );
    drop(conn);
}

// ---------------------------------------------------------------------------------------------
// Access log of the real binary (stdout is a file here, not a terminal)
// ---------------------------------------------------------------------------------------------

/// Waits (bounded) for a line of `p`'s output that satisfies `f`.
async fn wait_line(p: &SeawallProcess, what: &str, f: impl Fn(&str) -> bool) -> String {
    bounded(what, async {
        loop {
            if let Some(l) = p.log_text().lines().find(|l| f(l)) {
                return l.to_string();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

async fn get_headers(url: &str, headers: &[(&str, &str)]) -> (StatusCode, Bytes) {
    let (s, _, b) = get_with(url, headers).await;
    (s, b)
}

#[tokio::test]
async fn json_access_log_has_client_host_target_agent_bytes_and_last_byte_time() {
    let origin = MockOrigin::new()
        .route("/page", MockResponse::ok("hello"))
        .route("/slow", slow_stream())
        .route(
            "/reset",
            MockResponse::ok(payload(1000))
                .header("cache-control", "max-age=60")
                .reset_after(100),
        )
        .start()
        .await;
    let rest = format!(
        "[log]\naccess_log = true\naccess_log_format = \"json\"\n\
         redact_query_params = [\"token\"]\n\n{}",
        upstream_config(&origin.url(), "")
    );
    let p = SeawallProcess::start("json", "trusted_proxies = [\"127.0.0.1/32\"]", &rest, &[]).await;
    let (status, _) = get_headers(
        &p.url("/page?token=s3cret&x=1"),
        &[
            ("x-forwarded-for", "203.0.113.7"),
            ("user-agent", "probe/1.0"),
            ("host", "example.com"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let line = wait_line(&p, "access line for /page", |l| l.contains("\"/page?")).await;
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["client"], "203.0.113.7", "{line}");
    assert_eq!(v["host"], "example.com", "{line}");
    assert_eq!(v["method"], "GET", "{line}");
    assert_eq!(v["target"], "/page?token=REDACTED&x=1", "{line}");
    assert_eq!(v["user_agent"], "probe/1.0", "{line}");
    assert_eq!(v["status"], 200, "{line}");
    assert_eq!(v["bytes"], 5, "{line}");
    assert_eq!(v["outcome"], "complete", "{line}");
    assert!(v["duration_ms"].is_number() && v["first_byte_ms"].is_number());
    assert!(
        v.get("trace_id").is_none(),
        "no trace id without tracing: {line}"
    );

    // A 1.5 s stream is logged at 1.5 s, its head much earlier.
    let (status, body) = get_headers(&p.url("/slow"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.len(), 16);
    let line = wait_line(&p, "access line for /slow", |l| l.contains("\"/slow\"")).await;
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert!(v["duration_ms"].as_f64().unwrap() >= 1500.0, "{line}");
    assert!(v["first_byte_ms"].as_f64().unwrap() < 1000.0, "{line}");
    assert_eq!(v["bytes"], 16, "{line}");

    // A client that goes away mid-body is logged as an abort.
    let mut conn = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    conn.write_all(b"GET /slow?abort=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = bounded("head", conn.read(&mut buf)).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    drop(conn);
    let line = wait_line(&p, "abort line", |l| l.contains("abort=1")).await;
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["outcome"], "client_abort", "{line}");
    assert!(v["bytes"].as_u64().unwrap() < 16, "{line}");

    // The origin dying mid-body is our error, not the client's abort.
    let res = send(
        http::Request::get(p.url("/reset"))
            .body(http_body_util::Full::default())
            .unwrap(),
    )
    .await
    .unwrap();
    assert!(read_body(res.into_body()).await.is_err(), "a cut body");
    let line = wait_line(&p, "reset line", |l| l.contains("\"/reset\"")).await;
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["outcome"], "error", "{line}");

    let log = p.log_text();
    assert!(!log.contains("s3cret"), "redacted value leaked: {log}");
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escapes in a non-terminal log: {log}"
    );
}

#[tokio::test]
async fn combined_access_log_is_nginx_compatible_and_upstream_failures_warn_with_reason() {
    let origin = MockOrigin::new()
        .route("/a", MockResponse::ok("hi"))
        .start()
        .await;
    let dead = closed_port().await;
    let no_redis = closed_port().await;
    let rest = format!(
        "[log]\naccess_log = true\naccess_log_format = \"combined\"\n\n\
         [cache.redis]\nurl = \"redis://{no_redis}\"\nconnect_timeout = \"200ms\"\n\n\
         [[upstreams]]\nname = \"origin\"\nendpoints = [\"{}\"]\n\n\
         [[upstreams]]\nname = \"dead\"\nendpoints = [\"http://{dead}\"]\n\n\
         [[routes]]\nupstream = \"dead\"\npath_prefix = \"/dead\"\n\n\
         [[routes]]\nupstream = \"origin\"\n",
        origin.url()
    );
    let p = SeawallProcess::start("combined", "", &rest, &[("NO_COLOR", "1")]).await;
    let (status, _) = get_headers(
        &p.url("/a?x=1"),
        &[
            ("user-agent", "probe/1.0"),
            ("referer", "http://r.example/"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let line = wait_line(&p, "combined line", |l| l.contains("\"GET /a?x=1 ")).await;
    // 127.0.0.1 - - [06/Dec/2026:03:56:45 +0000] "GET /a?x=1 HTTP/1.1" 200 2 "referer" "agent"
    let (addr, rest) = line.split_once(" - - [").unwrap();
    assert_eq!(addr, "127.0.0.1", "{line}");
    let (time, rest) = rest.split_once("] ").unwrap();
    assert_eq!(time.len(), "06/Dec/2026:03:56:45 +0000".len(), "{line}");
    assert!(
        time.ends_with(" +0000") && time.as_bytes()[2] == b'/',
        "{line}"
    );
    assert_eq!(
        rest, "\"GET /a?x=1 HTTP/1.1\" 200 2 \"http://r.example/\" \"probe/1.0\"",
        "{line}"
    );

    let (status, _) = get_headers(&p.url("/dead/x"), &[]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let warn = wait_line(&p, "upstream warning", |l| {
        l.contains("WARN") && l.contains("Upstream request failed")
    })
    .await;
    assert!(warn.contains("upstream=dead"), "{warn}");
    assert!(warn.contains("reason=\"upstream-refused\""), "{warn}");
    assert!(warn.contains("error="), "{warn}");
    // The shared tier's failures say why, at warn, too.
    let warn = wait_line(&p, "shared tier warning", |l| {
        l.contains("WARN") && l.contains("Shared tier call failed")
    })
    .await;
    assert!(warn.contains("error="), "{warn}");
    assert!(!p.log_text().contains('\u{1b}'), "NO_COLOR ignored");
}

#[test]
fn a_bad_access_log_format_names_its_file_line_and_key() {
    let src = "[log]\naccess_log = true\naccess_log_format = \"apache\"\n";
    let e = seawall::config::Config::parse(src, "proxy.toml", std::iter::empty())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("proxy.toml:3"), "{e}");
    assert!(e.contains("log.access_log_format"), "{e}");
    assert!(e.contains("combined"), "{e}");
    // The environment override names the variable.
    let env = [(
        "SEAWALL_LOG_ACCESS_LOG_FORMAT".to_string(),
        "xml".to_string(),
    )];
    let e = seawall::config::Config::parse("", "proxy.toml", env)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("log.access_log_format"), "{e}");
}
