//! What an operator does on a first rollout and a first incident, against real processes:
//! reloads that keep runtime overrides and report restart keys against the running values,
//! `seawall check` refusing what `run` refuses, running from `SEAWALL_UPSTREAM` alone, and a
//! warm-up from an unreachable or empty peer that ends at once with a warning.
#![allow(clippy::unwrap_used)]

#[path = "support.rs"]
mod support;

#[path = "admin/support.rs"]
mod admin_support;

#[path = "deploy/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use admin_support::{FileProxy, TempDir, admin_call, admin_get, admin_post, json_of};
use harness::{SeawallProcess, free_ports, wait_status};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use support::{MockOrigin, MockResponse, bounded, closed_port, get, send, upstream_config};
use tokio::time::Instant;

const TOKEN: &str = "operate-test-token";

fn cacheable(body: &str) -> MockResponse {
    MockResponse::ok(body.to_string()).header("cache-control", "max-age=300")
}

/// Admin call with the token; status and JSON.
async fn admin(p: &SeawallProcess, method: Method, path: &str) -> (StatusCode, Value) {
    let (status, _, body) = admin_call(method, &p.admin_url(path), Some(TOKEN), "").await;
    (status, json_of(&body))
}

/// Replaces `old` with `new` in the process's config file.
fn rewrite(p: &SeawallProcess, old: &str, new: &str) {
    let text = std::fs::read_to_string(&p.config).unwrap();
    assert!(text.contains(old), "{old:?} not in {text}");
    std::fs::write(&p.config, text.replace(old, new)).unwrap();
}

