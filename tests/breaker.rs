//! Circuit breaker, outlier ejection and retry budget seen from outside: an upstream that keeps
//! failing stops receiving requests, stale copies stand in where the rules allow, and operators
//! can force the state. The half-open probe rules are unit tests on the paused clock
//! (`src/breaker/tests.rs`).
#![allow(clippy::unwrap_used)]

#[path = "support.rs"]
mod support;

#[path = "admin/support.rs"]
mod admin_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use admin_support::*;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::Value;
use support::*;

/// Upstream attempts made to endpoint `ep` of upstream `up` so far.
fn attempts(proxy: &TestProxy, up: usize, ep: usize) -> u64 {
    proxy.running().runtime().upstreams.list[up].endpoints[ep]
        .attempts
        .load(Ordering::Relaxed)
}

/// The `GET /admin/breakers` entry for `upstream`.
async fn breaker_view(proxy: &TestProxy, upstream: &str) -> Value {
    let (status, v) = admin_get(&proxy.admin_url("/admin/breakers")).await;
    assert_eq!(status, StatusCode::OK);
    v["breakers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["upstream"] == upstream)
        .unwrap_or_else(|| panic!("no breaker {upstream}: {v}"))
        .clone()
}

/// Asserts a fail-fast answer: 503, `Retry-After` within `1..=max_retry`, circuit-open detail.
fn assert_circuit_open(answer: &Answer, max_retry: u64) {
    let (status, headers, _) = answer;
    assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE, "{headers:?}");
    assert_eq!(
        cache_status(headers),
        "seawall; fwd=bypass; detail=circuit-open"
    );
    let retry: u64 = header_str(headers, "retry-after").parse().unwrap();
    assert!((1..=max_retry).contains(&retry), "retry-after {retry}");
}

/// Asserts the fail-fast answer of a forced-open breaker: 503, circuit-open, no `Retry-After`.
fn assert_forced_open(answer: &Answer) {
    let (status, headers, _) = answer;
    assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE, "{headers:?}");
    assert_eq!(
        cache_status(headers),
        "seawall; fwd=bypass; detail=circuit-open"
    );
    assert!(!headers.contains_key("retry-after"), "{headers:?}");
}

/// A breaker that trips after `n` consecutive connect failures, or on half the requests
/// failing once `n` were made, from this one test client (`max_client_share = 1.0`: a single
/// client may count fully), and stays open for 30 s; no retries.
fn trip_after(n: u32) -> String {
    format!(
        "[upstreams.breaker]\nconsecutive_failures = {n}\nopen_duration = \"30s\"\n\
         max_open_duration = \"60s\"\nmin_requests = {n}\nfailure_rate = 0.5\n\
         max_client_share = 1.0\n\n\
         [upstreams.retry]\nmax_retries = 0\n"
    )
}

