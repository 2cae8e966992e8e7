//! Purging seen from outside: `PURGE` on the proxy listener (allowed peers or the purge token
//! only, that Host's key with every variant, soft on request, never forwarded), the
//! confirmation a purge of everything needs, and `GET /admin/cache/entry` by path.
#![allow(clippy::unwrap_used)]

#[path = "support.rs"]
mod support;

#[path = "admin/support.rs"]
mod admin_support;

use admin_support::{TempDir, admin_get, admin_post, get_with, is_stored, json_of, key_for, prime};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::Full;
use support::*;

const PURGE_TOKEN: &str = "the-purge-token-not-the-admin-one";

fn cacheable(body: &str) -> MockResponse {
    MockResponse::ok(body.to_string()).header("cache-control", "max-age=300")
}

fn by_language(parts: &http::request::Parts, _: &Bytes) -> MockResponse {
    let l = parts
        .headers
        .get("accept-language")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_string();
    MockResponse::ok(format!("lang={l}"))
        .header("cache-control", "max-age=300")
        .header("vary", "Accept-Language")
}

fn lang(l: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("accept-language", l.parse().unwrap());
    h
}

/// Two aliases of one site sharing keys through `cache_host`, and a catch-all route.
fn site_config(origin: &str, admin: &str) -> String {
    format!(
        "{admin}\n\n[[upstreams]]\nname = \"origin\"\nendpoints = [{origin:?}]\n\n\
         [[routes]]\nupstream = \"origin\"\nhost = \"shop.example\"\ncache_host = \"shop.internal\"\n\n\
         [[routes]]\nupstream = \"origin\"\nhost = \"www.shop.example\"\ncache_host = \"shop.internal\"\n\n\
         [[routes]]\nupstream = \"origin\"\n"
    )
}

/// Sends `PURGE path` to the proxy with `headers`.
async fn purge(proxy: &TestProxy, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut b = Request::builder()
        .method(Method::from_bytes(b"PURGE").unwrap())
        .uri(proxy.url(path));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    request(b.body(Full::default()).unwrap()).await
}

fn purges_received(origin: &MockOrigin, path: &str) -> usize {
    origin
        .received(path)
        .iter()
        .filter(|r| r.method.as_str() == "PURGE")
        .count()
}

/// Primes `/v` in two languages under the shared site key and under `other.example`.
async fn prime_site(proxy: &TestProxy) -> (String, String) {
    let run = proxy.running();
    let site = "http://shop.internal/v".to_string();
    let other = key_for("other.example", "/v");
    for l in ["en", "de"] {
        prime(
            run,
            &proxy.url("/v"),
            &site,
            &[("host", "www.shop.example"), ("accept-language", l)],
        )
        .await;
    }
    prime(
        run,
        &proxy.url("/v"),
        &other,
        &[("host", "other.example"), ("accept-language", "en")],
    )
    .await;
    (site, other)
}