/// Waits (bounded) until a line of the child's log holds every one of `needles` (the log is
/// written by a background thread, so it trails the admin API's answers).
async fn wait_log_line(p: &SeawallProcess, needles: &[&str]) {
    bounded(&format!("{} logs {needles:?}", p.name), async {
        while !p
            .log_text()
            .lines()
            .any(|l| needles.iter().all(|n| l.contains(n)))
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

fn sorted(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

// ---------------------------------------------------------------------------------------------
// Item 2: a reload keeps what the operator did at runtime
// ---------------------------------------------------------------------------------------------

/// Two upstreams on one origin: `a` serves `/a/…`, `b` serves `/b/…`.
fn two_upstreams(origin: &str, a_breaker: &str, cache: &str) -> String {
    format!(
        "{cache}\n[[upstreams]]\nname = \"b\"\nendpoints = [{origin:?}]\n\n\
         [[upstreams]]\nname = \"a\"\nendpoints = [{origin:?}]\n{a_breaker}\n\n\
         [[routes]]\nupstream = \"a\"\npath_prefix = \"/a\"\n\n\
         [[routes]]\nupstream = \"b\"\npath_prefix = \"/b\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_operator_overrides_until_the_file_changes_their_key() {
    let origin = MockOrigin::new()
        .route("/a/x", cacheable("ax"))
        .route("/b/x", cacheable("bx"))
        .route("/b/y", cacheable("by"))
        .start()
        .await;
    let first = two_upstreams(&origin.url(), "", "");
    let env = [("SEAWALL_ADMIN_TOKEN", TOKEN)];
    let p = SeawallProcess::start("overrides", "", &first, &env).await;
    wait_status(&p.admin_url("/readyz"), StatusCode::OK, "ready").await;

    // The operator turns the cache off and forces a's breaker open.
    let (status, v) = admin(&p, Method::POST, "/admin/cache/disable").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = admin(&p, Method::POST, "/admin/breakers/a/open").await;
    assert_eq!(status, StatusCode::OK, "{v}");

    // A reload of the unchanged file keeps both, says so, and logs each.
    let (status, v) = admin(&p, Method::POST, "/admin/reload").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        sorted(&v["overrides_kept"]),
        ["breakers.a", "cache.enabled"],
        "{v}"
    );
    assert_eq!(v["overrides_reset"], json!([]), "{v}");
    for key in ["cache.enabled", "breakers.a"] {
        wait_log_line(&p, &["WARN", "Reload keeps an operator override", key]).await;
    }
    // Still forced open: nothing reaches the origin for /a.
    let (status, _, _) = get(&p.url("/a/x")).await;
    assert!(status.is_server_error(), "{status}");
    assert_eq!(origin.hits("/a/x"), 0);
    // Still a plain proxy: every request for /b/x reaches the origin.
    for _ in 0..2 {
        let (status, _, body) = get(&p.url("/b/x")).await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"bx"[..]));
    }
    assert_eq!(origin.hits("/b/x"), 2);
    let (_, stats) = admin(&p, Method::GET, "/admin/cache/stats").await;
    assert_eq!(stats["enabled"], false, "{stats}");

    // The file changes both keys: the overrides end and the file's values apply.
    rewrite(
        &p,
        &first,
        &two_upstreams(
            &origin.url(),
            "[upstreams.breaker]\nopen_duration = \"10s\"",
            "[cache]\nenabled = false\n",
        ),
    );
    let (status, v) = admin(&p, Method::POST, "/admin/reload").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["overrides_kept"], json!([]), "{v}");
    assert_eq!(
        sorted(&v["overrides_reset"]),
        ["breakers.a", "cache.enabled"],
        "{v}"
    );
    for key in ["cache.enabled", "breakers.a"] {
        wait_log_line(&p, &["WARN", "Reload ends an operator override", key]).await;
    }
    let (status, _, body) = get(&p.url("/a/x")).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"ax"[..]));
    assert_eq!(origin.hits("/a/x"), 1);
    let (_, v) = admin(&p, Method::GET, "/admin/breakers").await;
    let a = v["breakers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["upstream"] == "a")
        .unwrap();
    assert_eq!(
        (a["state"].as_str(), a["forced"].as_bool()),
        (Some("closed"), Some(false)),
        "{v}"
    );

    // The file turns the cache back on: no override lingers, the cache stores again.
    rewrite(
        &p,
        "[cache]\nenabled = false\n",
        "[cache]\nenabled = true\n",
    );
    let (status, v) = admin(&p, Method::POST, "/admin/reload").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        (v["overrides_kept"].clone(), v["overrides_reset"].clone()),
        (json!([]), json!([])),
        "{v}"
    );
    for _ in 0..3 {
        let (status, _, body) = get(&p.url("/b/y")).await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"by"[..]));
    }
    assert_eq!(
        origin.hits("/b/y"),
        1,
        "cached again after the file enabled it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_breaker_is_not_restored_by_a_reload() {
    let origin = MockOrigin::new()
        .route("/a/x", cacheable("ax"))
        .start()
        .await;
    let src = two_upstreams(&origin.url(), "", "");
    let proxy = FileProxy::start(&src).await;
    let (status, v) = admin_post(&proxy.admin_url("/admin/breakers/a/open"), "").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = admin_post(&proxy.admin_url("/admin/breakers/a/reset"), "").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = admin_post(&proxy.admin_url("/admin/reload"), "").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        (v["overrides_kept"].clone(), v["overrides_reset"].clone()),
        (json!([]), json!([])),
        "{v}"
    );
    let (status, _, body) = get(&proxy.url("/a/x")).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"ax"[..]));
    assert_eq!(origin.hits("/a/x"), 1);
}

