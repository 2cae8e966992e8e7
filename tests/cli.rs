//! The binary and its lifecycle from outside: `--version` with the build's commit (also in
//! `seawall_build_info`), shell completions and the man page, `--config` only where it is read,
//! `POST /admin/drain` undone by `POST /admin/drain/cancel`, one name per shared-tier state,
//! and `scripts/check-docs` failing on a documented admin path that does not exist.
#![allow(clippy::unwrap_used)]

#[path = "support.rs"]
mod support;

#[path = "admin/support.rs"]
mod admin_support;

#[path = "deploy/harness.rs"]
mod harness;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use admin_support::*;
use http::StatusCode;
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_seawall");

/// Runs the binary; one that does not exit within 20 s (a server that should have refused to
/// start) is killed and fails the test.
fn seawall(args: &[&str]) -> Output {
    let child = Command::new(BIN)
        .args(args)
        .env_remove("SEAWALL_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(20)) {
        Ok(o) => o.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("seawall {args:?} still running after 20 s");
        }
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The commit that `--version` names: `seawall 0.1.0 (commit abc123…)`.
fn version_commit() -> String {
    let o = seawall(&["--version"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let (_, rest) = out
        .split_once("(commit ")
        .unwrap_or_else(|| panic!("no commit in --version: {out:?}"));
    rest.split(')').next().unwrap().to_string()
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let out = stdout(&seawall(&["--version"]));
    assert!(
        out.starts_with(&format!("seawall {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{out:?}"
    );
    let commit = version_commit();
    assert!(!commit.is_empty(), "{out:?}");
    // Built from a git checkout (as the tests are): the hash, not the fallback.
    let in_git = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .is_ok_and(|o| o.status.success());
    if in_git {
        let hash = commit.trim_end_matches("-dirty");
        assert!(
            hash.len() >= 7 && hash.chars().all(|c| c.is_ascii_hexdigit()),
            "{commit:?}"
        );
    }
}

#[tokio::test]
async fn build_info_metric_carries_the_commit() {
    let commit = version_commit();
    let slot = std::env::var("SEAWALL_SLOT").unwrap_or_else(|_| "none".into());
    let origin = MockOrigin::new().start().await;
    let proxy = TestProxy::start(&origin.url()).await;
    let text = scrape(&proxy.admin_url("/metrics")).await;
    let samples = parse_exposition(&text);
    assert_eq!(
        must(
            &samples,
            "seawall_build_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("commit", &commit),
                ("slot", &slot)
            ]
        ),
        1.0,
        "{text}"
    );
}

#[test]
fn completions_cover_every_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let o = seawall(&["completions", shell]);
        assert!(o.status.success(), "{shell}: {}", stderr(&o));
        let out = stdout(&o);
        for sub in ["run", "check", "demo", "warm", "completions", "man"] {
            assert!(out.contains(sub), "{shell} completions lack {sub}:\n{out}");
        }
        assert!(out.contains("admin-listen"), "{shell}:\n{out}");
    }
    let o = seawall(&["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(stderr(&o).contains("invalid value"), "{}", stderr(&o));
}

#[test]
fn man_page_is_roff_with_every_subcommand() {
    let o = seawall(&["man"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with(".ie") || out.contains(".TH seawall"),
        "{out}"
    );
    assert!(out.contains(".TH seawall 1"), "{out}");
    for sub in ["run", "check", "demo", "warm", "completions"] {
        assert!(
            out.contains(&format!("seawall\\-{sub}")) || out.contains(&format!("\n{sub}")),
            "man page lacks {sub}:\n{out}"
        );
    }
    assert!(out.contains("SEAWALL_CONFIG"), "{out}");
}

#[test]
fn config_is_refused_where_it_is_not_read() {
    for args in [
        &["demo", "--config", "proxy.toml"][..],
        &["warm", "--config", "proxy.toml", "--url", "/a"][..],
        &["--config", "proxy.toml", "man"][..],
    ] {
        let o = seawall(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stdout(&o));
        let err = stderr(&o);
        assert!(
            err.contains("unexpected argument '--config'")
                || err.contains("cannot be used with '--config"),
            "{args:?}: {err}"
        );
    }
    // Where it is read, it still works (the file does not exist: an error naming it).
    let o = seawall(&["check", "--config", "/nonexistent/seawall.toml"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        stderr(&o).contains("/nonexistent/seawall.toml"),
        "{}",
        stderr(&o)
    );
    for sub in ["demo", "warm", "completions", "man"] {
        let help = stdout(&seawall(&[sub, "--help"]));
        assert!(
            !help.contains("--config"),
            "{sub} --help offers --config:\n{help}"
        );
    }
    for sub in ["run", "check"] {
        let help = stdout(&seawall(&[sub, "--help"]));
        assert!(help.contains("--config"), "{sub} --help:\n{help}");
    }
}

#[tokio::test]
async fn drain_cancel_makes_the_instance_ready_again() {
    let origin = MockOrigin::new()
        .route(
            "/x",
            MockResponse::ok("x").header("cache-control", "no-store"),
        )
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    let (status, _) = admin_get(&proxy.admin_url("/readyz")).await;
    assert_eq!(status, StatusCode::OK);

    let (status, _) = admin_post(&proxy.admin_url("/admin/drain"), "").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, v) = admin_get(&proxy.admin_url("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    // Wait past the drain delay: the drained phase is undone too.
    poll_json(&proxy.admin_url("/admin/status"), "drained", |v| {
        v["phase"] == "drained"
    })
    .await;
    let (status, _, body) = get(&proxy.url("/x")).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"x"[..]));

    let (status, v) = admin_post(&proxy.admin_url("/admin/drain/cancel"), "").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["draining"], false, "{v}");
    assert_eq!(v["cancelled"], "drained", "{v}");
    let (status, v) = admin_get(&proxy.admin_url("/readyz")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "ready", "{v}");
    // Traffic is served as before: keep-alive again, no `Connection: close`.
    for _ in 0..2 {
        let (status, headers, body) = get(&proxy.url("/x")).await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"x"[..]));
        assert!(!headers.contains_key("connection"), "{headers:?}");
    }
    assert_eq!(origin.hits("/x"), 3);
    // The cancelled drain's delay timer does not drain again later.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let (_, st) = admin_get(&proxy.admin_url("/admin/status")).await;
    assert_eq!(st["phase"], "serving", "{st}");

    // Nothing to cancel: said so, still ready.
    let (status, v) = admin_post(&proxy.admin_url("/admin/drain/cancel"), "").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["cancelled"], serde_json::Value::Null, "{v}");
    let (status, _) = admin_get(&proxy.admin_url("/readyz")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn drain_cancel_cannot_undo_a_shutdown() {
    let origin = MockOrigin::new().start().await;
    let proxy = TestProxy::with_config(&format!(
        "[server]\ndrain_delay = \"2s\"\n\n{}",
        upstream_config(&origin.url(), "")
    ))
    .await;
    proxy.shutdown();
    let (status, v) = admin_post(&proxy.admin_url("/admin/drain/cancel"), "").await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("shutting down"),
        "{v}"
    );
    let (status, v) = admin_get(&proxy.admin_url("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(proxy.wait().await);
}

#[tokio::test]
async fn shared_tier_has_one_name_per_state() {
    let origin = MockOrigin::new().start().await;
    let proxy = TestProxy::start(&origin.url()).await;
    let (_, ready) = admin_get(&proxy.admin_url("/readyz")).await;
    let (_, status) = admin_get(&proxy.admin_url("/admin/status")).await;
    assert_eq!(ready["shared_tier"], "disabled", "{ready}");
    assert_eq!(
        status["components"]["shared_tier"], ready["shared_tier"],
        "{status}"
    );
}

/// A README whose only example calls an admin path that does not exist.
#[test]
fn docs_check_fails_on_a_nonexistent_admin_path() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempdir("docs-check");
    let readme = dir.join("README.md");
    let good = dir.join("GOOD.md");
    std::fs::write(
        &readme,
        "# x\n\n```sh\ncurl -s $A/healthz\ncurl -s -H \"$T\" -XPOST $A/admin/purge -d '{}'\n```\n",
    )
    .unwrap();
    std::fs::write(
        &good,
        "```sh\ncurl -s -H \"$T\" \"$A/admin/status?pretty\"\n\
         curl -s http://example.com/cacheable\n\
         curl -s $A/admin/nowhere   # needs: second instance\n```\n\
         ```toml\ncurl = \"not a command\"\n```\n",
    )
    .unwrap();
    let run = |file: &Path| {
        Command::new(root.join("scripts/check-docs"))
            .arg(file)
            .env("SEAWALL_BIN", BIN)
            .output()
            .unwrap()
    };
    let o = run(&readme);
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains(&format!("{}:5", readme.display())) && out.contains("404"),
        "{out}"
    );
    assert!(
        out.contains(&format!("PASS: {}:4:", readme.display())),
        "the healthz line passes: {out}"
    );

    let o = run(&good);
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert!(o.status.success(), "{out}");
    assert!(out.contains("1 skipped"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("seawall-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A free loopback port (bound, then released for the child to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the demo child when the test ends, whatever happens.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn demo_banner_claims_hold() {
    use std::io::BufRead;
    let (data, admin, origin) = (free_port(), free_port(), free_port());
    let mut child = Child(
        Command::new(BIN)
            .args(["demo", "--latency", "10ms"])
            .args(["--listen", &format!("127.0.0.1:{data}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .args(["--origin", &format!("127.0.0.1:{origin}")])
            .env("SEAWALL_ADMIN_TOKEN", "banner-token")
            .env_remove("SEAWALL_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let out = child.0.stdout.take().unwrap();
    let banner = bounded(
        "demo banner",
        tokio::task::spawn_blocking(move || {
            let mut text = String::new();
            for line in std::io::BufReader::new(out).lines() {
                let line = line.unwrap();
                text.push_str(&line);
                text.push('\n');
                if line.contains("/admin/breakers/") {
                    break;
                }
            }
            text
        }),
    )
    .await
    .unwrap();
    assert!(banner.contains("upstream \"app\""), "{banner}");
    assert!(banner.contains("/admin/breakers/app/open"), "{banner}");
    assert!(
        banner.contains("'http://"),
        "URLs with ? are quoted: {banner}"
    );
    assert!(banner.contains("Bearer $SEAWALL_ADMIN_TOKEN"), "{banner}");
    let url = |p: &str| format!("http://127.0.0.1:{data}{p}");
    // The banner comes before the listeners are bound.
    bounded("demo admin listener", async {
        while tokio::net::TcpStream::connect(("127.0.0.1", admin))
            .await
            .is_err()
        {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    poll_json(&format!("http://127.0.0.1:{admin}/readyz"), "ready", |v| {
        v["ready"] == true
    })
    .await;

    // /cacheable: MISS (stored), then HIT with Age.
    let (_, h, _) = get(&url("/cacheable")).await;
    assert_eq!(header_str(&h, "x-cache"), "MISS", "{h:?}");
    assert!(cache_status(&h).contains("stored"), "{h:?}");
    let (_, h, _) = get(&url("/cacheable")).await;
    assert_eq!(header_str(&h, "x-cache"), "HIT", "{h:?}");
    assert!(h.contains_key("age"), "{h:?}");
    // /uncacheable: MISS every time, detail=no-store.
    for _ in 0..2 {
        let (_, h, _) = get(&url("/uncacheable")).await;
        assert_eq!(header_str(&h, "x-cache"), "MISS", "{h:?}");
        assert!(cache_status(&h).contains("detail=no-store"), "{h:?}");
    }
    // The breaker of upstream `app` forced open: /uncacheable gets 503 circuit-open.
    let (status, _, body) = admin_call(
        http::Method::POST,
        &format!("http://127.0.0.1:{admin}/admin/breakers/app/open"),
        Some("banner-token"),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let (status, h, _) = get(&url("/uncacheable")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(cache_status(&h).contains("detail=circuit-open"), "{h:?}");
}

/// The real binary: an admin drain is logged like SIGTERM's, and so is its cancel.
#[tokio::test]
async fn admin_drain_and_cancel_are_logged() {
    let origin = MockOrigin::new().start().await;
    let mut p = harness::SeawallProcess::start(
        "drain-log",
        "drain_delay = \"300ms\"\ngrace_period = \"2s\"",
        &upstream_config(&origin.url(), ""),
        &[("SEAWALL_ADMIN_TOKEN", "log-token"), ("NO_COLOR", "1")],
    )
    .await;
    let post = |path: &str| p.admin_url(path);
    let (status, _, _) = admin_call(
        http::Method::POST,
        &post("/admin/drain"),
        Some("log-token"),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    harness::wait_status(
        &p.admin_url("/readyz"),
        StatusCode::SERVICE_UNAVAILABLE,
        "not ready",
    )
    .await;
    let (status, _, body) = admin_call(
        http::Method::POST,
        &post("/admin/drain/cancel"),
        Some("log-token"),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    harness::wait_status(&p.admin_url("/readyz"), StatusCode::OK, "ready again").await;
    p.sigterm();
    assert!(
        p.wait_exit(std::time::Duration::from_secs(20))
            .await
            .success()
    );
    let log = p.log_text();
    let admin = log
        .lines()
        .find(|l| l.contains("Draining: not ready, still serving.") && l.contains("admin"))
        .unwrap_or_else(|| panic!("no admin drain line:\n{log}"));
    assert!(admin.contains("drain_delay"), "{admin}");
    assert!(log.contains("Drain cancelled: ready again."), "{log}");
    // SIGTERM's drain: the same line, from the signal.
    assert!(
        log.lines()
            .any(|l| l.contains("Draining: not ready, still serving.") && l.contains("signal")),
        "{log}"
    );
}