#[tokio::test]
async fn purge_from_an_allowed_peer_removes_that_hosts_key_with_every_variant() {
    let origin = MockOrigin::new().route("/v", by_language).start().await;
    let proxy = TestProxy::with_config(&site_config(
        &origin.url(),
        "[admin]\npurge_allow = [\"127.0.0.1/32\"]",
    ))
    .await;
    let (site, other) = prime_site(&proxy).await;
    assert_eq!(origin.hits("/v"), 3);

    // The alias is purged through the canonical host.
    let (status, headers, body) = purge(&proxy, "/v", &[("host", "shop.example")]).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert!(header_str(&headers, "content-type").starts_with("application/json"));
    let v = json_of(&body);
    assert_eq!(v["purged"], 2, "{v}");
    assert_eq!(v["keys"], 1, "{v}");
    assert_eq!(v["key"], site, "{v}");
    assert_eq!(v["soft"], false, "{v}");
    assert!(!is_stored(proxy.running(), &site, &lang("en")));
    assert!(!is_stored(proxy.running(), &site, &lang("de")));
    assert!(
        is_stored(proxy.running(), &other, &lang("en")),
        "other hosts keep theirs"
    );

    let (_, headers, body) = get_with(
        &proxy.url("/v"),
        &[("host", "www.shop.example"), ("accept-language", "de")],
    )
    .await;
    assert_eq!(body, "lang=de");
    assert!(!cache_status(&headers).contains("hit"), "{headers:?}");
    let (_, headers, _) = get_with(
        &proxy.url("/v"),
        &[("host", "other.example"), ("accept-language", "en")],
    )
    .await;
    assert!(cache_status(&headers).contains("hit"), "{headers:?}");
    assert_eq!(origin.hits("/v"), 4);
    assert_eq!(purges_received(&origin, "/v"), 0, "never forwarded");
    let metrics = admin_support::scrape(&proxy.admin_url("/metrics")).await;
    let samples = admin_support::parse_exposition(&metrics);
    assert_eq!(
        admin_support::sample(&samples, "seawall_purges_total", &[("kind", "http")]),
        Some(1.0)
    );

    // Nothing stored: still 200, nothing purged, still not forwarded.
    let (status, _, body) = purge(&proxy, "/nothing", &[("host", "shop.example")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_of(&body)["purged"], 0);
    assert_eq!(origin.total_hits(), 4);
}

#[tokio::test]
async fn anyone_else_gets_403_and_invalidates_nothing() {
    let origin = MockOrigin::new().route("/v", by_language).start().await;
    let dir = TempDir::new();
    let token_file = dir.0.join("purge-token");
    std::fs::write(&token_file, format!("{PURGE_TOKEN}\n")).unwrap();
    // The allowed range does not hold the test's peer (127.0.0.1), only its forwarded address.
    let admin = format!(
        "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n\n\
         [admin]\npurge_allow = [\"10.0.0.0/8\"]\npurge_token_file = {:?}",
        token_file.to_str().unwrap()
    );
    let proxy = TestProxy::with_config(&site_config(&origin.url(), &admin)).await;
    let (site, other) = prime_site(&proxy).await;

    let admin_token = format!("Bearer {}", TEST_ADMIN_TOKEN);
    for headers in [
        vec![("host", "shop.example")],
        vec![("host", "shop.example"), ("x-forwarded-for", "10.1.2.3")],
        vec![("host", "shop.example"), ("forwarded", "for=10.1.2.3")],
        vec![("host", "shop.example"), ("authorization", "Bearer wrong")],
        vec![
            ("host", "shop.example"),
            ("authorization", admin_token.as_str()),
        ],
        vec![("host", "shop.example"), ("authorization", PURGE_TOKEN)],
    ] {
        let (status, _, _) = purge(&proxy, "/v", &headers).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{headers:?}");
    }
    for l in ["en", "de"] {
        let (_, headers, body) = get_with(
            &proxy.url("/v"),
            &[("host", "www.shop.example"), ("accept-language", l)],
        )
        .await;
        assert_eq!(body, format!("lang={l}"));
        assert!(cache_status(&headers).contains("hit"), "{headers:?}");
    }
    assert_eq!(origin.hits("/v"), 3, "nothing was invalidated");
    assert_eq!(purges_received(&origin, "/v"), 0);
    let metrics = admin_support::scrape(&proxy.admin_url("/metrics")).await;
    let samples = admin_support::parse_exposition(&metrics);
    assert_eq!(
        admin_support::sample(&samples, "seawall_purges_total", &[("kind", "http")]),
        None,
        "refused PURGEs are not purges"
    );

    let bearer = format!("Bearer {PURGE_TOKEN}");
    let (status, _, body) = purge(
        &proxy,
        "/v",
        &[("host", "shop.example"), ("authorization", bearer.as_str())],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json_of(&body)["purged"], 2);
    assert!(!is_stored(proxy.running(), &site, &lang("en")));
    assert!(is_stored(proxy.running(), &other, &lang("en")));
    assert_eq!(purges_received(&origin, "/v"), 0);
}

#[tokio::test]
async fn purge_is_refused_by_default() {
    let origin = MockOrigin::new().route("/a", cacheable("a")).start().await;
    let proxy = TestProxy::start(&origin.url()).await;
    let key = key_for(&proxy.addr.to_string(), "/a");
    prime(proxy.running(), &proxy.url("/a"), &key, &[]).await;
    let (status, _, _) = purge(&proxy, "/a", &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, headers, _) = get(&proxy.url("/a")).await;
    assert!(cache_status(&headers).contains("hit"), "{headers:?}");
    assert_eq!(origin.total_hits(), 1, "neither forwarded nor invalidated");
}

#[tokio::test]
async fn a_soft_purge_marks_stale_and_keeps_the_copy() {
    let origin = MockOrigin::new().route("/s", cacheable("s")).start().await;
    let proxy = TestProxy::with_config(&format!(
        "[admin]\npurge_allow = [\"127.0.0.0/8\"]\n\n{}",
        upstream_config(&origin.url(), "")
    ))
    .await;
    let key = key_for(&proxy.addr.to_string(), "/s");
    prime(proxy.running(), &proxy.url("/s"), &key, &[]).await;
    let (status, _, body) = purge(&proxy, "/s", &[("soft", "1")]).await;
    assert_eq!(status, StatusCode::OK);
    let v = json_of(&body);
    assert_eq!(
        (v["purged"].clone(), v["soft"].clone()),
        (1.into(), true.into()),
        "{v}"
    );
    let variants = proxy.running().state.cache().store.variants(&key).unwrap();
    assert_eq!(variants.entries.len(), 1, "the copy is kept");
    let (_, headers, _) = get(&proxy.url("/s")).await;
    assert!(!cache_status(&headers).contains("; hit"), "{headers:?}");
    assert_eq!(
        origin.hits("/s"),
        2,
        "stale: the next request went to the origin"
    );
}

#[tokio::test]
async fn a_purge_of_everything_needs_the_confirmation_clear_needs() {
    let origin = MockOrigin::new()
        .route("/m1", cacheable("m1"))
        .route("/m2", cacheable("m2"))
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    let host = proxy.addr.to_string();
    for p in ["/m1", "/m2"] {
        prime(proxy.running(), &proxy.url(p), &key_for(&host, p), &[]).await;
    }
    let url = proxy.admin_url("/admin/cache/purge");
    for body in [
        r#"{"prefix":"/"}"#,
        r#"{"prefix":""}"#,
        r#"{"prefix":"/","soft":true}"#,
        r#"{"prefix":"/","confirm":"yes"}"#,
    ] {
        let (status, v) = admin_post(&url, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(v["error"].as_str().unwrap().contains("CLEAR-ALL"), "{v}");
    }
    for p in ["/m1", "/m2"] {
        let (_, headers, _) = get(&proxy.url(p)).await;
        assert!(cache_status(&headers).contains("hit"), "{p}: {headers:?}");
    }
    assert_eq!(origin.total_hits(), 2);

    let (status, v) = admin_post(&url, r#"{"prefix":"/","dry_run":true}"#).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["confirm_required"], true, "{v}");
    assert_eq!(v["purged"], 2, "{v}");
    assert_eq!(v["dry_run"], true, "{v}");

    // One host is not everything.
    let (status, v) = admin_post(&url, &format!(r#"{{"prefix":"/","host":"{host}"}}"#)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["purged"], 2, "{v}");
    for p in ["/m1", "/m2"] {
        prime(proxy.running(), &proxy.url(p), &key_for(&host, p), &[]).await;
    }
    let (status, v) = admin_post(&url, r#"{"prefix":"/","confirm":"CLEAR-ALL"}"#).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["purged"], 2, "{v}");
    let (_, headers, _) = get(&proxy.url("/m1")).await;
    assert!(!cache_status(&headers).contains("hit"), "{headers:?}");
    assert_eq!(origin.total_hits(), 5);
}

#[tokio::test]
async fn cache_entry_accepts_a_path_like_purge_does() {
    let origin = MockOrigin::new().route("/e", cacheable("e")).start().await;
    let proxy = TestProxy::start(&origin.url()).await;
    let key = key_for(&proxy.addr.to_string(), "/e");
    prime(
        proxy.running(),
        &proxy.url("/e?x=1"),
        &key_for(&proxy.addr.to_string(), "/e?x=1"),
        &[],
    )
    .await;
    prime(proxy.running(), &proxy.url("/e"), &key, &[]).await;
    let (status, v) = admin_get(&proxy.admin_url("/admin/cache/entry?url=/e")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["key"], key, "{v}");
    assert_eq!(v["variants"][0]["status"], 200, "{v}");
    let (status, v) = admin_get(&proxy.admin_url("/admin/cache/entry?url=/e%3Fx%3D1")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["key"], key_for(&proxy.addr.to_string(), "/e?x=1"), "{v}");
    let (status, v) = admin_get(&proxy.admin_url("/admin/cache/entry?url=/missing")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    let (status, v) = admin_get(&proxy.admin_url("/admin/cache/entry?url=nonsense")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
}