// ---------------------------------------------------------------------------------------------
// Item 3: reload and /admin/config tell the truth
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keys_are_compared_with_the_running_values() {
    let origin = MockOrigin::new().route("/r", cacheable("r")).start().await;
    let body = upstream_config(&origin.url(), "");
    let small = format!("[cache]\nmax_size = \"64MiB\"\n\n{body}");
    let large = format!("[cache]\nmax_size = \"128MiB\"\n\n{body}");
    let proxy = FileProxy::start(&small).await;
    let (status, before) = admin_get(&proxy.admin_url("/admin/config")).await;
    assert_eq!(status, StatusCode::OK, "{before}");
    let running = before["config"]["cache"]["max_size"].clone();
    assert!(running.is_string(), "{before}");
    assert_eq!(before["pending_restart"], json!({}), "{before}");

    // The file asks for a bigger cache: reported, not applied, and shown as pending.
    proxy.write(&large);
    let (status, v) = admin_post(&proxy.admin_url("/admin/reload"), "").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["needs_restart"], json!(["cache.max_size"]), "{v}");
    let (_, cfg) = admin_get(&proxy.admin_url("/admin/config")).await;
    assert_eq!(
        cfg["config"]["cache"]["max_size"], running,
        "the running value: {cfg}"
    );
    let pending = &cfg["pending_restart"]["cache.max_size"];
    assert!(pending.is_string() && *pending != running, "{cfg}");

    // Reloaded again, unchanged: the restart is still needed (the running value is the old one).
    let (status, v) = admin_post(&proxy.admin_url("/admin/reload"), "").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["needs_restart"], json!(["cache.max_size"]), "{v}");

    // Back to the running value: nothing waits for a restart any more.
    proxy.write(&small);
    let (status, v) = admin_post(&proxy.admin_url("/admin/reload"), "").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["needs_restart"], json!([]), "{v}");
    let (_, cfg) = admin_get(&proxy.admin_url("/admin/config")).await;
    assert_eq!(cfg["pending_restart"], json!({}), "{cfg}");
    assert_eq!(cfg["config"]["cache"]["max_size"], running, "{cfg}");
}

// ---------------------------------------------------------------------------------------------
// The binary: check, run, and the environment
// ---------------------------------------------------------------------------------------------

