//! Core forwarding behaviour seen from outside: methods, bodies and headers pass through,
//! forwarding headers are set, hop-by-hop headers stop here, and every upstream failure maps
//! to the right status.
#![allow(clippy::unwrap_used)]

#[path = "support.rs"]
mod support;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn echo(parts: &http::request::Parts, body: &Bytes) -> MockResponse {
    MockResponse::ok(format!(
        "{} {} {}",
        parts.method,
        parts.uri,
        String::from_utf8_lossy(body)
    ))
    .header("x-origin-custom", "from-origin")
    .header("cache-control", "no-store")
}

#[tokio::test]
async fn extension_method_body_and_unknown_headers_pass_through() {
    let origin = MockOrigin::new().route("/dav/x", echo).start().await;
    let proxy = TestProxy::start(&origin.url()).await;

    for method in ["PROPFIND", "PURGEX"] {
        let req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(proxy.url("/dav/x?depth=1"))
            .header("x-custom-end", "abc")
            .header("x-empty", "")
            .body(Full::new(Bytes::from_static(b"<propfind/> body")))
            .unwrap();
        let (status, headers, body) = request(req).await;
        assert_eq!(status, StatusCode::OK, "{method}");
        assert_eq!(body, format!("{method} /dav/x?depth=1 <propfind/> body"));
        assert_eq!(header_str(&headers, "x-origin-custom"), "from-origin");
    }

    let seen = origin.received("/dav/x");
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].method.as_str(), "PROPFIND");
    assert_eq!(seen[1].method.as_str(), "PURGEX");
    for r in &seen {
        assert_eq!(r.body, Bytes::from_static(b"<propfind/> body"));
        assert_eq!(r.uri.path_and_query().unwrap(), "/dav/x?depth=1");
        assert_eq!(header_str(&r.headers, "x-custom-end"), "abc");
        assert_eq!(header_str(&r.headers, "x-empty"), "");
        assert_eq!(header_str(&r.headers, "content-length"), "16");
    }
}

