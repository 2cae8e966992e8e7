//! Deployment behaviour of the real `seawall` binary, run as child processes on loopback:
//! SIGTERM under continuous load loses no request (readiness drops first, the drain delay
//! still serves, the listener closes, in-flight requests finish, exit status 0), and a
//! blue/green switch where green warms from blue's cache before it reports ready, traffic
//! moves to green and blue is drained without a failed request.
#![allow(clippy::unwrap_used)]

#[path = "support.rs"]
mod support;

#[path = "admin/support.rs"]
mod admin_support;

#[path = "deploy/harness.rs"]
mod harness;

use std::sync::atomic::Ordering;
use std::time::Duration;

use admin_support::{admin_call, admin_get, get_with, json_of};
use bytes::Bytes;
use harness::{Load, LoadStats, Planned, Prober, SeawallProcess, wait_status};
use http::{Method, StatusCode};
use support::{MockOrigin, MockResponse, bounded, header_str, upstream_config};
use tokio::time::Instant;

const TOKEN: &str = "deploy-test-token";

/// Drain settings of every instance: short enough for a test, long enough to observe.
const DRAIN: &str = "drain_delay = \"500ms\"\ngrace_period = \"5s\"";

/// How long a child may take to exit after SIGTERM (drain delay + grace period + slack).
const EXIT_WAIT: Duration = Duration::from_secs(20);

fn cacheable(body: &str) -> MockResponse {
    MockResponse::ok(body.to_string()).header("cache-control", "max-age=300")
}

fn uncacheable(body: &str) -> MockResponse {
    MockResponse::ok(body.to_string()).header("cache-control", "no-store")
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
        .delay(20)
}

fn assert_no_failure(stats: &LoadStats) {
    assert_eq!(
        stats.failed.load(Ordering::Relaxed),
        0,
        "requests were sent and failed: {}\n{:#?}",
        stats.summary(),
        stats.failure_list()
    );
}