/// What a finished child said.
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the binary with `args` in `cwd`, a clean `SEAWALL_*` environment plus `env` and
/// `RUST_BACKTRACE=1`; killed (code `None`) if still running after `limit`.
async fn run_bin(args: &[&str], env: &[(&str, &str)], cwd: &Path, limit: Duration) -> Outcome {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_seawall"));
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, _) in std::env::vars() {
        if k.starts_with("SEAWALL_") || k == "RUST_LOG" || k.starts_with("OTEL_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUST_BACKTRACE", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(out) => {
            let out = out.unwrap();
            Outcome {
                code: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        }
        Err(_) => Outcome {
            code: None,
            stdout: String::new(),
            stderr: format!("still running after {limit:?}"),
        },
    }
}

const QUICK: Duration = Duration::from_secs(20);

fn assert_clean_refusal(what: &str, o: &Outcome) {
    assert_eq!(o.code, Some(2), "{what}: exit code; stderr:\n{}", o.stderr);
    assert!(o.stderr.starts_with("error: "), "{what}: {}", o.stderr);
    assert!(
        !o.stderr.to_lowercase().contains("backtrace"),
        "{what}: a backtrace:\n{}",
        o.stderr
    );
}

/// The first `error: …` line.
fn error_line(o: &Outcome) -> String {
    o.stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line in {}", o.stderr))
        .to_string()
}

fn write_file(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let p = dir.0.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refuses_what_run_refuses_in_the_same_words() {
    let dir = TempDir::new();
    let empty = write_file(&dir, "empty-token", "  \n");
    let missing = dir.0.join("no-such-token");
    let upstream = upstream_config("http://127.0.0.1:9", "");
    let cases = [
        (
            "admin off loopback without a token",
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"0.0.0.0:0\"\n".to_string(),
            "is not a loopback address and no admin token is set",
        ),
        (
            "missing token_file",
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n[admin]\ntoken_file = {:?}\n",
                missing.display().to_string()
            ),
            "cannot read admin.token_file",
        ),
        (
            "empty token_file",
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n[admin]\ntoken_file = {:?}\n",
                empty.display().to_string()
            ),
            "is empty",
        ),
    ];
    for (i, (what, server, words)) in cases.iter().enumerate() {
        let file = write_file(
            &dir,
            &format!("c{i}.toml"),
            &format!("{server}\n{upstream}"),
        );
        let file = file.to_str().unwrap();
        let check = run_bin(&["check", "--config", file], &[], &dir.0, QUICK).await;
        assert_clean_refusal(&format!("check: {what}"), &check);
        let run = run_bin(&["run", "--config", file], &[], &dir.0, QUICK).await;
        assert_clean_refusal(&format!("run: {what}"), &run);
        assert!(
            error_line(&check).contains(words),
            "{what}: {}",
            check.stderr
        );
        assert_eq!(
            error_line(&check),
            error_line(&run),
            "{what}: the same words"
        );
    }
    // The same file with a token is fine for both.
    let file = write_file(&dir, "ok.toml", &format!("{}\n{upstream}", cases[0].1));
    let ok = run_bin(
        &["check", "--config", file.to_str().unwrap()],
        &[("SEAWALL_ADMIN_TOKEN", TOKEN)],
        &dir.0,
        QUICK,
    )
    .await;
    assert_eq!(ok.code, Some(0), "{}", ok.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_knows_the_upstream_and_read_token_variables() {
    let dir = TempDir::new();
    let file = write_file(&dir, "p.toml", &upstream_config("http://127.0.0.1:9", ""));
    let o = run_bin(
        &["check", "--config", file.to_str().unwrap()],
        &[
            ("SEAWALL_UPSTREAM", "http://127.0.0.1:10"),
            ("SEAWALL_ADMIN_READ_TOKEN", "reader"),
        ],
        &dir.0,
        QUICK,
    )
    .await;
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(
        !o.stderr.contains("unknown environment variable"),
        "{}",
        o.stderr
    );
    assert!(
        o.stdout.contains("ok (1 upstreams, 1 routes)"),
        "{}",
        o.stdout
    );
}

// ---------------------------------------------------------------------------------------------
// Item 5: the image runs from environment variables alone
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_variable_replaces_the_endpoints_of_the_only_upstream() {
    let origin = MockOrigin::new()
        .route("/e", cacheable("from env"))
        .start()
        .await;
    let dead = format!("http://{}", closed_port().await);
    let env = [
        ("SEAWALL_ADMIN_TOKEN", TOKEN),
        ("SEAWALL_UPSTREAM", &*origin.url()),
    ];
    let p = SeawallProcess::start("env", "", &upstream_config(&dead, ""), &env).await;
    wait_status(&p.admin_url("/readyz"), StatusCode::OK, "ready").await;
    for _ in 0..2 {
        let (status, _, body) = get(&p.url("/e")).await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"from env"[..]));
    }
    assert_eq!(origin.hits("/e"), 1, "stored after the first");
    let (_, cfg) = admin(&p, Method::GET, "/admin/config").await;
    assert_eq!(
        cfg["config"]["upstreams"][0]["endpoints"],
        json!([origin.url()]),
        "{cfg}"
    );
    assert!(
        !p.log_text().contains("unknown environment variable"),
        "{}",
        p.log_text()
    );
}

/// A child started without `--config`, in `cwd`; killed on drop.
struct Bare {
    child: tokio::process::Child,
    data: String,
    admin: String,
    log: PathBuf,
}