#[tokio::test]
async fn via_is_added_to_the_response_and_the_forwarded_request() {
    let origin = MockOrigin::new()
        .route("/v", MockResponse::ok("v").header("via", "1.1 origin-cdn"))
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;

    let req = Request::get(proxy.url("/v"))
        .header("via", "1.0 client-proxy")
        .body(Full::default())
        .unwrap();
    let (status, headers, _) = request(req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header_str(&headers, "via"), "1.1 origin-cdn, 1.1 seawall");

    let seen = origin.requests("/v");
    assert_eq!(seen.len(), 1);
    assert_eq!(header_str(&seen[0], "via"), "1.0 client-proxy, 1.1 seawall");
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_in_both_directions() {
    let origin = MockOrigin::new()
        .route(
            "/hop",
            MockResponse::ok("hop")
                .header("connection", "x-bar")
                .header("x-bar", "secret")
                .header("keep-alive", "timeout=5")
                .header("proxy-authenticate", "Basic realm=x")
                .header("x-end-to-end", "kept"),
        )
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;

    let req = Request::get(proxy.url("/hop"))
        .header("connection", "x-foo")
        .header("x-foo", "secret")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .header("proxy-authorization", "Basic dXNlcjpwYXNz")
        .header("x-keep", "yes")
        .body(Full::default())
        .unwrap();
    let (status, headers, body) = request(req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "hop");
    for gone in ["x-bar", "keep-alive", "proxy-authenticate"] {
        assert!(!headers.contains_key(gone), "{gone} leaked: {headers:?}");
    }
    for v in headers.get_all("connection") {
        assert!(!v.to_str().unwrap().contains("x-bar"), "{headers:?}");
    }
    assert_eq!(header_str(&headers, "x-end-to-end"), "kept");

    let seen = origin.requests("/hop");
    assert_eq!(seen.len(), 1);
    let h = &seen[0];
    for gone in ["x-foo", "keep-alive", "te", "proxy-authorization"] {
        assert!(!h.contains_key(gone), "{gone} forwarded: {h:?}");
    }
    for v in h.get_all("connection") {
        assert!(!v.to_str().unwrap().contains("x-foo"), "{h:?}");
    }
    assert_eq!(header_str(h, "x-keep"), "yes");
}

#[tokio::test]
async fn x_forwarded_for_is_replaced_for_untrusted_peers() {
    let origin = MockOrigin::new()
        .route("/f", MockResponse::ok("f"))
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;

    let req = Request::get(proxy.url("/f"))
        .header("host", "app.example:8443")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-host", "spoofed.example")
        .header("x-forwarded-proto", "https")
        .body(Full::default())
        .unwrap();
    let (status, _, _) = request(req).await;
    assert_eq!(status, StatusCode::OK);

    let seen = origin.requests("/f");
    assert_eq!(seen.len(), 1);
    let h = &seen[0];
    assert_eq!(header_str(h, "x-forwarded-for"), "127.0.0.1");
    assert_eq!(header_str(h, "x-forwarded-proto"), "http");
    assert_eq!(header_str(h, "x-forwarded-host"), "app.example:8443");
    assert_eq!(header_str(h, "host"), "app.example:8443", "Host is kept");
}

#[tokio::test]
async fn x_forwarded_for_is_appended_for_trusted_peers() {
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
        .header("x-forwarded-for", "6.6.6.6")
        .body(Full::default())
        .unwrap();
    let (status, _, _) = request(req).await;
    assert_eq!(status, StatusCode::OK);

    let seen = origin.requests("/f");
    assert_eq!(seen.len(), 1);
    let h = &seen[0];
    assert_eq!(header_str(h, "x-forwarded-for"), "6.6.6.6, 127.0.0.1");
    assert_eq!(header_str(h, "x-forwarded-proto"), "http");
    assert_eq!(header_str(h, "x-forwarded-host"), "shop.example");
    assert_eq!(header_str(h, "host"), "shop.example");
}

#[tokio::test]
async fn host_is_the_endpoint_authority_when_preserve_host_is_off() {
    let origin = MockOrigin::new()
        .route("/f", MockResponse::ok("f"))
        .start()
        .await;
    let cfg = format!(
        "[server]\npreserve_host = false\n\n{}",
        upstream_config(&origin.url(), "")
    );
    let proxy = TestProxy::with_config(&cfg).await;

    let req = Request::get(proxy.url("/f"))
        .header("host", "app.example")
        .body(Full::default())
        .unwrap();
    let (status, _, _) = request(req).await;
    assert_eq!(status, StatusCode::OK);
    let seen = origin.requests("/f");
    assert_eq!(seen.len(), 1);
    assert_eq!(header_str(&seen[0], "host"), origin.addr().to_string());
    assert_eq!(header_str(&seen[0], "x-forwarded-host"), "app.example");
}

#[tokio::test]
async fn date_is_added_when_the_origin_sends_none_and_kept_when_it_does() {
    let no_date = raw_origin(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
    let proxy = TestProxy::start(&format!("http://{no_date}")).await;
    let (status, headers, body) = get(&proxy.url("/")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "ok");
    let date = header_str(&headers, "date");
    httpdate::parse_http_date(date).unwrap();

    let with_date = raw_origin(
        b"HTTP/1.1 200 OK\r\nDate: Mon, 02 Jan 2023 03:04:05 GMT\r\nContent-Length: 2\r\n\r\nok",
    )
    .await;
    let proxy = TestProxy::start(&format!("http://{with_date}")).await;
    let (status, headers, _) = get(&proxy.url("/")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        header_str(&headers, "date"),
        "Mon, 02 Jan 2023 03:04:05 GMT"
    );
}

#[tokio::test]
async fn a_request_that_already_passed_this_proxy_is_a_loop() {
    let origin = MockOrigin::new()
        .route("/l", MockResponse::ok("l"))
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;

    let req = Request::get(proxy.url("/l"))
        .header("via", "1.1 edge, 1.1 seawall")
        .body(Full::default())
        .unwrap();
    let (status, headers, _) = request(req).await;
    assert_eq!(status, StatusCode::LOOP_DETECTED);
    assert!(
        cache_status(&headers).contains("detail=loop"),
        "{headers:?}"
    );
    assert_eq!(origin.total_hits(), 0);
}

#[tokio::test]
async fn no_matching_route_is_404() {
    let origin = MockOrigin::new()
        .route("/only/x", MockResponse::ok("x"))
        .start()
        .await;
    let cfg = format!(
        "[[upstreams]]\nname = \"origin\"\nendpoints = [{:?}]\n\n\
         [[routes]]\nupstream = \"origin\"\npath_prefix = \"/only\"\n",
        origin.url()
    );
    let proxy = TestProxy::with_config(&cfg).await;

    let (status, _, body) = get(&proxy.url("/only/x")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "x");
    let (status, headers, _) = get(&proxy.url("/other")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        cache_status(&headers).contains("detail=no-route"),
        "{headers:?}"
    );
    assert_eq!(origin.total_hits(), 1);
}

/// The upstream pool: a connection goes back to the pool when its response body has ended,
/// and the next request (another client, another URL) reuses it; targets go out in
/// origin-form.
#[tokio::test]
async fn pass_requests_reuse_one_pooled_upstream_connection() {
    let origin = MockOrigin::new()
        .route(
            "/pass",
            MockResponse::ok("fresh").header("cache-control", "no-store"),
        )
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    for i in 0..10 {
        let (s, _, b) = get(&proxy.url(&format!("/pass?u={i}"))).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(b, "fresh");
    }
    assert_eq!(origin.hits("/pass"), 10);
    assert_eq!(origin.connections(), 1);
    for r in origin.received("/pass") {
        assert!(
            r.uri.scheme().is_none() && r.uri.authority().is_none(),
            "{}",
            r.uri
        );
        assert!(r.uri.to_string().starts_with("/pass?u="), "{}", r.uri);
    }
}

#[tokio::test]
async fn refused_upstream_is_502_with_detail() {
    let dead = closed_port().await;
    let proxy = TestProxy::start(&format!("http://{dead}")).await;

    let (status, headers, _) = get(&proxy.url("/x")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let cs = cache_status(&headers);
    assert!(cs.starts_with("seawall;"), "{cs}");
    assert!(cs.contains("detail=upstream-refused"), "{cs}");
}

#[tokio::test]
async fn slow_upstream_head_is_504() {
    let origin = MockOrigin::new()
        .route("/slow", MockResponse::ok("late").delay(1000))
        .start()
        .await;
    let cfg = upstream_config(&origin.url(), "ttfb_timeout = \"200ms\"");
    let proxy = TestProxy::with_config(&cfg).await;

    let (status, headers, _) = get(&proxy.url("/slow")).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        cache_status(&headers).contains("detail=upstream-timeout"),
        "{headers:?}"
    );
    assert_eq!(origin.hits("/slow"), 1, "a timed-out head is not retried");
}

#[tokio::test]
async fn concurrency_cap_rejects_with_503_instead_of_queueing() {
    let origin = MockOrigin::new()
        .route(
            "/slow",
            MockResponse::ok("first")
                .delay(1000)
                .header("cache-control", "no-store"),
        )
        .route("/fast", MockResponse::ok("second"))
        .start()
        .await;
    let cfg = upstream_config(&origin.url(), "max_concurrent_requests = 1");
    let proxy = TestProxy::with_config(&cfg).await;

    let url = proxy.url("/slow");
    let first = tokio::spawn(async move { get(&url).await });
    origin.wait_hits("/slow", 1).await;

    let (status, headers, _) = get(&proxy.url("/fast")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        cache_status(&headers).contains("detail=upstream-overloaded"),
        "{headers:?}"
    );
    assert_eq!(header_str(&headers, "retry-after"), "1");
    assert_eq!(origin.hits("/fast"), 0);

    let (status, _, body) = bounded("first request", first).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "first");

    // The permit is back once the first exchange ended.
    let (status, _, body) = get(&proxy.url("/fast")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "second");
}

#[tokio::test]
async fn body_over_max_body_size_is_413() {
    let origin = MockOrigin::new()
        .route("/up", MockResponse::ok("stored"))
        .start()
        .await;
    let cfg = format!(
        "[server]\nmax_body_size = \"1KiB\"\n\n{}",
        upstream_config(&origin.url(), "")
    );
    let proxy = TestProxy::with_config(&cfg).await;

    // Within the limit.
    let req = Request::post(proxy.url("/up"))
        .body(Full::new(payload(1024)))
        .unwrap();
    let (status, _, _) = request(req).await;
    assert_eq!(status, StatusCode::OK);

    // Declared length over the limit: refused before anything goes upstream.
    let req = Request::post(proxy.url("/up"))
        .body(Full::new(payload(4096)))
        .unwrap();
    let (status, headers, _) = request(req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        cache_status(&headers).contains("detail=body-too-large"),
        "{headers:?}"
    );
    assert_eq!(origin.hits("/up"), 1);

    // Chunked, no declared length: cut off while streaming.
    let mut raw =
        b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n".to_vec();
    raw.extend_from_slice(&payload(4096));
    raw.extend_from_slice(b"\r\n0\r\n\r\n");
    let reply = raw_exchange(proxy.addr, &raw).await;
    assert!(reply.starts_with("HTTP/1.1 413 "), "{reply}");
    assert!(
        origin.received("/up").iter().all(|r| r.body.len() <= 1024),
        "the origin never got a whole over-limit body"
    );
}

#[tokio::test]
async fn oversized_request_head_is_431() {
    let origin = MockOrigin::new()
        .route("/h", MockResponse::ok("h"))
        .start()
        .await;
    let cfg = format!(
        "[server]\nmax_header_size = \"8KiB\"\n\n{}",
        upstream_config(&origin.url(), "")
    );
    let proxy = TestProxy::with_config(&cfg).await;

    let req = format!(
        "GET /h HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(10 * 1024)
    );
    let reply = raw_exchange(proxy.addr, req.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 431 "), "{reply}");

    let mut many = String::from("GET /h HTTP/1.1\r\nHost: x\r\n");
    for i in 0..150 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let reply = raw_exchange(proxy.addr, many.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 431 "), "{reply}");
    assert_eq!(origin.total_hits(), 0);
}

#[tokio::test]
async fn interim_103_is_not_leaked_to_the_client() {
    let origin = raw_origin(
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n\
          HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Final: yes\r\n\r\nhello",
    )
    .await;
    let proxy = TestProxy::start(&format!("http://{origin}")).await;

    let (status, headers, body) = get(&proxy.url("/page")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "hello");
    assert_eq!(header_str(&headers, "x-final"), "yes");

    let reply = raw_exchange(
        proxy.addr,
        b"GET /page HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(!reply.contains("103"), "{reply}");
    assert_eq!(reply.matches("HTTP/1.1 ").count(), 1, "{reply}");
}

#[tokio::test]
async fn http2_prior_knowledge_is_served() {
    let origin = MockOrigin::new().route("/h2", echo).start().await;
    let proxy = TestProxy::start(&origin.url()).await;

    let req = Request::post(proxy.url("/h2"))
        .header("x-custom-end", "over-h2")
        .body(Full::new(Bytes::from_static(b"h2 body")))
        .unwrap();
    let res = h2_send(req).await.unwrap();
    assert_eq!(res.version(), http::Version::HTTP_2);
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        header_str(res.headers(), "via").ends_with("1.1 seawall"),
        "{:?}",
        res.headers()
    );
    let body = read_body(res.into_body()).await.unwrap();
    assert_eq!(body, "POST /h2 h2 body");

    let seen = origin.requests("/h2");
    assert_eq!(seen.len(), 1);
    assert_eq!(header_str(&seen[0], "via"), "2 seawall");
    assert_eq!(header_str(&seen[0], "x-custom-end"), "over-h2");
    assert_eq!(header_str(&seen[0], "host"), proxy.addr.to_string());

    // A second stream on a fresh connection works too.
    let (status, _, _) = h2_get(&proxy.url("/h2")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn upgrade_is_tunnelled_both_ways() {
    let (origin, heads) = upgrade_echo_origin().await;
    let proxy = TestProxy::start(&format!("http://{origin}")).await;

    let mut s = bounded("connect", TcpStream::connect(proxy.addr))
        .await
        .unwrap();
    bounded(
        "write upgrade",
        s.write_all(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        ),
    )
    .await
    .unwrap();
    let head = read_until(&mut s, b"\r\n\r\n").await;
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );

    for msg in [&b"ping-1"[..], b"second message", &[0u8, 1, 2, 255]] {
        bounded("write tunnel", s.write_all(msg)).await.unwrap();
        let got = read_until(&mut s, msg).await;
        assert_eq!(got, msg);
    }

    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 1);
    let forwarded = heads[0].to_ascii_lowercase();
    assert!(forwarded.contains("upgrade: websocket"), "{forwarded}");
    assert!(forwarded.contains("connection: upgrade"), "{forwarded}");
    assert!(forwarded.contains("sec-websocket-key: "), "{forwarded}");
}

#[tokio::test]
async fn large_streamed_bodies_arrive_intact() {
    const SIZE: usize = 4 * 1024 * 1024;
    let data = payload(SIZE);
    let chunks: Vec<Bytes> = (0..SIZE)
        .step_by(64 * 1024)
        .map(|i| data.slice(i..(i + 64 * 1024).min(SIZE)))
        .collect();
    let origin = MockOrigin::new()
        .route(
            "/big",
            MockResponse::ok("")
                .chunked(chunks, 1)
                .header("cache-control", "no-store"),
        )
        .route("/upload", |_: &http::request::Parts, body: &Bytes| {
            MockResponse::ok(format!("{}", body.len()))
        })
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;

    let (status, _, body) = get(&proxy.url("/big")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.len(), SIZE);
    assert!(body == data, "downloaded body differs");

    let req = Request::post(proxy.url("/upload"))
        .body(Full::new(data.clone()))
        .unwrap();
    let (status, _, body) = request(req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, SIZE.to_string());
    let seen = origin.received("/upload");
    assert_eq!(seen.len(), 1);
    assert!(seen[0].body == data, "uploaded body differs");
}

#[tokio::test]
async fn upstream_reset_mid_body_is_not_passed_off_as_complete() {
    let origin = MockOrigin::new()
        .route(
            "/cut",
            MockResponse::ok(payload(64 * 1024))
                .reset_after(1000)
                .header("cache-control", "no-store"),
        )
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;

    let res = send(
        Request::get(proxy.url("/cut"))
            .body(Full::default())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = read_body(res.into_body()).await;
    assert!(
        body.is_err(),
        "a truncated body must end in an error, got {body:?}"
    );
}

#[tokio::test]
async fn stalled_upstream_body_is_cut_off_by_the_idle_timeout() {
    let origin = MockOrigin::new()
        .route(
            "/stall",
            MockResponse::ok("")
                .chunked(
                    vec![Bytes::from_static(b"first"), Bytes::from_static(b"late")],
                    2000,
                )
                .header("cache-control", "no-store"),
        )
        .start()
        .await;
    let cfg = upstream_config(&origin.url(), "body_idle_timeout = \"200ms\"");
    let proxy = TestProxy::with_config(&cfg).await;

    let res = send(
        Request::get(proxy.url("/stall"))
            .body(Full::default())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = read_body(res.into_body()).await;
    assert!(
        body.is_err(),
        "a stalled body must end in an error, got {body:?}"
    );
}