/// Waits (bounded) until the child has exited, while whatever runs alongside keeps running.
async fn wait_gone(p: &mut SeawallProcess) {
    bounded(&format!("{} exits", p.name), async {
        while p.exited().is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_loses_no_request() {
    // Cacheable and uncacheable paths, each answered after 20 ms.
    let mut origin = MockOrigin::new();
    let mut plan = Vec::new();
    for i in 0..4 {
        let (c, u) = (format!("c{i}"), format!("u{i}"));
        origin = origin
            .route(&format!("/{c}"), cacheable(&c).delay(20))
            .route(&format!("/{u}"), uncacheable(&u).delay(20));
        plan.push(Planned::get(&format!("/{c}"), &c));
        plan.push(Planned::get(&format!("/{u}"), &u));
    }
    let origin = origin.start().await;
    let mut proxy =
        SeawallProcess::start("seawall", DRAIN, &upstream_config(&origin.url(), ""), &[]).await;
    let ready = wait_status(&proxy.admin_url("/readyz"), StatusCode::OK, "ready").await;
    assert_eq!(json_of(&ready)["status"], "ready", "{ready:?}");

    let prober = Prober::start(proxy.admin_url("/readyz"), Duration::from_millis(10));
    let load = Load::start(6, proxy.addr, plan, Duration::from_millis(1));
    load.wait_for("load before SIGTERM", |s| {
        s.ok.load(Ordering::Relaxed) >= 300
    })
    .await;
    assert_no_failure(&load.stats);
    // Connections are refused only once the listener has closed, after the signal.
    assert_eq!(load.stats.connect_errors.load(Ordering::Relaxed), 0);

    let term_at = Instant::now();
    proxy.sigterm();
    // The load goes on through the drain delay, the close of the listener and the exit.
    wait_gone(&mut proxy).await;
    let stats = load.stop().await;
    let probes = prober.stop().await;
    let status = proxy.wait_exit(EXIT_WAIT).await;

    eprintln!("load: {}", stats.summary());
    assert_no_failure(&stats);
    assert_eq!(status.code(), Some(0), "exit status {status}");

    // Readiness: 200 before the signal, then 503 "draining" and never ready again.
    assert!(
        probes
            .iter()
            .any(|(t, s, _)| *t < term_at && *s == Some(StatusCode::OK)),
        "ready before SIGTERM: {probes:?}"
    );
    let first_503 = probes
        .iter()
        .position(|(t, s, _)| *t > term_at && *s == Some(StatusCode::SERVICE_UNAVAILABLE))
        .unwrap_or_else(|| panic!("no 503 from /readyz after SIGTERM: {probes:?}"));
    let (t503, _, body) = &probes[first_503];
    assert!(body.contains("\"status\":\"draining\""), "{body}");
    assert!(
        probes[first_503..]
            .iter()
            .all(|(_, s, _)| *s != Some(StatusCode::OK)),
        "ready again after the drain began: {probes:?}"
    );

    // The process still served after it reported not ready, and told kept-alive clients to go.
    let last_ok = stats.last_ok_sent(proxy.addr).unwrap();
    assert!(
        last_ok > *t503,
        "no request sent after /readyz turned 503 was served ({})",
        stats.summary()
    );
    assert!(
        stats.connection_close.load(Ordering::Relaxed) > 0,
        "no Connection: close during the drain ({})",
        stats.summary()
    );
}

const SHOP: &str = "shop.example";

/// The cacheable requests blue is warmed with: (path, Accept-Language, body).
const WARM_SET: [(&str, Option<&str>, &str); 6] = [
    ("/w0", None, "w0"),
    ("/w1", None, "w1"),
    ("/w2", None, "w2"),
    ("/w3", None, "w3"),
    ("/wv", Some("en"), "lang=en"),
    ("/wv", Some("de"), "lang=de"),
];

fn warm_headers(lang: Option<&str>) -> Vec<(&str, &str)> {
    let mut h = vec![("host", SHOP)];
    if let Some(l) = lang {
        h.push(("accept-language", l));
    }
    h
}

/// Origin requests for the paths of [`WARM_SET`].
fn warm_origin_hits(origin: &MockOrigin) -> Vec<u64> {
    ["/w0", "/w1", "/w2", "/w3", "/wv"]
        .iter()
        .map(|p| origin.hits(p))
        .collect()
}

/// Admin GET with the token; status and JSON.
async fn admin_get_auth(url: &str) -> (StatusCode, serde_json::Value) {
    let (status, _, body) = admin_call(Method::GET, url, Some(TOKEN), "").await;
    (status, json_of(&body))
}

/// Waits (bounded) until `p` stores `variants` variants of `http://shop.example{path}`.
async fn wait_stored(p: &SeawallProcess, path: &str, variants: usize) {
    let url = p.admin_url(&format!("/admin/cache/entry?url=http://{SHOP}{path}"));
    bounded(&format!("{path} stored on {}", p.name), async {
        loop {
            let (status, v) = admin_get_auth(&url).await;
            if status == StatusCode::OK && v["variants"].as_array().map(Vec::len) == Some(variants)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blue_green_switch_with_warm_up() {
    let origin = MockOrigin::new()
        .route("/w0", cacheable("w0").delay(20))
        .route("/w1", cacheable("w1").delay(20))
        .route("/w2", cacheable("w2").delay(20))
        .route("/w3", cacheable("w3").delay(20))
        .route("/wv", by_language)
        .route("/live", uncacheable("live").delay(20))
        .route("/slow", uncacheable("slow done").delay(400))
        .start()
        .await;
    let upstream = upstream_config(&origin.url(), "");
    let env = |slot: &'static str| [("SEAWALL_ADMIN_TOKEN", TOKEN), ("SEAWALL_SLOT", slot)];

    // Blue: serving, and warmed with every URL of the set (both variants of /wv).
    let mut blue = SeawallProcess::start("blue", DRAIN, &upstream, &env("blue")).await;
    wait_status(&blue.admin_url("/readyz"), StatusCode::OK, "blue ready").await;
    for (path, lang, body) in WARM_SET {
        let (status, _, got) = get_with(&blue.url(path), &warm_headers(lang)).await;
        assert_eq!(status, StatusCode::OK, "{path} {lang:?}");
        assert_eq!(got, body, "{path} {lang:?}");
    }
    for (path, variants) in [("/w0", 1), ("/w1", 1), ("/w2", 1), ("/w3", 1), ("/wv", 2)] {
        wait_stored(&blue, path, variants).await;
    }
    let warm_hits = warm_origin_hits(&origin);
    assert_eq!(warm_hits, [1, 1, 1, 1, 2], "one fill per variant");

    // Traffic on blue: the warm set and an uncacheable path, from kept-alive clients.
    let mut plan: Vec<Planned> = WARM_SET
        .iter()
        .map(|(path, lang, body)| {
            let p = Planned::get(path, body).header("host", SHOP);
            match lang {
                Some(l) => p.header("accept-language", l),
                None => p,
            }
        })
        .collect();
    plan.insert(3, Planned::get("/live", "live").header("host", SHOP));
    plan.push(Planned::get("/live", "live").header("host", SHOP));
    let load = Load::start(4, blue.addr, plan, Duration::from_millis(2));
    load.wait_for("traffic on blue", |s| s.ok_on(blue.addr) >= 100)
        .await;

    // Green warms from blue's admin listener, reached through a gate held shut for now.
    let relay = admin_support::GatedRelay::start(blue.admin_addr).await;
    let green_cfg = format!(
        "[warmup]\nfrom = \"http://{}\"\ntop = 100\ntimeout = \"30s\"\n\n{upstream}",
        relay.addr
    );
    let mut green = SeawallProcess::start("green", DRAIN, &green_cfg, &env("green")).await;
    relay.wait_accepted(1).await;
    for _ in 0..3 {
        let (status, v) = admin_get(&green.admin_url("/readyz")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
        assert_eq!(v["status"], "warming", "{v}");
    }
    relay.open();
    let ready = wait_status(&green.admin_url("/readyz"), StatusCode::OK, "green ready").await;
    assert_eq!(json_of(&ready)["status"], "ready", "{ready:?}");
    let (status, job) = admin_get_auth(&green.admin_url("/admin/cache/warm/1")).await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert_eq!(job["kind"], "peer", "{job}");
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["imported"], WARM_SET.len(), "{job}");
    assert_eq!(job["errors"], 0, "{job}");

    // Green's very first requests for those URLs are hits, without a word to the origin.
    for (path, lang, body) in WARM_SET {
        let (status, headers, got) = get_with(&green.url(path), &warm_headers(lang)).await;
        assert_eq!(status, StatusCode::OK, "{path} {lang:?}");
        assert_eq!(
            header_str(&headers, "x-cache"),
            "HIT",
            "{path} {lang:?}: {headers:?}"
        );
        assert_eq!(got, body, "{path} {lang:?}");
    }
    assert_eq!(warm_origin_hits(&origin), warm_hits, "no origin traffic");

    // A slow request in flight on blue when it is drained.
    let slow_url = blue.url("/slow");
    let slow = tokio::spawn(async move { get_with(&slow_url, &[("host", SHOP)]).await });
    origin.wait_hits("/slow", 1).await;

    // The switch: new connections go to green; blue is drained (kept-alive clients are told
    // to reconnect, which takes them to green).
    load.switch(green.addr);
    let (status, _, body) = admin_call(
        Method::POST,
        &blue.admin_url("/admin/drain"),
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body:?}");
    let (status, v) = admin_get(&blue.admin_url("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["status"], "draining", "{v}");

    let (status, _, body) = bounded("slow request on blue", slow).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "slow done");

    // Every client ends up on green, through blue's drain delay and past it.
    let tasks = 4;
    let green_addr = green.addr;
    load.wait_for("every client on green", |s| {
        (0..tasks).all(|t| s.task_ok_on(t, green_addr) >= 20)
    })
    .await;
    bounded("blue drained", async {
        loop {
            let (_, v) = admin_get_auth(&blue.admin_url("/admin/status")).await;
            if v["phase"] == "drained" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let after_drained = load.stats.ok_on(green_addr);
    load.wait_for("traffic on green after blue's drain delay", |s| {
        s.ok_on(green_addr) >= after_drained + 100
    })
    .await;
    let (status, _) = admin_get(&green.admin_url("/readyz")).await;
    assert_eq!(status, StatusCode::OK);

    let stats = load.stop().await;
    eprintln!("load: {}", stats.summary());
    assert_no_failure(&stats);
    assert_eq!(
        stats.connect_errors.load(Ordering::Relaxed),
        0,
        "{}",
        stats.summary()
    );
    assert!(stats.ok_on(blue.addr) > 0 && stats.ok_on(green_addr) > 0);
    assert_eq!(
        warm_origin_hits(&origin),
        warm_hits,
        "the warm set never reached the origin again"
    );

    // Both stop cleanly.
    blue.sigterm();
    green.sigterm();
    let blue_exit = blue.wait_exit(EXIT_WAIT).await;
    let green_exit = green.wait_exit(EXIT_WAIT).await;
    assert_eq!(blue_exit.code(), Some(0), "blue: {blue_exit}");
    assert_eq!(green_exit.code(), Some(0), "green: {green_exit}");
}

// ---------------------------------------------------------------------------------------------
// k8s/bluegreen.sh switch against two real Seawalls and the recording kubectl stand-in
// ---------------------------------------------------------------------------------------------

/// What a run of `k8s/bluegreen.sh switch` did.
struct SwitchRun {
    code: Option<i32>,
    stderr: String,
    /// The kubectl calls, one per line.
    calls: String,
}

/// Runs `bluegreen.sh switch` with blue live and green idle: real curl against the two
/// processes' listeners, kubectl replaced by `k8s/test/stubs/kubectl` (it records every call
/// and answers the live/preview selectors and blue's ready replicas and pods).
async fn bluegreen_switch(blue: &SeawallProcess, green: &SeawallProcess) -> SwitchRun {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = admin_support::TempDir::new();
    let bin = dir.0.join("bin");
    let state = dir.0.join("state");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    std::fs::copy(root.join("k8s/test/stubs/kubectl"), bin.join("kubectl")).unwrap();
    let ns = "bg";
    std::fs::write(
        state.join("kubectl.rules"),
        format!(
            "-n {ns} get service seawall -o jsonpath={{.spec.selector.slot}}|0|blue\n\
             -n {ns} get service seawall-preview -o jsonpath={{.spec.selector.slot}}|0|green\n\
             -n {ns} get deployment/seawall-blue -o jsonpath={{.status.readyReplicas}}|0|1\n\
             -n {ns} get pods -l app=seawall,slot=blue *|0|seawall-blue-1=False\\n\n"
        ),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg(root.join("k8s/bluegreen.sh"))
        .arg("switch")
        .env("PATH", path)
        .env("STUB_DIR", &state)
        .env("NAMESPACE", ns)
        .env("SEAWALL_ADMIN_TOKEN", TOKEN)
        .env("ADMIN_URL_BLUE", format!("http://{}", blue.admin_addr))
        .env("ADMIN_URL_GREEN", format!("http://{}", green.admin_addr))
        .env("PREVIEW_URL", format!("http://{}", green.addr))
        .env("SMOKE_PATH", "/smoke")
        .env("READY_TIMEOUT", "10")
        .env("WATCH_SECONDS", "3")
        .env("POLL_SECONDS", "0")
        .env("BAD_CHECKS", "2")
        .env_remove("MIN_CACHEABLE_REQUESTS")
        .env_remove("MIN_HIT_RATIO")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .expect("bluegreen.sh switch finished within 90s")
        .unwrap();
    SwitchRun {
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        calls: std::fs::read_to_string(state.join("calls.log")).unwrap_or_default(),
    }
}

/// A patch of `service` to `slot`, as the script sends it.
fn patched(service: &str, slot: &str) -> String {
    format!(
        "kubectl -n bg patch service {service} --type=merge -p {{\"spec\":{{\"selector\":{{\"app\":\"seawall\",\"slot\":\"{slot}\"}}}}}}"
    )
}

/// Blue serving `origin`, and green warming from blue's admin listener as the shipped
/// k8s configs do, in front of `green_origin`.
async fn two_slots(
    origin: &MockOrigin,
    green_origin: &MockOrigin,
) -> (SeawallProcess, SeawallProcess) {
    let env = |slot: &'static str| [("SEAWALL_ADMIN_TOKEN", TOKEN), ("SEAWALL_SLOT", slot)];
    let blue = SeawallProcess::start(
        "blue",
        DRAIN,
        &upstream_config(&origin.url(), ""),
        &env("blue"),
    )
    .await;
    wait_status(&blue.admin_url("/readyz"), StatusCode::OK, "blue ready").await;
    let green_cfg = format!(
        "[warmup]\nfrom = \"http://{}\"\ntop = 1000\ntimeout = \"30s\"\n\n{}",
        blue.admin_addr,
        upstream_config(&green_origin.url(), "")
    );
    let green = SeawallProcess::start("green", DRAIN, &green_cfg, &env("green")).await;
    wait_status(&green.admin_url("/readyz"), StatusCode::OK, "green ready").await;
    (blue, green)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bluegreen_switch_promotes_a_cold_but_healthy_slot() {
    let mut origin = MockOrigin::new().route("/smoke", uncacheable("ok"));
    for i in 0..60 {
        origin = origin.route(&format!("/c{i}"), cacheable(&format!("c{i}")));
    }
    let origin = origin.start().await;
    let (blue, green) = two_slots(&origin, &origin).await;
    // Green is cold (blue had nothing to export): its first cacheable requests all miss.
    for i in 0..60 {
        let (status, headers, body) = get_with(&green.url(&format!("/c{i}")), &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(header_str(&headers, "x-cache"), "MISS");
        assert_eq!(body, format!("c{i}"));
    }

    let run = bluegreen_switch(&blue, &green).await;
    assert_eq!(
        run.code,
        Some(0),
        "promoted:\n{}\n{}",
        run.stderr,
        run.calls
    );
    assert!(
        run.stderr.contains("switch complete: green is live"),
        "{}",
        run.stderr
    );
    assert!(
        run.calls.contains(&patched("seawall", "green")),
        "{}",
        run.calls
    );
    assert!(
        !run.calls.contains(&patched("seawall", "blue")),
        "{}",
        run.calls
    );
    // The real slots: blue drained, green ready and serving.
    let (status, v) = admin_get(&blue.admin_url("/readyz")).await;
    assert_eq!(
        (status, v["status"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("draining")),
        "{v}"
    );
    let (status, _) = admin_get(&green.admin_url("/readyz")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bluegreen_switch_rolls_back_a_slot_serving_5xx() {
    let origin = MockOrigin::new()
        .route("/smoke", uncacheable("ok"))
        .start()
        .await;
    // Green's origin passes the smoke test and fails everything else.
    let mut broken = MockOrigin::new().route("/smoke", uncacheable("ok"));
    for i in 0..40 {
        broken = broken.route(&format!("/api{i}"), MockResponse::with_status(500));
    }
    let broken = broken.start().await;
    let (blue, green) = two_slots(&origin, &broken).await;
    for i in 0..40 {
        let (status, _, _) = get_with(&green.url(&format!("/api{i}")), &[]).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    }

    let run = bluegreen_switch(&blue, &green).await;
    assert_eq!(
        run.code,
        Some(4),
        "rolled back:\n{}\n{}",
        run.stderr,
        run.calls
    );
    assert!(
        run.stderr
            .contains("seawall-green is unhealthy: rolling back to blue"),
        "{}",
        run.stderr
    );
    let to_green = run
        .calls
        .find(&patched("seawall", "green"))
        .expect("switched first");
    let to_blue = run
        .calls
        .find(&patched("seawall", "blue"))
        .expect("switched back");
    assert!(to_green < to_blue, "{}", run.calls);
    // Blue was drained by the switch: its unready pod is replaced.
    assert!(
        run.calls
            .contains("kubectl -n bg delete pod seawall-blue-1 --wait=false"),
        "{}",
        run.calls
    );
}