#[tokio::test]
async fn refused_connections_open_the_breaker_and_later_requests_fail_fast() {
    let dead = closed_port().await;
    let proxy =
        TestProxy::with_config(&upstream_config(&format!("http://{dead}"), &trip_after(3))).await;

    for i in 1..=3 {
        let (status, headers, _) = get(&proxy.url(&format!("/down?i={i}"))).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert!(
            cache_status(&headers).contains("detail=upstream-refused"),
            "{headers:?}"
        );
        assert_eq!(attempts(&proxy, 0, 0), i);
    }
    let b = breaker_view(&proxy, "origin").await;
    assert_eq!(b["state"], "open", "{b}");
    assert_eq!(b["trips"], 1, "{b}");
    assert_eq!(b["forced"], false, "{b}");
    assert_eq!(b["last_transition"]["from"], "closed", "{b}");
    assert_eq!(b["last_transition"]["to"], "open", "{b}");

    for i in 0..5 {
        let answer = get(&proxy.url(&format!("/down?after={i}"))).await;
        assert_circuit_open(&answer, 30);
    }
    assert_eq!(attempts(&proxy, 0, 0), 3, "no upstream attempt while open");

    // Readiness reports the open breaker but does not gate on it; status raises a warning.
    let (status, v) = admin_get(&proxy.admin_url("/readyz")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["breakers_not_closed"], serde_json::json!(["origin"]));
    let (_, st) = admin_get(&proxy.admin_url("/admin/status")).await;
    assert_eq!(
        st["breakers"],
        serde_json::json!([{"upstream": "origin", "state": "open"}])
    );
    let alert = st["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "breaker_open")
        .unwrap_or_else(|| panic!("no breaker_open alert: {st}"));
    assert_eq!(alert["severity"], "warning");
}

#[tokio::test]
async fn stale_copies_are_served_while_open_but_not_past_must_revalidate() {
    let origin = MockOrigin::new()
        .route(
            "/sie",
            MockResponse::ok("stale-if-error body")
                .header("cache-control", "max-age=1, stale-if-error=600"),
        )
        .route(
            "/route-sie/page",
            MockResponse::ok("route window body").header("cache-control", "max-age=1"),
        )
        .route(
            "/mr",
            MockResponse::ok("must revalidate body").header(
                "cache-control",
                "max-age=1, must-revalidate, stale-if-error=600",
            ),
        )
        .route(
            "/trip",
            MockResponse::with_status(503).header("cache-control", "no-store"),
        )
        .start()
        .await;
    let cfg = format!(
        "[[upstreams]]\nname = \"origin\"\nendpoints = [{:?}]\n{}\n\
         [[routes]]\nupstream = \"origin\"\n\n\
         [[routes]]\nname = \"sie\"\nupstream = \"origin\"\npath_prefix = \"/route-sie/\"\n\
         stale_if_error = \"10m\"\n",
        origin.url(),
        trip_after(3)
    );
    let proxy = TestProxy::with_config(&cfg).await;
    let host = proxy.addr.to_string();
    let none = HeaderMap::new();

    for path in ["/sie", "/route-sie/page", "/mr"] {
        let (status, _, _) = prime(
            proxy.running(),
            &proxy.url(path),
            &key_for(&host, path),
            &[],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    proxy
        .running()
        .state
        .cache()
        .clock
        .advance(Duration::from_secs(5));

    for _ in 0..3 {
        let (status, _, _) = get(&proxy.url("/trip")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(breaker_view(&proxy, "origin").await["state"], "open");
    let origin_before = origin.total_hits();
    let attempts_before = attempts(&proxy, 0, 0);
    assert_eq!(origin_before, 6);

    for (path, body) in [
        ("/sie", "stale-if-error body"),
        ("/route-sie/page", "route window body"),
    ] {
        let (status, headers, got) = get(&proxy.url(path)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {headers:?}");
        assert_eq!(got, body);
        let cs = cache_status(&headers);
        assert!(cs.starts_with("seawall; hit; ttl=-"), "{path}: {cs}");
        assert!(cs.ends_with("; detail=circuit-open"), "{path}: {cs}");
        assert!(!headers.contains_key("retry-after"), "{headers:?}");
    }

    let answer = get(&proxy.url("/mr")).await;
    assert_circuit_open(&answer, 30);
    assert_ne!(answer.2, Bytes::from_static(b"must revalidate body"));
    assert!(
        is_stored(proxy.running(), &key_for(&host, "/mr"), &none),
        "the entry is kept, only not served"
    );

    assert_eq!(
        origin.total_hits(),
        origin_before,
        "nothing reached the origin"
    );
    assert_eq!(attempts(&proxy, 0, 0), attempts_before);
}

#[tokio::test]
async fn an_origin_slower_than_ttfb_timeout_trips_the_breaker() {
    let origin = MockOrigin::new()
        .route(
            "/slow",
            MockResponse::ok("too late")
                .delay(5000)
                .header("cache-control", "no-store"),
        )
        .start()
        .await;
    let extra = format!("ttfb_timeout = \"100ms\"\n{}", trip_after(2));
    let proxy = TestProxy::with_config(&upstream_config(&origin.url(), &extra)).await;

    for i in 1..=2 {
        let (status, headers, _) = get(&proxy.url("/slow")).await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert!(
            cache_status(&headers).contains("detail=upstream-timeout"),
            "{headers:?}"
        );
        origin.wait_hits("/slow", i).await;
    }
    assert_eq!(breaker_view(&proxy, "origin").await["state"], "open");

    let answer = get(&proxy.url("/slow")).await;
    assert_circuit_open(&answer, 30);
    assert_eq!(origin.hits("/slow"), 2);
    assert_eq!(attempts(&proxy, 0, 0), 2);
}

#[tokio::test]
async fn outlier_ejection_sends_traffic_to_the_healthy_endpoint() {
    let dead = closed_port().await;
    let healthy = MockOrigin::new()
        .route(
            "/e",
            MockResponse::ok("healthy").header("cache-control", "no-store"),
        )
        .start()
        .await;
    let cfg = format!(
        "[[upstreams]]\nname = \"origin\"\nendpoints = [\"http://{dead}\", {:?}]\n\n\
         [upstreams.outlier]\nconsecutive_failures = 2\nejection_time = \"60s\"\n\n\
         [[routes]]\nupstream = \"origin\"\n",
        healthy.url()
    );
    let proxy = TestProxy::with_config(&cfg).await;
    let upstream = proxy.running().runtime().upstreams.list[0].clone();

    // Every request succeeds (a refused attempt is retried on the other endpoint) until the
    // dead endpoint has failed often enough to be ejected.
    let mut sent = 0u64;
    while !upstream.is_ejected(0) {
        assert!(sent < 20, "dead endpoint never ejected");
        let (status, _, body) = get(&proxy.url("/e")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "healthy");
        sent += 1;
    }
    let dead_attempts = attempts(&proxy, 0, 0);
    assert_eq!(
        dead_attempts, 2,
        "ejected after exactly its consecutive failures"
    );
    assert_eq!(healthy.hits("/e"), sent);

    for _ in 0..10 {
        let (status, _, body) = get(&proxy.url("/e")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "healthy");
    }
    assert_eq!(
        attempts(&proxy, 0, 0),
        dead_attempts,
        "ejected endpoint untouched"
    );
    assert_eq!(attempts(&proxy, 0, 1), sent + 10);
    assert_eq!(healthy.hits("/e"), sent + 10);
    assert_eq!(breaker_view(&proxy, "origin").await["state"], "closed");
}

/// R requests to a dead endpoint with retries allowed by `max_retries = 2`, budget off the
/// breaker; returns the upstream attempts.
async fn attempts_against_dead_endpoint(r: u64, ratio: f64, min_per_sec: u32) -> u64 {
    let dead = closed_port().await;
    let extra = format!(
        "[upstreams.breaker]\nenabled = false\n\n\
         [upstreams.retry]\nmax_retries = 2\nbudget_ratio = {ratio:?}\nbudget_min_per_sec = {min_per_sec}\n"
    );
    let proxy = TestProxy::with_config(&upstream_config(&format!("http://{dead}"), &extra)).await;
    for i in 0..r {
        let (status, _, _) = get(&proxy.url(&format!("/dead?i={i}"))).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
    }
    attempts(&proxy, 0, 0)
}

#[tokio::test]
async fn retry_budget_bounds_the_attempts_against_a_dead_endpoint() {
    // TpsBudget::new(10 s, min_per_sec, ratio): a reserve of min_per_sec × 10 retries plus
    // `ratio` retries per request, within the 10 s window.
    let r = 30u64;
    let (ratio, min_per_sec) = (0.2, 1u32);
    let got = attempts_against_dead_endpoint(r, ratio, min_per_sec).await;
    let floor = u64::from(min_per_sec) * 10;
    let upper = r + (r as f64 * ratio).floor() as u64 + floor;
    assert!(
        got <= upper,
        "{got} attempts, budget allows at most {upper}"
    );
    assert!(
        got >= r + floor,
        "{got} attempts: the reserve alone allows {floor} retries"
    );
    assert!(
        got < r * 3,
        "{got} attempts: max_retries alone would allow {}",
        r * 3
    );
}

#[tokio::test]
async fn an_empty_retry_budget_allows_no_retries() {
    let r = 10u64;
    let got = attempts_against_dead_endpoint(r, 0.0, 0).await;
    assert_eq!(got, r);
}

#[tokio::test]
async fn operators_can_force_open_close_and_reset_the_breaker() {
    let origin = MockOrigin::new()
        .route(
            "/o",
            MockResponse::ok("flowing").header("cache-control", "no-store"),
        )
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;

    let (status, v) = admin_post(&proxy.admin_url("/admin/breakers/origin/open"), "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        v,
        serde_json::json!({"upstream": "origin", "state": "open"})
    );
    let b = breaker_view(&proxy, "origin").await;
    assert_eq!(b["forced"], true, "{b}");
    for _ in 0..3 {
        // A forced breaker promises no time: it stays open until an operator closes it.
        assert_forced_open(&get(&proxy.url("/o")).await);
    }
    assert_eq!(origin.total_hits(), 0);

    let (status, v) = admin_post(&proxy.admin_url("/admin/breakers/origin/close"), "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["state"], "closed");
    let (status, _, body) = get(&proxy.url("/o")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "flowing");
    assert_eq!(origin.total_hits(), 1);

    let (status, _) = admin_post(&proxy.admin_url("/admin/breakers/origin/open"), "").await;
    assert_eq!(status, StatusCode::OK);
    assert_forced_open(&get(&proxy.url("/o")).await);
    let (status, v) = admin_post(&proxy.admin_url("/admin/breakers/origin/reset"), "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["state"], "closed");
    let b = breaker_view(&proxy, "origin").await;
    assert_eq!(b["forced"], false, "{b}");
    assert_eq!(b["trips"], 0, "{b}");
    assert_eq!(b["consecutive_failures"], 0, "{b}");
    let (status, _, _) = get(&proxy.url("/o")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(origin.total_hits(), 2);

    let (status, v) = admin_post(&proxy.admin_url("/admin/breakers/nope/open"), "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(v["error"].as_str().unwrap().contains("nope"), "{v}");
    let (status, v) = admin_post(&proxy.admin_url("/admin/breakers/origin/explode"), "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(v["error"].is_string(), "{v}");
    assert_eq!(breaker_view(&proxy, "origin").await["state"], "closed");
}

/// An origin whose `/r` answers 503 until `up` is set, then 200 after `delay_ms`.
#[tokio::test]
async fn health_checks_eject_a_failing_endpoint_and_bring_it_back() {
    let healthy = MockOrigin::new()
        .route("/health", MockResponse::ok("ok"))
        .route(
            "/h",
            MockResponse::ok("a").header("cache-control", "no-store"),
        )
        .start()
        .await;
    let sick = Arc::new(AtomicBool::new(true));
    let s = sick.clone();
    let flaky = MockOrigin::new()
        .route("/health", move |_: &http::request::Parts, _: &Bytes| {
            if s.load(Ordering::SeqCst) {
                MockResponse::with_status(503)
            } else {
                MockResponse::ok("ok")
            }
        })
        .route(
            "/h",
            MockResponse::ok("b").header("cache-control", "no-store"),
        )
        .start()
        .await;
    let cfg = format!(
        "[[upstreams]]\nname = \"origin\"\nendpoints = [{:?}, {:?}]\n\n\
         [upstreams.health_check]\npath = \"/health\"\ninterval = \"50ms\"\ntimeout = \"1s\"\n\n\
         [upstreams.outlier]\nejection_time = \"60s\"\n\n\
         [[routes]]\nupstream = \"origin\"\n",
        healthy.url(),
        flaky.url()
    );
    let proxy = TestProxy::with_config(&cfg).await;
    let upstream = proxy.running().runtime().upstreams.list[0].clone();

    bounded("failing endpoint ejected", async {
        while !upstream.is_ejected(1) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(!upstream.is_ejected(0));
    let flaky_before = flaky.hits("/h");
    for _ in 0..6 {
        let (status, _, body) = get(&proxy.url("/h")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "a");
    }
    assert_eq!(
        flaky.hits("/h"),
        flaky_before,
        "no traffic to the ejected endpoint"
    );

    sick.store(false, Ordering::SeqCst);
    bounded("endpoint readmitted", async {
        while upstream.is_ejected(1) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let mut bodies = Vec::new();
    for _ in 0..6 {
        let (status, _, body) = get(&proxy.url("/h")).await;
        assert_eq!(status, StatusCode::OK);
        bodies.push(body);
    }
    assert!(
        bodies.iter().any(|b| b == "b"),
        "readmitted endpoint serves: {bodies:?}"
    );
    assert!(bodies.iter().any(|b| b == "a"), "{bodies:?}");
}

#[tokio::test]
async fn a_failure_rate_over_the_window_trips_the_breaker() {
    let origin = MockOrigin::new()
        .route(
            "/ok",
            MockResponse::ok("ok").header("cache-control", "no-store"),
        )
        .route(
            "/fail",
            MockResponse::with_status(502).header("cache-control", "no-store"),
        )
        .start()
        .await;
    let extra = "[upstreams.breaker]\nconsecutive_failures = 100\nfailure_rate = 0.5\n\
                 min_requests = 4\nwindow = \"60s\"\nopen_duration = \"30s\"\n\
                 max_client_share = 1.0\n";
    let proxy = TestProxy::with_config(&upstream_config(&origin.url(), extra)).await;

    for path in ["/ok", "/ok", "/fail"] {
        get(&proxy.url(path)).await;
    }
    let b = breaker_view(&proxy, "origin").await;
    assert_eq!(b["state"], "closed", "below min_requests: {b}");
    assert_eq!(b["window_requests"], 3, "{b}");
    assert_eq!(b["window_failures"], 1, "{b}");

    let (status, _, _) = get(&proxy.url("/fail")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "the origin's own 502");
    let b = breaker_view(&proxy, "origin").await;
    assert_eq!(b["state"], "open", "2 of 4 failed: {b}");
    assert_eq!(
        b["consecutive_failures"], 0,
        "a 502 is not a connect failure: {b}"
    );

    assert_circuit_open(&get(&proxy.url("/ok")).await, 30);
    assert_eq!(origin.hits("/ok"), 2);
    assert_eq!(origin.hits("/fail"), 2);
}

/// A GET of `path` as client `ip` (through a trusted front proxy on 127.0.0.1).
async fn get_as(proxy: &TestProxy, path: &str, ip: &str) -> Answer {
    get_with(&proxy.url(path), &[("x-forwarded-for", ip)]).await
}

/// Default breaker settings, clients identified through `X-Forwarded-For` from 127.0.0.1.
fn shared_front(origin: &str, upstream_extra: &str) -> String {
    format!(
        "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n\n{}",
        upstream_config(origin, upstream_extra)
    )
}

#[tokio::test]
async fn one_client_hammering_a_failing_path_never_opens_the_breaker() {
    let origin = MockOrigin::new()
        .route(
            "/bad",
            MockResponse::with_status(503).header("cache-control", "no-store"),
        )
        .route(
            "/slow",
            MockResponse::ok("late")
                .delay(2000)
                .header("cache-control", "no-store"),
        )
        .route(
            "/ok",
            MockResponse::ok("ok").header("cache-control", "no-store"),
        )
        .start()
        .await;
    let extra = "ttfb_timeout = \"50ms\"\n[upstreams.retry]\nmax_retries = 0\n";
    let proxy = TestProxy::with_config(&shared_front(&origin.url(), extra)).await;

    // The attacker: far more than `consecutive_failures` (5) and `min_requests` (20) failures,
    // from one address, directly and through the trusted front.
    for i in 0..40 {
        let (status, _, _) = if i % 2 == 0 {
            get_as(&proxy, "/bad", "198.51.100.7").await
        } else {
            get(&proxy.url("/bad")).await
        };
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "the origin's own 503"
        );
    }
    for _ in 0..8 {
        let (status, _, _) = get_as(&proxy, "/slow", "198.51.100.7").await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    }
    assert_eq!(
        origin.hits("/bad"),
        40,
        "every attack request reached the origin"
    );
    // Every other client is still served.
    for n in 1..=10 {
        let (status, headers, body) = get_as(&proxy, "/ok", &format!("203.0.113.{n}")).await;
        assert_eq!(status, StatusCode::OK, "client {n}: {headers:?}");
        assert_eq!(body, "ok");
    }
    assert_eq!(origin.hits("/ok"), 10);
    let b = breaker_view(&proxy, "origin").await;
    assert_eq!(b["state"], "closed", "{b}");
    assert_eq!(b["trips"], 0, "{b}");
    assert_eq!(
        b["consecutive_failures"], 0,
        "a 503 is not a connect failure: {b}"
    );
}

#[tokio::test]
async fn many_clients_failing_everywhere_open_the_breaker_within_its_window() {
    let origin = MockOrigin::new()
        .route(
            "/a",
            MockResponse::with_status(503).header("cache-control", "no-store"),
        )
        .route(
            "/b",
            MockResponse::with_status(502).header("cache-control", "no-store"),
        )
        .start()
        .await;
    let extra = "[upstreams.retry]\nmax_retries = 0\n";
    let proxy = TestProxy::with_config(&shared_front(&origin.url(), extra)).await;

    let mut sent = 0;
    let opened = bounded("the breaker opens", async {
        loop {
            let path = if sent % 2 == 0 { "/a" } else { "/b" };
            let ip = format!("203.0.113.{}", sent % 10 + 1);
            let (status, headers, _) = get_as(&proxy, path, &ip).await;
            sent += 1;
            if cache_status(&headers).contains("detail=circuit-open") {
                return (status, sent);
            }
            assert!(
                sent <= 25,
                "still closed after {sent} failures from 10 clients"
            );
        }
    })
    .await;
    assert_eq!(opened.0, StatusCode::SERVICE_UNAVAILABLE);
    let reached = origin.total_hits();
    assert!(reached >= 20, "min_requests first: {reached}");
    assert_eq!(breaker_view(&proxy, "origin").await["state"], "open");
    for n in 1..=5 {
        let answer = get_as(&proxy, "/a", &format!("192.0.2.{n}")).await;
        assert_circuit_open(&answer, 30);
    }
    assert_eq!(origin.total_hits(), reached, "fail-fast while open");
}

#[tokio::test]
async fn a_forced_open_breaker_promises_no_retry_after() {
    let origin = MockOrigin::new().start().await;
    let proxy = TestProxy::start(&origin.url()).await;
    let (status, _) = admin_post(&proxy.admin_url("/admin/breakers/origin/open"), "").await;
    assert_eq!(status, StatusCode::OK);
    let (status, headers, _) = get(&proxy.url("/x")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        cache_status(&headers),
        "seawall; fwd=bypass; detail=circuit-open"
    );
    assert!(!headers.contains_key("retry-after"), "{headers:?}");
    assert_eq!(origin.total_hits(), 0);
}

/// An origin that drops the connection without answering on paths starting with `/reset` and
/// answers 200 (no-store) elsewhere; counts the requests it read.
async fn resetting_origin() -> (std::net::SocketAddr, Arc<AtomicU64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicU64::new(0));
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let s = s.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    s.fetch_add(1, Ordering::SeqCst);
                    if head
                        .split(' ')
                        .nth(1)
                        .is_some_and(|p| p.starts_with("/reset"))
                    {
                        return; // dropped: a reset after the request was sent
                    }
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncache-control: no-store\r\n\r\nok";
                    if stream.write_all(ok).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn one_client_resetting_a_path_never_opens_the_breaker() {
    let (addr, seen) = resetting_origin().await;
    let extra = "[upstreams.retry]\nmax_retries = 0\n";
    let proxy = TestProxy::with_config(&shared_front(&format!("http://{addr}"), extra)).await;
    for _ in 0..40 {
        let (status, headers, _) = get_as(&proxy, "/reset", "198.51.100.7").await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{headers:?}");
        assert!(
            cache_status(&headers).contains("detail=upstream-reset"),
            "{headers:?}"
        );
    }
    assert_eq!(
        seen.load(Ordering::SeqCst),
        40,
        "every reset request reached the origin"
    );
    for n in 1..=10 {
        let (status, headers, body) = get_as(&proxy, "/ok", &format!("203.0.113.{n}")).await;
        assert_eq!(status, StatusCode::OK, "client {n}: {headers:?}");
        assert_eq!(body, "ok");
    }
    let b = breaker_view(&proxy, "origin").await;
    assert_eq!(b["state"], "closed", "{b}");
    assert_eq!(b["window_failures"], 40, "{b}");
    assert_eq!(b["window_counted_failures"], 0.0, "{b}");
}