impl Bare {
    async fn start(cwd: &Path, env: &[(&str, &str)]) -> Self {
        let (data, admin) = free_ports();
        let log = cwd.join("seawall.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_seawall"));
        cmd.current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .kill_on_drop(true);
        for (k, _) in std::env::vars() {
            if k.starts_with("SEAWALL_") || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        cmd.env("SEAWALL_SERVER_LISTEN", format!("127.0.0.1:{data}"))
            .env("SEAWALL_SERVER_ADMIN_LISTEN", format!("127.0.0.1:{admin}"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self {
            child: cmd.spawn().unwrap(),
            data: format!("http://127.0.0.1:{data}"),
            admin: format!("http://127.0.0.1:{admin}"),
            log,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_config_file_the_upstream_variable_is_enough() {
    let mut origin = MockOrigin::new();
    for p in ["/", "/any/path", "/other"] {
        origin = origin.route(p, cacheable(&format!("origin {p}")));
    }
    let origin = origin.start().await;
    let dir = TempDir::new();
    let env = [
        ("SEAWALL_UPSTREAM", &*origin.url()),
        ("SEAWALL_ADMIN_TOKEN", TOKEN),
    ];
    let mut p = Bare::start(&dir.0, &env).await;
    let log = p.log.clone();
    bounded("ready without a config file", async {
        loop {
            if let Some(status) = p.child.try_wait().unwrap() {
                panic!(
                    "exited {status}: {}",
                    std::fs::read_to_string(&log).unwrap()
                );
            }
            let req = http::Request::get(format!("{}/readyz", p.admin))
                .body(http_body_util::Full::default())
                .unwrap();
            if send(req).await.is_ok_and(|r| r.status() == StatusCode::OK) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // A catch-all route to upstream `default`, cached by the origin's headers.
    for path in ["/", "/any/path", "/other"] {
        for _ in 0..2 {
            let (status, _, body) = get(&format!("{}{path}", p.data)).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(body, format!("origin {path}"));
        }
        assert_eq!(origin.hits(path), 1, "{path}");
    }
    let (status, _, body) = admin_call(
        Method::GET,
        &format!("{}/admin/config", p.admin),
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let v = json_of(&body);
    assert_eq!(v["config"]["upstreams"][0]["name"], "default", "{v}");
    assert_eq!(
        v["config"]["upstreams"][0]["endpoints"],
        json!([origin.url()]),
        "{v}"
    );
    let _ = p.child.start_kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_file_or_the_variable_it_says_how_to_start() {
    let dir = TempDir::new();
    for args in [&[][..], &["run"][..], &["check"][..]] {
        let o = run_bin(args, &[], &dir.0, QUICK).await;
        assert_clean_refusal(&format!("{args:?}"), &o);
        for hint in ["seawall demo", "--config", "SEAWALL_UPSTREAM"] {
            assert!(
                o.stderr.contains(hint),
                "{args:?}: no {hint:?} in {}",
                o.stderr
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_config_file_that_is_missing_is_still_an_error() {
    let dir = TempDir::new();
    let env = [("SEAWALL_UPSTREAM", "http://127.0.0.1:9")];
    let o = run_bin(&["run", "--config", "missing.toml"], &env, &dir.0, QUICK).await;
    assert_clean_refusal("--config", &o);
    assert!(
        o.stderr.contains("missing.toml") && o.stderr.contains("cannot read"),
        "{}",
        o.stderr
    );
    let env = [
        ("SEAWALL_UPSTREAM", "http://127.0.0.1:9"),
        ("SEAWALL_CONFIG", "gone.toml"),
    ];
    let o = run_bin(&["run"], &env, &dir.0, QUICK).await;
    assert_clean_refusal("SEAWALL_CONFIG", &o);
    assert!(
        o.stderr.contains("gone.toml") && o.stderr.contains("cannot read"),
        "{}",
        o.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_upstream_variable_is_named_never_a_line_of_the_file() {
    let dir = TempDir::new();
    let two = format!(
        "{}\n[[upstreams]]\nname = \"second\"\nendpoints = [\"http://127.0.0.1:9\"]\n",
        upstream_config("http://127.0.0.1:9", "")
    );
    let one = upstream_config("http://127.0.0.1:9", "");
    let cases = [
        (two.as_str(), "http://app:3000", "2 upstreams"),
        (one.as_str(), "ftp://app:3000", "must be http://host:port"),
        (one.as_str(), "http://app:3000/path", "with no path"),
        (one.as_str(), " , ", "one or more URLs"),
    ];
    for (i, (src, value, words)) in cases.iter().enumerate() {
        let name = format!("u{i}.toml");
        let file = write_file(&dir, &name, src);
        let o = run_bin(
            &["check", "--config", file.to_str().unwrap()],
            &[("SEAWALL_UPSTREAM", value)],
            &dir.0,
            QUICK,
        )
        .await;
        assert_clean_refusal(value, &o);
        let line = error_line(&o);
        assert!(
            line.contains("SEAWALL_UPSTREAM") && line.contains(words),
            "{value:?}: {line}"
        );
        assert!(!line.contains(&name), "{value:?} names the file: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_config_needs_only_the_token_and_the_upstream_variable() {
    let baked = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/proxy.container.toml");
    let baked = baked.to_str().unwrap();
    let dir = TempDir::new();
    let o = run_bin(
        &["check", "--config", baked],
        &[
            ("SEAWALL_ADMIN_TOKEN", TOKEN),
            ("SEAWALL_UPSTREAM", "http://host:3000"),
        ],
        &dir.0,
        QUICK,
    )
    .await;
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(
        o.stdout.contains("ok (1 upstreams, 1 routes)"),
        "{}",
        o.stdout
    );
    // No placeholder origin: without the variable it says what is missing.
    let o = run_bin(
        &["check", "--config", baked],
        &[("SEAWALL_ADMIN_TOKEN", TOKEN)],
        &dir.0,
        QUICK,
    )
    .await;
    assert_clean_refusal("no SEAWALL_UPSTREAM", &o);
    assert!(error_line(&o).contains("SEAWALL_UPSTREAM"), "{}", o.stderr);
    // And the image refuses to start without the token, in check's words.
    let o = run_bin(
        &["check", "--config", baked],
        &[("SEAWALL_UPSTREAM", "http://host:3000")],
        &dir.0,
        QUICK,
    )
    .await;
    assert_clean_refusal("no token", &o);
    assert!(error_line(&o).contains("no admin token"), "{}", o.stderr);
}

// ---------------------------------------------------------------------------------------------
// Item 1: warm-up from a peer that has nothing to give
// ---------------------------------------------------------------------------------------------

/// Starts a slot warming from `from`; how long it took to report ready, and its log.
async fn warm_from(name: &str, from: &str) -> (Duration, SeawallProcess) {
    let origin_cfg = upstream_config("http://127.0.0.1:9", "");
    let cfg = format!("[warmup]\nfrom = {from:?}\ntop = 100\ntimeout = \"60s\"\n\n{origin_cfg}");
    let started = Instant::now();
    let p = SeawallProcess::start(name, "", &cfg, &[("SEAWALL_ADMIN_TOKEN", TOKEN)]).await;
    wait_status(&p.admin_url("/readyz"), StatusCode::OK, "ready").await;
    (started.elapsed(), p)
}

async fn assert_warned_cold(p: &SeawallProcess) {
    wait_log_line(p, &["WARN", "the peer exported 0 entries; starting cold"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_up_from_an_unreachable_or_empty_peer_ends_at_once_with_a_warning() {
    // Nothing listens.
    let closed = format!("http://{}", closed_port().await);
    let (took, p) = warm_from("unreachable", &closed).await;
    assert!(took < Duration::from_secs(6), "ready after {took:?}");
    assert_warned_cold(&p).await;

    // A peer that accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let (took, p) = warm_from("silent", &silent_url).await;
    assert!(took < Duration::from_secs(8), "ready after {took:?}");
    assert_warned_cold(&p).await;
    hold.abort();

    // A live peer with an empty cache.
    let peer = SeawallProcess::start(
        "peer",
        "",
        &upstream_config("http://127.0.0.1:9", ""),
        &[("SEAWALL_ADMIN_TOKEN", TOKEN)],
    )
    .await;
    let (took, p) = warm_from("empty", &format!("http://{}", peer.admin_addr)).await;
    assert!(took < Duration::from_secs(6), "ready after {took:?}");
    assert_warned_cold(&p).await;
    let (status, job) = admin(&p, Method::GET, "/admin/cache/warm/1").await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert_eq!(
        (job["state"].as_str(), job["imported"].as_u64()),
        (Some("done"), Some(0)),
        "{job}"
    );
}
