//! Admin API authentication seen from outside: never open by default (a generated token in a
//! private file that `seawall warm` reads), probes stay open, a non-loopback admin listener
//! without a token is refused, two `Authorization` fields are refused, and the read-only role
//! may look but never change anything.
#![allow(clippy::unwrap_used)]

#[path = "support.rs"]
mod support;

#[path = "admin/support.rs"]
mod admin_support;

#[path = "deploy/harness.rs"]
mod harness;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use admin_support::{TempDir, admin_call, json_of, key_for, wait_stored};
use bytes::Bytes;
use harness::SeawallProcess;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::Full;
use support::*;

const FULL: &str = "full-token-for-the-role-tests";
const READ: &str = "read-only-token-for-the-role-tests";

fn cacheable(body: &str) -> MockResponse {
    MockResponse::ok(body.to_string()).header("cache-control", "max-age=300")
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Asserts what a process started without any token offers: the admin API refuses callers
/// without the generated token, accepts the one in `token_file`, and the probes stay open.
async fn assert_generated_token_guards(p: &SeawallProcess, token_file: &Path) {
    let token = std::fs::read_to_string(token_file)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", token_file.display(), p.log_text()));
    let token = token.trim();
    assert!(token.len() >= 32, "a long random token: {token:?}");
    assert_eq!(mode(token_file), 0o600, "token file mode");
    assert_eq!(mode(token_file.parent().unwrap()), 0o700, "token dir mode");

    let status_url = p.admin_url("/admin/status");
    let (status, _, _) = admin_call(Method::GET, &status_url, None, "").await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "no token configured is not open"
    );
    let (status, _, _) =
        admin_call(Method::POST, &p.admin_url("/admin/cache/disable"), None, "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, body) = admin_call(Method::GET, &status_url, Some(token), "").await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json_of(&body)["components"]["cache"], "ok", "still enabled");
    for probe in ["/healthz", "/readyz", "/metrics"] {
        let (status, _, _) = get(&p.admin_url(probe)).await;
        assert_eq!(status, StatusCode::OK, "{probe} stays open");
    }
    let log = p.log_text();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(token)).collect();
    assert_eq!(lines.len(), 1, "logged exactly once: {log}");
    assert!(lines[0].contains("WARN"), "at WARN: {}", lines[0]);
}

#[tokio::test]
async fn without_a_token_one_is_generated_into_the_runtime_dir_and_warm_reads_it() {
    let origin = MockOrigin::new()
        .route("/w", cacheable("warmed"))
        .start()
        .await;
    let runtime = TempDir::new();
    std::fs::set_permissions(&runtime.0, std::fs::Permissions::from_mode(0o700)).unwrap();
    let xdg = runtime.0.to_str().unwrap();
    let p = SeawallProcess::start(
        "gen",
        "",
        &upstream_config(&origin.url(), ""),
        &[("XDG_RUNTIME_DIR", xdg)],
    )
    .await;
    let token_file = runtime.0.join("seawall").join("admin-token");
    assert_generated_token_guards(&p, &token_file).await;

    // `seawall warm` without --token finds the file the running instance wrote.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_seawall"))
        .args(["warm", "--admin", &format!("http://{}", p.admin_addr)])
        .args(["--url", "/w"])
        .env_remove("SEAWALL_ADMIN_TOKEN")
        .env("XDG_RUNTIME_DIR", xdg)
        .output();
    let out = bounded("seawall warm", out).await.unwrap();
    assert!(
        out.status.success(),
        "warm failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        origin.hits("/w"),
        1,
        "the warm-up fetched through the cache"
    );
    let (status, headers, body) = get(&p.url("/w")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "warmed");
    assert!(cache_status(&headers).contains("hit"), "{headers:?}");
    assert_eq!(origin.hits("/w"), 1);
}

#[tokio::test]
async fn without_a_runtime_dir_the_token_goes_to_a_private_temp_dir() {
    let origin = MockOrigin::new().start().await;
    let tmp = TempDir::new();
    let p = SeawallProcess::start(
        "tmp",
        "",
        &upstream_config(&origin.url(), ""),
        &[("XDG_RUNTIME_DIR", ""), ("TMPDIR", tmp.0.to_str().unwrap())],
    )
    .await;
    let dirs: Vec<_> = std::fs::read_dir(&tmp.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("seawall-"))
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let uid = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m));
    if let Ok(uid) = uid {
        assert_eq!(dirs[0], format!("seawall-{uid}"));
    }
    assert_generated_token_guards(&p, &tmp.0.join(&dirs[0]).join("admin-token")).await;
}

