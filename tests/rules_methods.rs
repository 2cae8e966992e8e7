//! RFC 9111 rules about methods and interim responses, from an innocent client's side:
//! any method not known to be safe invalidates what it touched (§4.4), and 1xx responses are
//! never stored nor merged into the final response (RFC 9110 §15.2, RFC 9111 §3).
#![allow(clippy::unwrap_used)]

#[path = "support.rs"]
mod support;

#[path = "cache/support.rs"]
mod cache_support;

use bytes::Bytes;
use cache_support::{is_stored, settle, wait_stored};
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use support::*;

/// An origin where every GET is cacheable and numbered per path, and every other method is
/// answered with the status in its `x-answer` header (200 by default) and the `Location`
/// named by `x-location`.
async fn origin() -> MockOrigin {
    let n = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let handler = move |parts: &http::request::Parts, _: &Bytes| {
        if parts.method == Method::GET || parts.method == Method::HEAD {
            let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            return MockResponse::ok(format!("v{i}")).header("cache-control", "max-age=600");
        }
        let status = parts
            .headers
            .get("x-answer")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(200);
        let mut r = MockResponse::ok("done").status(status);
        if let Some(loc) = parts.headers.get("x-location") {
            r = r.header("location", loc.to_str().unwrap());
        }
        r
    };
    let h = std::sync::Arc::new(handler);
    let mut b = MockOrigin::new();
    for p in ["/r", "/a", "/target", "/off/r"] {
        let h = h.clone();
        b = b.route(p, move |parts: &http::request::Parts, body: &Bytes| {
            h(parts, body)
        });
    }
    b.start().await
}

fn two_routes(origin_url: &str) -> String {
    format!(
        "[[upstreams]]\nname = \"origin\"\nendpoints = [{origin_url:?}]\n\
         [upstreams.breaker]\nenabled = false\n\n\
         [[routes]]\nupstream = \"origin\"\n\n\
         [[routes]]\nupstream = \"origin\"\npath_prefix = \"/off\"\ninvalidate_on_unsafe = false\n"
    )
}

async fn call(url: &str, method: &str, headers: &[(&str, &str)]) -> StatusCode {
    let mut b = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    request(b.body(Full::default()).unwrap()).await.0
}

/// Stores `path` and returns its body.
async fn prime(proxy: &TestProxy, path: &str) -> Bytes {
    let (s, _, b) = get(&proxy.url(path)).await;
    assert_eq!(s, StatusCode::OK);
    settle(proxy).await;
    wait_stored(proxy, path).await;
    let (_, h, again) = get(&proxy.url(path)).await;
    assert!(cache_status(&h).starts_with("seawall; hit;"), "{h:?}");
    assert_eq!(again, b);
    b
}

const UNSAFE: [&str; 8] = [
    "POST",
    "PUT",
    "DELETE",
    "PATCH",
    "MKCOL",
    "PROPPATCH",
    "LINK",
    "FROBNICATE",
];

#[tokio::test]
async fn a_non_error_response_to_any_unsafe_method_invalidates_the_target() {
    let origin = origin().await;
    let proxy = TestProxy::with_config(&two_routes(&origin.url())).await;
    for m in UNSAFE {
        let before = prime(&proxy, "/r").await;
        assert_eq!(call(&proxy.url("/r"), m, &[]).await, StatusCode::OK, "{m}");
        assert!(!is_stored(&proxy, "/r"), "{m} invalidated /r");
        let (_, h, after) = get(&proxy.url("/r")).await;
        assert_ne!(after, before, "{m}: the next reader gets a fresh copy");
        assert!(!cache_status(&h).contains("hit"), "{m}: {h:?}");
        settle(&proxy).await;

        // Same-origin Location of the answer goes too.
        let before = prime(&proxy, "/target").await;
        call(
            &proxy.url("/a"),
            m,
            &[("x-answer", "201"), ("x-location", "/target")],
        )
        .await;
        assert!(
            !is_stored(&proxy, "/target"),
            "{m} invalidated its Location"
        );
        let (_, _, after) = get(&proxy.url("/target")).await;
        assert_ne!(after, before, "{m}");
        settle(&proxy).await;
    }
}

#[tokio::test]
async fn errors_safe_methods_and_opted_out_routes_do_not_invalidate() {
    let origin = origin().await;
    let proxy = TestProxy::with_config(&two_routes(&origin.url())).await;
    let stored = prime(&proxy, "/r").await;
    for m in UNSAFE {
        for status in ["400", "404", "500"] {
            call(&proxy.url("/r"), m, &[("x-answer", status)]).await;
            assert!(is_stored(&proxy, "/r"), "{m} answered {status} kept /r");
        }
    }
    for m in ["OPTIONS", "TRACE"] {
        call(&proxy.url("/r"), m, &[]).await;
        assert!(is_stored(&proxy, "/r"), "{m} is safe");
    }
    let (_, h, b) = get(&proxy.url("/r")).await;
    assert_eq!(b, stored);
    assert!(cache_status(&h).starts_with("seawall; hit;"), "{h:?}");

    // A route with invalidate_on_unsafe = false keeps its entries.
    let stored = prime(&proxy, "/off/r").await;
    for m in UNSAFE {
        assert_eq!(call(&proxy.url("/off/r"), m, &[]).await, StatusCode::OK);
    }
    let (_, h, b) = get(&proxy.url("/off/r")).await;
    assert_eq!(b, stored);
    assert!(cache_status(&h).starts_with("seawall; hit;"), "{h:?}");
}

#[tokio::test]
async fn an_early_hints_response_is_neither_stored_nor_merged() {
    let addr = raw_origin(
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\
          X-Hint: interim\r\n\r\n\
          HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: 5\r\n\r\nfinal",
    )
    .await;
    let proxy = TestProxy::with_config(&cache_support::config(
        &format!("http://{addr}"),
        "",
        "",
        "",
    ))
    .await;
    let (s, h, b) = get(&proxy.url("/eh")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, "final");
    assert!(h.get("link").is_none(), "{h:?}");
    assert!(h.get("x-hint").is_none(), "{h:?}");
    settle(&proxy).await;
    wait_stored(&proxy, "/eh").await;
    let (s, h, b) = get(&proxy.url("/eh")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, "final");
    assert!(cache_status(&h).starts_with("seawall; hit;"), "{h:?}");
    assert!(
        h.get("link").is_none(),
        "stored without the 103's fields: {h:?}"
    );
    assert!(h.get("x-hint").is_none(), "{h:?}");
    let stored = proxy
        .running()
        .state
        .cache()
        .store
        .variants(&cache_support::key_of(&proxy, "/eh"))
        .unwrap();
    for e in &stored.entries {
        assert_eq!(e.status, StatusCode::OK);
        assert!(!e.headers.contains_key("link"));
    }
}
