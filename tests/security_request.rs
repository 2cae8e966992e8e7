//! Requests that try to decide what other clients get: a Host that moves a path, forwarding
//! headers a client made up, ignored query parameters that cloak others, `CONNECT`. Each test
//! sends the attacker's requests first, then checks what an innocent client receives and what
//! reached the origin.
#![allow(clippy::unwrap_used)]

#[path = "support.rs"]
mod support;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use support::*;

/// An origin route whose body names the request's path and query, fresh for a minute.
fn echo_target(parts: &http::request::Parts, _: &Bytes) -> MockResponse {
    MockResponse::ok(format!("{}", parts.uri)).header("cache-control", "max-age=60")
}

/// Status line and headers of a raw reply, lower-cased for matching.
fn head_of(reply: &str) -> String {
    reply
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

#[tokio::test]
async fn invalid_host_is_refused_and_cannot_move_a_path() {
    let origin = MockOrigin::new()
        .route("/t", echo_target)
        .route("/a/t", echo_target)
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    let addr = proxy.addr.to_string();

    // Host values that are not `uri-host [":" port]` (RFC 9110 §7.2, RFC 3986 §3.2.2).
    let bad: Vec<Vec<u8>> = vec![
        format!("{addr}/a").into_bytes(),
        format!("{addr}?a").into_bytes(),
        format!("{addr}#a").into_bytes(),
        format!("x@{addr}").into_bytes(),
        format!("{addr} /a").into_bytes(),
        format!("{addr}\t/a").into_bytes(),
        format!("{addr}\\a").into_bytes(),
        format!("{addr}:80").into_bytes(),
        b"[::1".to_vec(),
        b"[::1]x".to_vec(),
        b"a:b".to_vec(),
        b"".to_vec(),
        b"caf\xc3\xa9.example".to_vec(),
    ];
    for host in &bad {
        let mut req = b"GET /t HTTP/1.1\r\nHost: ".to_vec();
        req.extend_from_slice(host);
        req.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
        let reply = raw_exchange(proxy.addr, &req).await;
        let head = head_of(&reply);
        let shown = String::from_utf8_lossy(host);
        assert!(head.starts_with("http/1.1 400"), "{shown:?}: {reply}");
        assert!(head.contains("detail=invalid-host"), "{shown:?}: {reply}");
    }
    // Absolute-form with userinfo, Host agreeing with it.
    let req =
        format!("GET http://x@{addr}/t HTTP/1.1\r\nHost: x@{addr}\r\nConnection: close\r\n\r\n");
    let reply = raw_exchange(proxy.addr, req.as_bytes()).await;
    assert!(head_of(&reply).starts_with("http/1.1 400"), "{reply}");
    assert!(head_of(&reply).contains("detail=invalid-host"), "{reply}");
    // HTTP/2 with a Host field that would move the path.
    let req = Request::get(proxy.url("/t"))
        .header("host", format!("{addr}/a"))
        .body(Full::default())
        .unwrap();
    let (status, h, _) = h2_request(req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(cache_status(&h).contains("detail=invalid-host"), "{h:?}");

    // HTTP/2 with userinfo in `:authority`.
    let req = Request::get(format!("http://x@{addr}/t"))
        .body(Full::default())
        .unwrap();
    let (status, h, _) = h2_request(req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(cache_status(&h).contains("detail=invalid-host"), "{h:?}");

    // The victim asks for /a/t and gets /a/t; the attacker's /t never reached the origin.
    let (status, _, body) = get(&proxy.url("/a/t")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "/a/t");
    let (status, _, body) = h2_get(&proxy.url("/a/t")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "/a/t");
    assert_eq!(origin.hits("/t"), 0);
    assert_eq!(origin.hits("/a/t"), 1);
}

#[tokio::test]
async fn valid_hosts_are_served_and_keyed_apart() {
    let origin = MockOrigin::new().route("/t", echo_target).start().await;
    let proxy = TestProxy::start(&origin.url()).await;
    for host in [
        "[::1]",
        "[::1]:8080",
        "[v1.fe80::a+en1]",
        "shop.example",
        "SHOP.example:8080",
        "a%2Fb.example",
        "127.0.0.1",
        "xn--caf-dma.example",
        "a_b-c~d!$&'()*+,;=e",
    ] {
        let req = format!("GET /t HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let reply = raw_exchange(proxy.addr, req.as_bytes()).await;
        assert!(
            head_of(&reply).starts_with("http/1.1 200"),
            "{host}: {reply}"
        );
        assert!(reply.ends_with("/t"), "{host}: {reply}");
    }
    // Hosts are compared without case: this one is the stored `shop.example` entry.
    let req = b"GET /t HTTP/1.1\r\nHost: Shop.Example\r\nConnection: close\r\n\r\n";
    let reply = raw_exchange(proxy.addr, req).await;
    assert!(
        head_of(&reply).contains("cache-status: seawall; hit"),
        "{reply}"
    );
}

#[tokio::test]
async fn cache_host_without_host_is_refused_by_check_and_run() {
    let dir = std::env::temp_dir().join(format!("seawall-sec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("proxy.toml");
    let src = "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n\
               [[upstreams]]\nname = \"o\"\nendpoints = [\"http://127.0.0.1:1\"]\n\n\
               [[routes]]\nupstream = \"o\"\ncache_host = \"shop.internal\"\n";
    std::fs::write(&path, src).unwrap();
    let want = format!("{}:11: key `routes[0].cache_host`", path.display());
    for (cmd, code) in [("check", 2), ("run", 2)] {
        let out = bounded(
            "seawall subcommand",
            tokio::process::Command::new(env!("CARGO_BIN_EXE_seawall"))
                .args([cmd, "--config", path.to_str().unwrap()])
                .env_remove("SEAWALL_CONFIG")
                .kill_on_drop(true)
                .output(),
        )
        .await
        .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{cmd}: {err}");
        assert!(err.contains(&want), "{cmd}: {err}");
        assert!(err.contains("host"), "{cmd}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An origin route whose body shows the forwarding fields it received, fresh for a minute.
fn echo_forwarding(parts: &http::request::Parts, _: &Bytes) -> MockResponse {
    let mut out = String::new();
    for name in [
        "forwarded",
        "x-forwarded-prefix",
        "x-forwarded-ssl",
        "front-end-https",
        "x-url-scheme",
        "x-forwarded-path",
        "x-original-host",
        "x-original-url",
        "x-tenant-override",
    ] {
        for v in parts.headers.get_all(name) {
            out.push_str(&format!("{name}: {}\n", v.to_str().unwrap()));
        }
    }
    MockResponse::ok(out).header("cache-control", "max-age=60")
}

#[tokio::test]
async fn forged_forwarding_fields_never_reach_the_origin_or_the_victim() {
    let origin = MockOrigin::new()
        .route("/page", echo_forwarding)
        .start()
        .await;
    let cfg = format!(
        "[cache]\nunkeyed_request_headers = [\"X-Tenant-Override\"]\n\n{}",
        upstream_config(&origin.url(), "")
    );
    let proxy = TestProxy::with_config(&cfg).await;
    let addr = proxy.addr.to_string();

    let req = Request::get(proxy.url("/page"))
        .header("forwarded", "for=6.6.6.6;host=evil.example;proto=https")
        .header("forwarded", "for=7.7.7.7")
        .header("x-forwarded-prefix", "/evil")
        .header("x-forwarded-ssl", "on")
        .header("front-end-https", "on")
        .header("x-url-scheme", "https")
        .header("x-forwarded-path", "/evil")
        .header("x-original-host", "evil.example")
        .header("x-original-url", "/evil")
        .header("x-tenant-override", "evil")
        .body(Full::default())
        .unwrap();
    let (status, _, attacker_body) = request(req).await;
    assert_eq!(status, StatusCode::OK);
    let clean = format!("forwarded: for=127.0.0.1;host=\"{addr}\";proto=http\n");
    assert_eq!(attacker_body, clean);

    let (status, h, body) = get(&proxy.url("/page")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(cache_status(&h).contains("hit"), "{h:?}");
    assert_eq!(body, clean, "the victim gets the clean page");

    let seen = origin.requests("/page");
    assert_eq!(seen.len(), 1);
    let h = &seen[0];
    assert_eq!(h.get_all("forwarded").iter().count(), 1, "{h:?}");
    assert_eq!(header_str(h, "x-forwarded-for"), "127.0.0.1");
    for gone in [
        "x-forwarded-prefix",
        "x-forwarded-ssl",
        "front-end-https",
        "x-url-scheme",
        "x-forwarded-path",
        "x-original-host",
        "x-original-url",
        "x-tenant-override",
    ] {
        assert!(!h.contains_key(gone), "{gone} reached the origin: {h:?}");
    }
}

#[tokio::test]
async fn x_forwarded_prefix_is_removed_even_when_nothing_is_shared() {
    let origin = MockOrigin::new()
        .route(
            "/np",
            MockResponse::ok("np").header("cache-control", "no-store"),
        )
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    let req = Request::post(proxy.url("/np"))
        .header("x-forwarded-prefix", "/evil")
        .header("forwarded", "for=6.6.6.6")
        .body(Full::new(Bytes::from_static(b"x")))
        .unwrap();
    let (status, _, _) = request(req).await;
    assert_eq!(status, StatusCode::OK);
    let seen = origin.requests("/np");
    assert_eq!(seen.len(), 1);
    assert!(!seen[0].contains_key("x-forwarded-prefix"), "{:?}", seen[0]);
    let fwd = header_str(&seen[0], "forwarded");
    assert!(fwd.starts_with("for=127.0.0.1;host="), "{fwd}");
    assert!(!fwd.contains("6.6.6.6"), "{fwd}");
}

#[tokio::test]
async fn forwarded_is_appended_to_only_for_trusted_peers() {
    let origin = MockOrigin::new()
        .route("/f", MockResponse::ok("f"))
        .start()
        .await;
    let cfg = format!(
        "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n\n{}",
        upstream_config(&origin.url(), "")
    );
    let proxy = TestProxy::with_config(&cfg).await;
    let req = Request::get(proxy.url("/f"))
        .header("host", "shop.example")
        .header("forwarded", "for=192.0.2.7;proto=https")
        .header("forwarded", "for=\"[2001:db8::1]\"")
        .body(Full::default())
        .unwrap();
    let (status, _, _) = request(req).await;
    assert_eq!(status, StatusCode::OK);
    let seen = origin.requests("/f");
    assert_eq!(seen.len(), 1);
    assert_eq!(
        header_str(&seen[0], "forwarded"),
        "for=192.0.2.7;proto=https, for=\"[2001:db8::1]\", \
         for=127.0.0.1;host=shop.example;proto=http"
    );
}

#[tokio::test]
async fn ignored_query_parameters_cannot_cloak_others() {
    let origin = MockOrigin::new().route("/q", echo_target).start().await;
    let cfg = format!(
        "{}ignore_query_params = [\"utm_source\"]\n",
        upstream_config(&origin.url(), "")
    );
    let proxy = TestProxy::with_config(&cfg).await;

    let cloaked = [
        "/q?id=1&utm_source=x;id=2",
        "/q?id=1&utm_source=x%26id%3D2",
        "/q?id=1&utm_source=x%3bid=2",
        "/q?utm_source=a%3Did;id=2&id=1",
        "/q?id=1&utm_source=x%3Did",
    ];
    for (i, target) in cloaked.iter().enumerate() {
        for round in 0..2 {
            let (status, h, body) = get(&proxy.url(target)).await;
            assert_eq!(status, StatusCode::OK, "{target}");
            assert_eq!(body, *target, "{target}: forwarded unchanged");
            let cs = cache_status(&h);
            assert!(
                cs.contains("fwd=bypass; detail=ambiguous-query"),
                "{target} round {round}: {cs}"
            );
        }
        assert_eq!(
            origin.hits("/q"),
            2 * (i as u64 + 1),
            "{target} is never stored"
        );
    }

    // The victim's clean request is not answered with any attacker's response.
    let (status, h, body) = get(&proxy.url("/q?id=1")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "/q?id=1");
    assert!(!cache_status(&h).contains("hit"), "{h:?}");
    // A plain ignored parameter still shares the victim's entry.
    let (status, h, body) = get(&proxy.url("/q?id=1&utm_source=newsletter")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "/q?id=1");
    assert!(cache_status(&h).contains("hit"), "{h:?}");
    let seen: Vec<String> = origin
        .received("/q")
        .iter()
        .map(|r| r.uri.to_string())
        .collect();
    for target in cloaked {
        assert_eq!(seen.iter().filter(|s| *s == target).count(), 2, "{seen:?}");
    }
}

#[tokio::test]
async fn connect_is_not_implemented_and_never_tunnelled() {
    let origin = MockOrigin::new()
        .route("/", MockResponse::ok("root"))
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    let target = origin.addr().to_string();

    let req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    let reply = raw_exchange(proxy.addr, req.as_bytes()).await;
    assert!(head_of(&reply).starts_with("http/1.1 501"), "{reply}");
    assert!(
        head_of(&reply).contains("detail=not-implemented"),
        "{reply}"
    );
    assert!(!reply.contains("root"), "tunnelled: {reply}");

    let req = Request::builder()
        .method(Method::CONNECT)
        .uri(proxy.addr.to_string())
        .body(Full::default())
        .unwrap();
    let res = h2_send(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_IMPLEMENTED);
    assert!(
        cache_status(res.headers()).contains("detail=not-implemented"),
        "{res:?}"
    );

    assert_eq!(origin.total_hits(), 0, "the origin never sees CONNECT");
    // A normal request still goes through.
    let (status, _, body) = get(&proxy.url("/")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "root");
}

#[tokio::test]
async fn a_cloaked_query_is_never_collapsed_with_the_victims_request() {
    let origin = MockOrigin::new()
        .route("/slow", |parts: &http::request::Parts, _: &Bytes| {
            echo_target(parts, &Bytes::new()).delay(300)
        })
        .start()
        .await;
    let cfg = format!(
        "{}ignore_query_params = [\"utm_source\"]\n",
        upstream_config(&origin.url(), "")
    );
    let proxy = TestProxy::with_config(&cfg).await;

    // The attacker's request goes first; the victims' arrive while it is in flight.
    let url = proxy.url("/slow?id=1&utm_source=x;id=2");
    let attacker = tokio::spawn(async move { get(&url).await });
    origin.wait_hits("/slow", 1).await;
    let victims: Vec<_> = (0..3)
        .map(|_| {
            let url = proxy.url("/slow?id=1");
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    let (_, h, body) = attacker.await.unwrap();
    assert_eq!(body, "/slow?id=1&utm_source=x;id=2");
    assert!(cache_status(&h).contains("detail=ambiguous-query"), "{h:?}");
    for v in victims {
        let (status, _, body) = v.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "/slow?id=1", "a victim got the attacker's answer");
    }
    assert_eq!(
        origin.hits("/slow"),
        2,
        "one pass, one fetch for the victims"
    );
}