#[tokio::test]
async fn a_non_loopback_admin_listener_without_a_token_is_refused_by_run_and_check() {
    let dir = TempDir::new();
    let cfg = dir.0.join("proxy.toml");
    let (data, admin) = harness::free_ports();
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:{data}\"\nadmin_listen = \"0.0.0.0:{admin}\"\n\n{}",
            upstream_config("http://127.0.0.1:9", "")
        ),
    )
    .unwrap();
    for cmd in ["check", "run"] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_seawall"))
            .arg(cmd)
            .arg("--config")
            .arg(&cfg)
            .env_remove("SEAWALL_ADMIN_TOKEN")
            .env_remove("SEAWALL_ADMIN_READ_TOKEN")
            .env("XDG_RUNTIME_DIR", dir.0.to_str().unwrap())
            .kill_on_drop(true)
            .output();
        let out = bounded(cmd, out).await.unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cmd} accepted it: {err}");
        assert!(err.contains("admin token"), "{cmd}: {err}");
        assert!(err.contains("admin_listen"), "{cmd}: {err}");
    }
    assert!(
        !dir.0.join("seawall").exists(),
        "no token is generated for a refused config"
    );
}

#[tokio::test]
async fn two_authorization_fields_get_400_and_change_nothing() {
    let origin = MockOrigin::new().route("/a", cacheable("a")).start().await;
    let proxy =
        TestProxy::with_config_and_token(&upstream_config(&origin.url(), ""), Some(FULL)).await;
    get(&proxy.url("/a")).await;
    wait_stored(
        proxy.running(),
        &key_for(&proxy.addr.to_string(), "/a"),
        &HeaderMap::new(),
    )
    .await;
    for (first, second) in [
        (format!("Bearer {FULL}"), "Bearer wrong".to_string()),
        ("Bearer wrong".to_string(), format!("Bearer {FULL}")),
        (format!("Bearer {FULL}"), format!("Bearer {FULL}")),
    ] {
        for (method, path, body) in [
            (Method::GET, "/admin/status", ""),
            (
                Method::POST,
                "/admin/cache/clear",
                r#"{"confirm":"CLEAR-ALL"}"#,
            ),
        ] {
            let req = Request::builder()
                .method(method.clone())
                .uri(proxy.admin_url(path))
                .header("authorization", first.as_str())
                .header("authorization", second.as_str())
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap();
            let (status, _, body) = request(req).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {path}");
            assert!(json_of(&body)["error"].is_string());
        }
    }
    let (status, headers, _) = get(&proxy.url("/a")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(cache_status(&headers).contains("hit"), "{headers:?}");
    assert_eq!(origin.hits("/a"), 1, "the refused clear removed nothing");
}

#[tokio::test]
async fn tokens_of_any_length_are_compared_without_opening_anything() {
    let origin = MockOrigin::new().start().await;
    let proxy =
        TestProxy::with_config_and_token(&upstream_config(&origin.url(), ""), Some(FULL)).await;
    let url = proxy.admin_url("/admin/status");
    let longer = format!("{FULL}x");
    let prefix = &FULL[..FULL.len() - 1];
    let long = "x".repeat(4096);
    for wrong in ["", "x", prefix, longer.as_str(), long.as_str()] {
        let (status, _, _) = admin_call(Method::GET, &url, Some(wrong), "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{} bytes", wrong.len());
    }
    let (status, _, _) = admin_call(Method::GET, &url, Some(FULL), "").await;
    assert_eq!(status, StatusCode::OK);
}

/// A Seawall with the full token and a read-only token from `[admin] read_token_file`.
async fn with_roles(origin: &MockOrigin, dir: &TempDir) -> TestProxy {
    let read_file = dir.0.join("read-token");
    std::fs::write(&read_file, format!("{READ}\n")).unwrap();
    let cfg = format!(
        "[admin]\nread_token_file = {:?}\n\n{}",
        read_file.to_str().unwrap(),
        upstream_config(&origin.url(), "")
    );
    TestProxy::with_config_and_token(&cfg, Some(FULL)).await
}

#[tokio::test]
async fn the_read_token_may_look_at_everything_but_change_and_export_nothing() {
    let origin = MockOrigin::new().route("/a", cacheable("a")).start().await;
    let dir = TempDir::new();
    let proxy = with_roles(&origin, &dir).await;
    let key = key_for(&proxy.addr.to_string(), "/a");
    get(&proxy.url("/a")).await;
    wait_stored(proxy.running(), &key, &HeaderMap::new()).await;

    for path in [
        "/admin/status".to_string(),
        "/admin/cache/stats".to_string(),
        "/admin/cache/entries?top=5".to_string(),
        format!("/admin/cache/entry?url={}", proxy.url("/a")),
        "/admin/breakers".to_string(),
        "/admin/config".to_string(),
    ] {
        let (status, _, body) =
            admin_call(Method::GET, &proxy.admin_url(&path), Some(READ), "").await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{path}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let export = proxy.admin_url("/admin/cache/export");
    let (status, _, body) = admin_call(Method::GET, &export, Some(READ), "").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "export returns bodies");
    assert!(!String::from_utf8_lossy(&body).contains("\"a\""));
    let (status, _, _) = admin_call(Method::GET, &export, Some(FULL), "").await;
    assert_eq!(status, StatusCode::OK);

    for (path, body) in [
        ("/admin/cache/purge", r#"{"url":"/a"}"#),
        ("/admin/cache/clear", r#"{"confirm":"CLEAR-ALL"}"#),
        ("/admin/cache/disable", ""),
        ("/admin/breakers/origin/open", ""),
        ("/admin/drain", ""),
    ] {
        let url = proxy.admin_url(path);
        let (status, _, _) = admin_call(Method::POST, &url, Some(READ), body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path} with the read token");
        let (status, _, _) = admin_call(Method::POST, &url, None, body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} without a token");
        let (status, _, _) = admin_call(Method::POST, &url, Some("wrong"), body).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{path} with a wrong token"
        );
    }
    // The victim's view: still cached, still enabled, breaker closed, still ready.
    let (status, headers, body) = get(&proxy.url("/a")).await;
    assert_eq!((status, body), (StatusCode::OK, Bytes::from_static(b"a")));
    assert!(cache_status(&headers).contains("hit"), "{headers:?}");
    assert_eq!(origin.hits("/a"), 1);
    let (status, _) = admin_support::admin_get(&proxy.admin_url("/readyz")).await;
    assert_eq!(status, StatusCode::OK);
    let (_, _, body) = admin_call(
        Method::GET,
        &proxy.admin_url("/admin/breakers"),
        Some(READ),
        "",
    )
    .await;
    assert_eq!(json_of(&body)["breakers"][0]["state"], "closed");

    let purge = proxy.admin_url("/admin/cache/purge");
    let (status, _, _) = admin_call(Method::POST, &purge, Some(FULL), r#"{"url":"/a"}"#).await;
    assert_eq!(status, StatusCode::OK, "the full token may");
    get(&proxy.url("/a")).await;
    assert_eq!(origin.hits("/a"), 2);
}

#[tokio::test]
async fn the_read_token_from_the_environment_is_honoured() {
    let origin = MockOrigin::new().route("/a", cacheable("a")).start().await;
    let p = SeawallProcess::start(
        "roles",
        "",
        &upstream_config(&origin.url(), ""),
        &[
            ("SEAWALL_ADMIN_TOKEN", FULL),
            ("SEAWALL_ADMIN_READ_TOKEN", READ),
        ],
    )
    .await;
    let (status, _, _) =
        admin_call(Method::GET, &p.admin_url("/admin/status"), Some(READ), "").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = admin_call(
        Method::POST,
        &p.admin_url("/admin/cache/disable"),
        Some(READ),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    bounded("a hit after the refused disable", async {
        while !cache_status(&get(&p.url("/a")).await.1).contains("hit") {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(origin.hits("/a"), 1, "still caching");
}

#[tokio::test]
async fn check_and_run_refuse_token_files_they_cannot_read() {
    let dir = TempDir::new();
    let empty = dir.0.join("empty-token");
    std::fs::write(&empty, "\n").unwrap();
    let missing = dir.0.join("missing-token");
    for (key, path) in [
        ("read_token_file", &missing),
        ("purge_token_file", &missing),
        ("read_token_file", &empty),
        ("purge_token_file", &empty),
    ] {
        let cfg = dir.0.join("proxy.toml");
        std::fs::write(
            &cfg,
            format!(
                "[admin]\n{key} = {:?}\n\n{}",
                path.to_str().unwrap(),
                upstream_config("http://127.0.0.1:9", "")
            ),
        )
        .unwrap();
        for cmd in ["check", "run"] {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_seawall"))
                .arg(cmd)
                .arg("--config")
                .arg(&cfg)
                .env("SEAWALL_ADMIN_TOKEN", FULL)
                .env_remove("SEAWALL_ADMIN_READ_TOKEN")
                .env("SEAWALL_SERVER_LISTEN", "127.0.0.1:0")
                .env("SEAWALL_SERVER_ADMIN_LISTEN", "127.0.0.1:0")
                .kill_on_drop(true)
                .output();
            let out = bounded(cmd, out).await.unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{cmd} accepted {key}: {err}");
            assert!(err.contains(&format!("admin.{key}")), "{cmd}: {err}");
        }
    }
}
